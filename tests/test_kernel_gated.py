"""The fused Triton LSTM and GRU (kernels/lstm.py, kernels/gru.py) against the PyTorch references
of seqlib.gated, in Triton's interpreter; and the step cost model of seqlib.perf.

TRITON_INTERPRET=1 is set by tests/conftest.py before triton is imported. Inputs live inside
NaN-filled buffers and outputs are pre-filled with NaN, so an unmasked out-of-bounds load, an
element the kernel never writes, or a store past the end all show up as NaN. Both ways of
holding W_hh are tested at small N: on chip (the default up to N = 64) and streamed per step
(the default above; ``on_chip=False`` forces it).
"""
import os
import subprocess
import sys

import pytest
import torch

from seqlib.gated import gru_recurrence, lstm_recurrence
from seqlib.kernels import gru as G
from seqlib.kernels import lstm as L
from seqlib.perf import GPUS, ridge_point, roofline_seconds, step_cost
from kernel_checks import assert_close, in_nan_buffer, nan_outs

def make_inputs(T, B, N, gates, seed):
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(T, B, gates * N, generator=g)
    h0 = torch.randn(B, N, generator=g) * 0.5
    c0 = torch.randn(B, N, generator=g) * 0.5
    w_hh = torch.randn(gates * N, N, generator=g) * (1.0 / N**0.5)
    b_hh = torch.randn(gates * N, generator=g) * 0.3
    return [in_nan_buffer(t) for t in (xw, h0, c0, w_hh, b_hh)]


def make_lengths(B, T, seed):
    """Lengths in 1..T with the extremes present (and, for B > 2, a zero length)."""
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = T
    if B > 2:
        lengths[1] = 0
    return lengths


