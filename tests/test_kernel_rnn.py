"""The fused Triton RNN (kernels/rnn.py) against the PyTorch reference, in Triton's interpreter.

TRITON_INTERPRET=1 is set by tests/conftest.py before triton is imported. Inputs live inside
NaN-filled buffers and outputs are pre-filled with NaN, so an unmasked out-of-bounds load, an
element the kernel never writes, or a store past the end all show up as NaN.
"""
import itertools
import os
import subprocess
import sys

import pytest
import torch

from seqlib.kernels import rnn as K
from seqlib.rnn import rnn_recurrence
from kernel_checks import assert_close, in_nan_buffer, nan_outs

def make_inputs(T, B, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    xw = torch.randn(T, B, N, generator=g)
    h0 = torch.randn(B, N, generator=g) * 0.5
    w_hh = torch.randn(N, N, generator=g) * (0.9 / N**0.5)  # spectral radius near 0.9: stable over T
    return in_nan_buffer(xw), in_nan_buffer(h0), in_nan_buffer(w_hh)


GRID = list(itertools.product((1, 7, 33), (1, 3, 17), (16, 20, 48), ("tanh", "relu")))


@pytest.mark.parametrize("T,B,N,nonlinearity", GRID, ids=[f"T{t}-B{b}-N{n}-{f}" for t, b, n, f in GRID])
def test_forward_and_backward_match_reference(T, B, N, nonlinearity):
    xw, h0, w_hh = make_inputs(T, B, N, seed=T * 1000 + B * 10 + N)

    # Forward and backward kernels, launched directly into NaN-filled outputs.
    (hs,), hs_untouched = nan_outs((T, B, N))
    K.rnn_forward(xw, h0, w_hh, nonlinearity, out=hs)
    ref = rnn_recurrence(xw, h0, w_hh, nonlinearity)
    assert_close(hs, ref, "hs")
    assert hs_untouched(), "the forward kernel wrote past the end of hs"

    dhs = in_nan_buffer(torch.randn(T, B, N, generator=torch.Generator().manual_seed(1)))
    (dxw, dh0), grads_untouched = nan_outs((T, B, N), (B, N))
    K.rnn_backward(dhs, hs, w_hh, nonlinearity, out=(dxw, dh0))
    assert grads_untouched(), "the backward kernel wrote past the end"

    # The public, differentiable function: every gradient against autograd through the reference.
    leaves = [t.clone().requires_grad_() for t in (xw, h0, w_hh)]
    out = K.rnn_recurrence_triton(*leaves, nonlinearity)
    grads = torch.autograd.grad(out, leaves, dhs)
    ref_leaves = [t.clone().requires_grad_() for t in (xw, h0, w_hh)]
    ref_grads = torch.autograd.grad(rnn_recurrence(*ref_leaves, nonlinearity), ref_leaves, dhs)
    assert_close(out.detach(), ref, "rnn_recurrence_triton")
    assert_close(dxw, ref_grads[0], "dxw (backward kernel)")
    assert_close(dh0, ref_grads[1], "dh0 (backward kernel)")
    for name, g, r in zip(("d xw", "d h0", "d w_hh"), grads, ref_grads):
        assert_close(g, r, name)


def test_tf32_precision_is_exact_in_the_interpreter():
    xw, h0, w_hh = make_inputs(5, 3, 20)
    ieee = K.rnn_recurrence_triton(xw, h0, w_hh, precision="ieee")
    tf32 = K.rnn_recurrence_triton(xw, h0, w_hh, precision="tf32")
    torch.testing.assert_close(tf32, ieee, rtol=0, atol=0)


def test_non_contiguous_inputs_and_empty_sequence():
    xw, h0, w_hh = make_inputs(6, 3, 20)
    xw_nc = xw.transpose(0, 1).contiguous().transpose(0, 1)  # same values, (B, T, N) memory order
    out = K.rnn_recurrence_triton(xw_nc, h0, w_hh.t().contiguous().t())
    assert_close(out, rnn_recurrence(xw, h0, w_hh), "non-contiguous inputs")
    empty = K.rnn_recurrence_triton(xw[:0], h0, w_hh)
    assert empty.shape == (0, 3, 20)


@pytest.mark.parametrize("bad,match", [
    (dict(xw=torch.zeros(4, 2, 16, dtype=torch.float64)), r"xw.*float32.*float64|xw.*float64"),
    (dict(h0=torch.zeros(2, 16, dtype=torch.float16)), r"h0.*float16"),
    (dict(w_hh=torch.zeros(16, 16, dtype=torch.int64)), r"w_hh.*int64"),
])
def test_wrong_dtype_is_a_type_error(bad, match):
    args = dict(xw=torch.zeros(4, 2, 16), h0=torch.zeros(2, 16), w_hh=torch.zeros(16, 16)) | bad
    with pytest.raises(TypeError, match=match):
        K.rnn_recurrence_triton(**args)


@pytest.mark.parametrize("bad,match", [
    (dict(xw=torch.zeros(2, 16)), r"xw.*\(T, B, N\).*\(2, 16\)"),
    (dict(h0=torch.zeros(3, 16)), r"h0.*\(2, 16\).*\(3, 16\)"),
    (dict(w_hh=torch.zeros(16, 20)), r"w_hh.*\(16, 16\).*\(16, 20\)"),
    (dict(h0=torch.zeros(2, 16, device="meta")), r"h0.*meta.*cpu"),
    (dict(nonlinearity="sigmoid"), r"nonlinearity"),
    (dict(precision="fp16"), r"precision"),
])
def test_wrong_shape_device_or_option_is_a_value_error(bad, match):
    args = dict(xw=torch.zeros(4, 2, 16), h0=torch.zeros(2, 16), w_hh=torch.zeros(16, 16)) | bad
    with pytest.raises(ValueError, match=match):
        K.rnn_recurrence_triton(**args)


def _python(code):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_importing_seqlib_kernels_turns_on_the_interpreter_without_cuda():
    proc = _python(
        "import os, sys, seqlib\n"
        "assert 'triton' not in sys.modules, 'import seqlib must not import triton'\n"
        "import seqlib.kernels.rnn as K\n"
        "assert os.environ['TRITON_INTERPRET'] == '1'\n"
        "assert type(K._rnn_fwd_kernel).__name__ == 'InterpretedFunction'\n")
    assert proc.returncode == 0, proc.stderr


def test_cpu_tensors_without_the_interpreter_are_a_clear_error():
    proc = _python(
        "import triton, torch\n"  # triton first: too late for seqlib.kernels to turn on the interpreter
        "from seqlib.kernels.rnn import rnn_recurrence_triton\n"
        "try:\n"
        "    rnn_recurrence_triton(torch.zeros(2, 1, 16), torch.zeros(1, 16), torch.zeros(16, 16))\n"
        "except RuntimeError as e:\n"
        "    print(e)\n")
    assert proc.returncode == 0, proc.stderr
    assert "TRITON_INTERPRET=1" in proc.stdout and "before triton is first imported" in proc.stdout


def test_seqlib_rnn_triton_backend_equals_torch_backend():
    import seqlib

    torch.manual_seed(0)
    ref = seqlib.RNN(5, 20, num_layers=2, bidirectional=True, backend="torch")
    fused = seqlib.RNN(5, 20, num_layers=2, bidirectional=True, backend="triton")
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(9, 3, 5)
    h0 = torch.randn(4, 3, 20)
    results = []
    for model in (ref, fused):
        xi, hi = x.clone().requires_grad_(), h0.clone().requires_grad_()
        out, h_n = model(xi, hi)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + h_n.pow(2).sum()
        grads = torch.autograd.grad(loss, [xi, hi, *model.parameters()])
        results.append((out, h_n, grads))
    (o1, h1, g1), (o2, h2, g2) = results
    assert_close(o2.detach(), o1.detach(), "output")
    assert_close(h2.detach(), h1.detach(), "h_n")
    names = ["x", "hx"] + [n for n, _ in ref.named_parameters()]
    for name, a, b in zip(names, g2, g1):
        assert_close(a, b, f"grad {name}")
