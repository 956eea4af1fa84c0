"""The fused attention step (kernels/attention_step.py) against masked softmax in PyTorch, in
Triton's interpreter.

TRITON_INTERPRET=1 is set by tests/conftest.py before triton is imported. Inputs live inside
NaN-filled buffers and outputs are pre-filled with NaN, so an unmasked out-of-bounds load, an
element the kernel never writes, or a store past the end all show up as NaN. On top of that,
the keys and values past each row's length are NaN: if any of them reached the result, it
would be NaN. The reference is ``seqlib.attention.masked_softmax`` over ``lengths_to_mask`` in
float64, gradients by autograd through it. Most cases use BLOCK_S = 8 so that short sources
cross several tiles (the online softmax's rescaling).
"""
import math

import pytest
import torch

from seqlib.attention import lengths_to_mask, masked_softmax
from seqlib.kernels import attention_step as K
from seqlib.perf import GPUS
from kernel_checks import assert_close, in_nan_buffer, nan_outs


def make_inputs(B, S, N, Nv, lengths, seed):
    """q, k, v, dcontext (in NaN-padded buffers; k and v NaN past each row's length), lengths."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, N, generator=g)
    k = torch.randn(B, S, N, generator=g)
    v = torch.randn(B, S, Nv, generator=g)
    dctx = torch.randn(B, Nv, generator=g)
    lengths = torch.tensor(lengths, dtype=torch.int64)
    pad = ~lengths_to_mask(lengths, S)
    k[pad] = float("nan")
    v[pad] = float("nan")
    return [in_nan_buffer(t) for t in (q, k, v, dctx)] + [lengths]


def reference(q, k, v, lengths, dctx, scale):
    """context, lse and (dq, dk, dv) of the unfused path in float64, by autograd. The NaN
    padding is replaced by zeros here (the reference multiplies 0 weights by it)."""
    mask = lengths_to_mask(lengths, k.shape[1])
    leaves = [t.double().nan_to_num(0.0).requires_grad_() for t in (q, k, v)]
    qd, kd, vd = leaves
    scores = torch.einsum("bn,bsn->bs", qd, kd) * scale
    p = masked_softmax(scores, mask)
    ctx = torch.einsum("bs,bsv->bv", p, vd)
    lse = torch.logsumexp(scores.masked_fill(~mask, float("-inf")), dim=1)
    grads = torch.autograd.grad(ctx, leaves, dctx.double())
    return ctx.detach(), lse.detach(), grads


# (B, S, N, Nv, lengths, block_s, scale). S = 1, 7, 33 and N = 20 are not multiples of the tiles
# or powers of two; every grid has a row of length 1 and one of length S (the extremes).
GRID = [(2, 1, 20, 16, [1, 1], 8, 1.0),
        (3, 7, 20, 12, [1, 7, 4], 8, 0.5),
        (3, 33, 20, 24, [33, 1, 17], 8, 1 / math.sqrt(20)),
        (2, 33, 16, 20, [8, 33], 8, 1.0),     # a length that ends exactly on a tile boundary
        (2, 70, 32, 16, [1, 70], None, 0.25),  # the default BLOCK_S = 64: two tiles
        (4, 9, 5, 3, [9, 2, 1, 9], 4, 2.0)]
IDS = [f"B{b}-S{s}-N{n}-Nv{nv}-bs{bs}" for b, s, n, nv, _, bs, _ in GRID]


@pytest.mark.parametrize("B,S,N,Nv,lengths,block_s,scale", GRID, ids=IDS)
def test_forward_and_backward_match_masked_softmax(B, S, N, Nv, lengths, block_s, scale):
    q, k, v, dctx, lengths = make_inputs(B, S, N, Nv, lengths, seed=S * 100 + N)
    ref_ctx, ref_lse, ref_grads = reference(q, k, v, lengths, dctx, scale)
    len32 = lengths.to(torch.int32)

    # The kernels alone, into NaN-filled outputs.
    (ctx, lse), untouched = nan_outs((B, Nv), (B,))
    K.attention_step_forward(q, k, v, len32, scale, out=(ctx, lse), block_s=block_s)
    assert untouched(), "the forward kernel wrote past the end of context or lse"
    assert_close(ctx, ref_ctx, "context")
    assert_close(lse, ref_lse, "lse")
    (dq, dk, dv), untouched = nan_outs((B, N), (B, S, N), (B, S, Nv))
    K.attention_step_backward(dctx, q, k, v, len32, ctx, lse, scale, out=(dq, dk, dv),
                              block_s=block_s)
    assert untouched(), "the backward kernel wrote past the end of dq, dk or dv"
    for name, g, r in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_grads):
        assert_close(g, r, f"{name} (backward kernel)")
    pad = ~lengths_to_mask(lengths, S)
    assert (dk[pad] == 0).all() and (dv[pad] == 0).all(), "dk, dv must be 0 past the lengths"

    # The public, differentiable function.
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse2 = K.attention_step_triton(*leaves, lengths, scale=scale, block_s=block_s)
    assert out.shape == (B, Nv) and lse2.shape == (B,) and not lse2.requires_grad
    assert_close(out.detach(), ref_ctx, "attention_step_triton context")
    assert_close(lse2, ref_lse, "attention_step_triton lse")
    grads = torch.autograd.grad(out, leaves, dctx)
    for name, g, r in zip(("d q", "d k", "d v"), grads, ref_grads):
        assert_close(g, r, name)


def test_lengths_none_means_every_position_and_lengths_may_be_int32_on_cpu():
    q, k, v, _, _ = make_inputs(2, 10, 8, 8, [10, 10], seed=1)
    ctx, lse = K.attention_step_triton(q, k, v, None, block_s=4)
    ctx2, lse2 = K.attention_step_triton(q, k, v, torch.tensor([10, 10], dtype=torch.int32),
                                         block_s=4)
    torch.testing.assert_close(ctx, ctx2, rtol=0, atol=0)
    torch.testing.assert_close(lse, lse2, rtol=0, atol=0)


def test_large_scores_do_not_overflow():
    # exp(s) of scores near 1000 overflows fp32; the running max keeps every exp <= 1.
    q, k, v, dctx, lengths = make_inputs(2, 12, 8, 8, [12, 5], seed=2)
    ref_ctx, ref_lse, _ = reference(q, k, v, lengths, dctx, 100.0)
    ctx, lse = K.attention_step_triton(q, k, v, lengths, scale=100.0, block_s=4)
    assert_close(ctx, ref_ctx, "context at large scores")
    assert_close(lse, ref_lse, "lse at large scores")


# --------------------------------------------------------------------------- errors

Q, KK, V, LEN = torch.zeros(2, 4), torch.zeros(2, 5, 4), torch.zeros(2, 5, 3), torch.tensor([5, 1])


@pytest.mark.parametrize("args,match", [
    ((Q.double(), KK, V, LEN), r"q must have dtype torch.float32, got torch.float64"),
    ((Q, KK.half(), V, LEN), r"k must have dtype torch.float32, got torch.float16"),
    ((Q, KK, [[0.0]], LEN), r"v must be a torch.Tensor, got list"),
    ((Q, KK, V, LEN.float()), r"lengths must have an integer dtype, got torch.float32"),
    ((Q, KK, V, [5, 1]), r"lengths must be a torch.Tensor of shape \(B,\) or None, got list"),
])
def test_wrong_dtype_is_a_type_error_naming_the_argument(args, match):
    with pytest.raises(TypeError, match=match):
        K.attention_step_triton(*args)


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.zeros(2, 3, 4), KK, V, LEN), {}, r"q must have shape \(B, N\), got \(2, 3, 4\)"),
    ((Q, torch.zeros(2, 5), V, LEN), {}, r"k must have shape \(B, S, N\), got \(2, 5\)"),
    ((Q, torch.zeros(2, 5, 6), V, LEN), {},
     r"k must have shape \(B, S, N\) = \(2, 5, 4\) to match q \(2, 4\), got \(2, 5, 6\)"),
    ((Q, KK, torch.zeros(2, 6, 3), LEN), {},
     r"v must have shape \(B, S, Nv\) = \(2, 5, 3\) to match k \(2, 5, 4\), got \(2, 6, 3\)"),
    ((Q, KK, V, torch.tensor([5])), {}, r"lengths must have shape \(B,\) = \(2,\), got \(1,\)"),
    ((Q, KK, V, torch.tensor([6, 1])), {}, r"lengths must lie in 1..S = 1..5 .* got min 1, max 6"),
    ((Q, KK, V, torch.tensor([0, 5])), {}, r"lengths must lie in 1..S = 1..5 .* got min 0, max 5"),
    ((Q, KK[:, :0], V[:, :0], None), {}, r"k must hold at least one position"),
    ((Q, KK.to("meta"), V, LEN), {}, r"k is on meta but q is on cpu"),
    ((Q.to("meta"), KK.to("meta"), V.to("meta"), LEN), {}, r"q must be on a cpu or cuda device"),
    ((Q, KK, V, LEN), {"block_s": 24}, r"block_s must be a power of two"),
])
def test_wrong_shape_device_lengths_or_tile_is_a_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        K.attention_step_triton(*args, **kwargs)


# --------------------------------------------------------------------------- the cost model


def test_traffic_model_numbers_in_the_docstring():
    B, S, N = 64, 1024, 128
    assert K.hbm_bytes(B, S, N, N) == B * (S * 2 * N * 4 + (2 * N + 1) * 4)
    assert K.hbm_bytes(1, S, 64, 64, fused=False) - K.hbm_bytes(1, S, 64, 64) == 16 * S
    assert K.hbm_bytes(1, S, 64, 64, L=S // 2) < K.hbm_bytes(1, S, 64, 64) / 1.9
    assert round(K.roofline_seconds(B, S, N, N, "A100") * 1e6) == 34
    assert round(K.roofline_seconds(B, S, N, N, "H100 SXM") * 1e6) == 20
    assert round(K.hbm_bytes(B, S, N, N) / 1e6) == 67 and GPUS["A100"]["hbm"] == 2.0e12