def upstream(*like, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [in_nan_buffer(torch.randn(t.shape, generator=g)) for t in like]


# (T, B, N, with lengths, W_hh on chip). B = 17 and 33: not multiples of BLOCK_B = 16; N = 20 and
# 48: not multiples of 16 or 32. N = 72 takes the streamed path by default (BLOCK_N = 128).
GRID = [(1, 3, 20, False, True), (1, 17, 16, True, True), (7, 3, 20, True, True),
        (7, 17, 48, False, True), (7, 33, 20, True, True), (33, 5, 20, True, True),
        (33, 17, 16, False, True), (7, 17, 20, True, False), (33, 3, 20, False, False),
        (3, 2, 72, True, None)]
IDS = [f"T{t}-B{b}-N{n}-{'len' if ln else 'full'}-{ {True: 'onchip', False: 'streamed', None: 'auto'}[oc]}"
       for t, b, n, ln, oc in GRID]


@pytest.mark.parametrize("T,B,N,with_lengths,on_chip", GRID, ids=IDS)
def test_lstm_matches_reference(T, B, N, with_lengths, on_chip):
    xw, h0, c0, w_hh, _ = make_inputs(T, B, N, 4, seed=T * 1000 + B * 10 + N)
    lengths = make_lengths(B, T, seed=B) if with_lengths else None
    leaves = [t.clone().requires_grad_() for t in (xw, h0, c0, w_hh)]
    ref_hs, (ref_hT, ref_cT) = lstm_recurrence(leaves[0], (leaves[1], leaves[2]), leaves[3], lengths)
    dhs, dhT, dcT = upstream(ref_hs, ref_hT, ref_cT)
    ref_grads = torch.autograd.grad([ref_hs, ref_hT, ref_cT], leaves, [dhs, dhT, dcT])

    # The kernels alone, into NaN-filled outputs.
    outs, untouched = nan_outs((T, B, N), (T, B, N), (T, B, 4 * N), (B, N), (B, N))
    hs, cs, gates, h_T, c_T = L.lstm_forward(xw, h0, c0, w_hh, lengths, out=outs, on_chip=on_chip)
    assert untouched(), "the forward kernel wrote past the end of an output"
    for name, out, ref in (("hs", hs, ref_hs), ("h_T", h_T, ref_hT), ("c_T", c_T, ref_cT)):
        assert_close(out, ref.detach(), name)
    assert not cs.isnan().any() and not gates.isnan().any(), "cs or gates left unwritten"
    assert_close(cs[-1], ref_cT.detach(), "cs[-1]")
    grads, untouched = nan_outs((T, B, 4 * N), (B, N), (B, N))
    L.lstm_backward(dhs, dhT, dcT, gates, cs, c0, w_hh, lengths, out=grads, on_chip=on_chip)
    assert untouched(), "the backward kernel wrote past the end of an output"
    for name, g, r in zip(("dxw", "dh0", "dc0"), grads, ref_grads):
        assert_close(g, r, f"{name} (backward kernel)")

    if on_chip is False:  # the public function picks the path itself: tested on the rows above
        return
    mine = [t.clone().requires_grad_() for t in (xw, h0, c0, w_hh)]
    hs, (h_T, c_T) = L.lstm_recurrence_triton(mine[0], (mine[1], mine[2]), mine[3], lengths)
    assert_close(hs.detach(), ref_hs.detach(), "lstm_recurrence_triton hs")
    grads = torch.autograd.grad([hs, h_T, c_T], mine, [dhs, dhT, dcT])
    for name, g, r in zip(("d xw", "d h0", "d c0", "d w_hh"), grads, ref_grads):
        assert_close(g, r, name)


@pytest.mark.parametrize("T,B,N,with_lengths,on_chip", GRID, ids=IDS)
def test_gru_matches_reference(T, B, N, with_lengths, on_chip):
    xw, h0, _, w_hh, b_hh = make_inputs(T, B, N, 3, seed=T * 1000 + B * 10 + N)
    lengths = make_lengths(B, T, seed=B) if with_lengths else None
    leaves = [t.clone().requires_grad_() for t in (xw, h0, w_hh, b_hh)]
    ref_hs, ref_hT = gru_recurrence(*leaves, lengths)
    dhs, dhT = upstream(ref_hs, ref_hT)
    ref_grads = torch.autograd.grad([ref_hs, ref_hT], leaves, [dhs, dhT])

    outs, untouched = nan_outs((T, B, N), (T, B, 4 * N), (B, N))
    hs, gates, h_T = G.gru_forward(xw, h0, w_hh, b_hh, lengths, out=outs, on_chip=on_chip)
    assert untouched(), "the forward kernel wrote past the end of an output"
    assert_close(hs, ref_hs.detach(), "hs")
    assert_close(h_T, ref_hT.detach(), "h_T")
    assert not gates.isnan().any(), "gates left unwritten"
    grads, untouched = nan_outs((T, B, 3 * N), (T, B, N), (B, N))
    dxw, dhn, dh0 = G.gru_backward(dhs, dhT, gates, hs, h0, w_hh, lengths, out=grads, on_chip=on_chip)
    assert untouched(), "the backward kernel wrote past the end of an output"
    assert_close(dxw, ref_grads[0], "dxw (backward kernel)")
    assert_close(dh0, ref_grads[1], "dh0 (backward kernel)")
    assert not dhn.isnan().any(), "dhn left unwritten"

    if on_chip is False:
        return
    mine = [t.clone().requires_grad_() for t in (xw, h0, w_hh, b_hh)]
    hs, h_T = G.gru_recurrence_triton(*mine, lengths)
    assert_close(hs.detach(), ref_hs.detach(), "gru_recurrence_triton hs")
    grads = torch.autograd.grad([hs, h_T], mine, [dhs, dhT])
    for name, g, r in zip(("d xw", "d h0", "d w_hh", "d b_hh"), grads, ref_grads):
        assert_close(g, r, name)


def test_gru_without_bias_and_unused_outputs():
    xw, h0, _, w_hh, _ = make_inputs(6, 5, 20, 3, seed=3)
    mine = [t.clone().requires_grad_() for t in (xw, h0, w_hh)]
    ref = [t.clone().requires_grad_() for t in (xw, h0, w_hh)]
    hs, h_T = G.gru_recurrence_triton(*mine)
    ref_hs, ref_hT = gru_recurrence(*ref)
    assert_close(h_T.detach(), ref_hT.detach(), "h_T without b_hh")
    # Only h_T feeds the loss: hs's gradient arrives as None (zeros) in backward.
    for g, r in zip(torch.autograd.grad(h_T.sum(), mine), torch.autograd.grad(ref_hT.sum(), ref)):
        assert_close(g, r, "grad through h_T only")


def test_lstm_only_final_cell_state_in_the_loss():
    xw, h0, c0, w_hh, _ = make_inputs(6, 5, 20, 4, seed=4)
    mine = [t.clone().requires_grad_() for t in (xw, h0, c0, w_hh)]
    ref = [t.clone().requires_grad_() for t in (xw, h0, c0, w_hh)]
    _, (_, c_T) = L.lstm_recurrence_triton(mine[0], (mine[1], mine[2]), mine[3])
    _, (_, ref_cT) = lstm_recurrence(ref[0], (ref[1], ref[2]), ref[3])
    for g, r in zip(torch.autograd.grad(c_T.sum(), mine), torch.autograd.grad(ref_cT.sum(), ref)):
        assert_close(g, r, "grad through c_T only")


def test_tf32_precision_is_exact_in_the_interpreter():
    xw, h0, c0, w_hh, b_hh = make_inputs(4, 3, 20, 4, seed=5)
    ieee = L.lstm_recurrence_triton(xw, (h0, c0), w_hh, precision="ieee")[0]
    tf32 = L.lstm_recurrence_triton(xw, (h0, c0), w_hh, precision="tf32")[0]
    torch.testing.assert_close(tf32, ieee, rtol=0, atol=0)
    xw, w_hh, b_hh = xw[..., :60], w_hh[:60], b_hh[:60]
    ieee = G.gru_recurrence_triton(xw, h0, w_hh, b_hh, precision="ieee")[0]
    tf32 = G.gru_recurrence_triton(xw, h0, w_hh, b_hh, precision="tf32")[0]
    torch.testing.assert_close(tf32, ieee, rtol=0, atol=0)


def test_non_contiguous_inputs_empty_sequence_and_device_lengths():
    xw, h0, c0, w_hh, b_hh = make_inputs(5, 3, 20, 4, seed=6)
    xw_nc = xw.transpose(0, 1).contiguous().transpose(0, 1)  # same values, (B, T, 4N) memory order
    h0_nc = h0.t().contiguous().t()
    lengths = torch.tensor([5, 2, 4], dtype=torch.int32)  # any integer dtype
    out, (h_T, _) = L.lstm_recurrence_triton(xw_nc, (h0_nc, c0), w_hh.t().contiguous().t(), lengths)
    ref, (ref_hT, _) = lstm_recurrence(xw, (h0, c0), w_hh, lengths.long())
    assert_close(out, ref, "non-contiguous lstm")
    assert_close(h_T, ref_hT, "non-contiguous lstm h_T")
    out, h_T = G.gru_recurrence_triton(xw_nc[..., :60], h0_nc, w_hh[:60], b_hh[:60], lengths)
    assert_close(out, gru_recurrence(xw[..., :60], h0, w_hh[:60], b_hh[:60], lengths.long())[0], "gru")
    hs, (h, c) = L.lstm_recurrence_triton(xw[:0], (h0, c0), w_hh)
    assert hs.shape == (0, 3, 20) and h is h0 and c is c0
    hs, h = G.gru_recurrence_triton(xw[:0, :, :60], h0, w_hh[:60])
    assert hs.shape == (0, 3, 20) and h is h0


def _lstm_args(**bad):
    args = dict(xw=torch.zeros(4, 2, 64), state=(torch.zeros(2, 16), torch.zeros(2, 16)),
                w_hh=torch.zeros(64, 16), lengths=None)
    return args | bad


def _gru_args(**bad):
    args = dict(xw=torch.zeros(4, 2, 48), h0=torch.zeros(2, 16), w_hh=torch.zeros(48, 16),
                b_hh=torch.zeros(48), lengths=None)
    return args | bad


@pytest.mark.parametrize("fn,args,match", [
    (L.lstm_recurrence_triton, _lstm_args(xw=torch.zeros(4, 2, 64, dtype=torch.float64)), r"xw.*float64"),
    (L.lstm_recurrence_triton, _lstm_args(state=(torch.zeros(2, 16), torch.zeros(2, 16, dtype=torch.float16))), r"c0.*float16"),
    (L.lstm_recurrence_triton, _lstm_args(state=torch.zeros(2, 16)), r"state.*pair"),
    (L.lstm_recurrence_triton, _lstm_args(lengths=torch.tensor([1.0, 2.0])), r"lengths.*integer"),
    (G.gru_recurrence_triton, _gru_args(w_hh=torch.zeros(48, 16, dtype=torch.int64)), r"w_hh.*int64"),
    (G.gru_recurrence_triton, _gru_args(b_hh=torch.zeros(48, dtype=torch.bfloat16)), r"b_hh.*bfloat16"),
    (G.gru_recurrence_triton, _gru_args(lengths=[1, 2]), r"lengths.*Tensor"),
])
def test_wrong_type_is_a_type_error(fn, args, match):
    with pytest.raises(TypeError, match=match):
        fn(**args)


@pytest.mark.parametrize("fn,args,match", [
    (L.lstm_recurrence_triton, _lstm_args(xw=torch.zeros(4, 2, 63)), r"xw.*\(T, B, 4N\).*\(4, 2, 63\)"),
    (L.lstm_recurrence_triton, _lstm_args(xw=torch.zeros(2, 64)), r"xw.*\(T, B, 4N\).*\(2, 64\)"),
    (L.lstm_recurrence_triton, _lstm_args(state=(torch.zeros(3, 16), torch.zeros(2, 16))), r"h0.*\(2, 16\).*\(3, 16\)"),
    (L.lstm_recurrence_triton, _lstm_args(state=(torch.zeros(2, 16), torch.zeros(2, 8))), r"c0.*\(2, 16\).*\(2, 8\)"),
    (L.lstm_recurrence_triton, _lstm_args(w_hh=torch.zeros(48, 16)), r"w_hh.*\(4N, N\).*\(64, 16\).*\(48, 16\)"),
    (L.lstm_recurrence_triton, _lstm_args(w_hh=torch.zeros(64, 16, device="meta")), r"w_hh.*meta.*cpu"),
    (L.lstm_recurrence_triton, _lstm_args(lengths=torch.tensor([5, 1])), r"lengths.*0\.\.4.*max 5"),
    (L.lstm_recurrence_triton, _lstm_args(lengths=torch.tensor([-1, 1])), r"lengths.*0\.\.4.*min -1"),
    (L.lstm_recurrence_triton, _lstm_args(lengths=torch.tensor([1, 1, 1])), r"lengths.*\(2,\).*\(3,\)"),
    (L.lstm_recurrence_triton, _lstm_args(lengths=torch.tensor([1, 1], device="meta")), r"lengths.*meta"),
    (G.gru_recurrence_triton, _gru_args(xw=torch.zeros(4, 2, 47)), r"xw.*\(T, B, 3N\)"),
    (G.gru_recurrence_triton, _gru_args(h0=torch.zeros(2, 15)), r"h0.*\(2, 16\).*\(2, 15\)"),
    (G.gru_recurrence_triton, _gru_args(w_hh=torch.zeros(16, 48)), r"w_hh.*\(3N, N\).*\(16, 48\)"),
    (G.gru_recurrence_triton, _gru_args(b_hh=torch.zeros(16)), r"b_hh.*\(3N,\).*\(48,\).*\(16,\)"),
    (G.gru_recurrence_triton, _gru_args(h0=torch.zeros(2, 16, device="meta")), r"h0.*meta.*cpu"),
    (G.gru_recurrence_triton, _gru_args(lengths=torch.tensor([0, 9])), r"lengths.*0\.\.4"),
    (G.gru_recurrence_triton, _gru_args() | {"precision": "fp16"}, r"precision"),
])
def test_wrong_shape_device_lengths_or_option_is_a_value_error(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(**args)


def test_cpu_tensors_without_the_interpreter_are_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import triton, torch\n"  # triton first: too late for seqlib.kernels to turn on the interpreter
        "from seqlib.kernels.lstm import lstm_recurrence_triton\n"
        "from seqlib.kernels.gru import gru_recurrence_triton\n"
        "z = torch.zeros(1, 16)\n"
        "for call in (lambda: lstm_recurrence_triton(torch.zeros(2, 1, 64), (z, z), torch.zeros(64, 16)),\n"
        "             lambda: gru_recurrence_triton(torch.zeros(2, 1, 48), z, torch.zeros(48, 16))):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("lstm_recurrence_triton", "gru_recurrence_triton"):
        assert f"{name} got CPU tensors" in proc.stdout
    assert proc.stdout.count("before triton is first imported") == 2


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_seqlib_triton_backend_equals_torch_backend(kind):
    import seqlib

    Model = {"lstm": seqlib.LSTM, "gru": seqlib.GRU}[kind]
    torch.manual_seed(0)
    ref = Model(5, 20, num_layers=2, bidirectional=True, backend="torch")
    fused = Model(5, 20, num_layers=2, bidirectional=True, backend="triton")
    fused.load_state_dict(ref.state_dict())
    T, B = 9, 3
    x = torch.randn(T, B, 5)
    h0 = torch.randn(4, B, 20)
    hx = h0 if kind == "gru" else (h0, torch.randn(4, B, 20))
    lengths = torch.tensor([9, 4, 6])
    results = []
    for model in (ref, fused):
        xi = x.clone().requires_grad_()
        hi = [h.clone().requires_grad_() for h in ((hx,) if kind == "gru" else hx)]
        out, final = model(xi, hi[0] if kind == "gru" else tuple(hi), lengths=lengths)
        finals = [final] if kind == "gru" else list(final)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum()
        loss = loss + sum((f * torch.linspace(1, 2, f.numel()).view_as(f)).sum() for f in finals)
        grads = torch.autograd.grad(loss, [xi, *hi, *model.parameters()])
        results.append((out, finals, grads))
    (o1, f1, g1), (o2, f2, g2) = results
    assert_close(o2.detach(), o1.detach(), "output")
    for i, (a, b) in enumerate(zip(f2, f1)):
        assert_close(a.detach(), b.detach(), f"final state {i}")
    names = ["x"] + [f"hx{i}" for i in range(len(f1))] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, g2, g1):
        assert_close(a, b, f"grad {name}")


# --------------------------------------------------------------------------- the cost model


def test_step_cost_reproduces_chapter_1_for_the_rnn():
    B, N = 16, 128
    fused, unfused = step_cost(B, N, 1, True), step_cost(B, N, 1, False)
    assert fused["flops"] == unfused["flops"] == 2 * B * N * N + 4 * B * N
    assert fused["hbm_bytes"] == 4 * 2 * B * N
    assert unfused["hbm_bytes"] == 4 * (2 * B * N + N * N + B * N)
    assert fused["intensity"] == fused["flops"] / fused["hbm_bytes"]


def test_step_cost_of_the_gated_cells():
    B, N = 64, 128
    lstm, gru = step_cost(B, N, 4, False), step_cost(B, N, 3, False)
    # The unfused LSTM step re-reads its 4 N^2 weights: 4 N N 4 bytes, as cuDNN's per-step GEMM does.
    assert lstm["hbm_bytes"] - step_cost(B, N, 4, True)["hbm_bytes"] == 4 * (4 * N * N + 3 * B * N)
    assert gru["hbm_bytes"] - step_cost(B, N, 3, True)["hbm_bytes"] == 4 * (3 * N * N + B * N)
    # Fused, the intensity is about N / (1 + 1 / G) / 4 FLOP per byte, whatever the batch.
    for b in (1, 16, 256):
        assert step_cost(b, N, 4, True)["intensity"] == pytest.approx(2 * 4 * N / (4 * 5) + 16 / 20)
    # Keeping W_hh on chip lifts a small batch across the A100's fp32 ridge.
    ridge = ridge_point("A100", "fp32")
    assert ridge == pytest.approx(9.75)
    assert step_cost(16, N, 4, False)["intensity"] < ridge < step_cost(16, N, 4, True)["intensity"]
    t = roofline_seconds(step_cost(16, N, 4, False), "H100 SXM", "tf32")
    assert t == pytest.approx(step_cost(16, N, 4, False)["hbm_bytes"] / GPUS["H100 SXM"]["hbm"])
    with pytest.raises(ValueError, match="gates"):
        step_cost(16, N, 0, True)
