"""Flash attention (kernels/flash_attention.py) against PyTorch's
torch.nn.functional.scaled_dot_product_attention, in Triton's interpreter.

TRITON_INTERPRET=1 is set by tests/conftest.py before triton is imported. Inputs live inside
NaN-filled buffers and outputs are pre-filled with NaN, so an unmasked out-of-bounds load, an
element a kernel never writes, or a store past the end all show up as NaN. The reference is
PyTorch's scaled_dot_product_attention in float64, gradients by autograd through it, with
random upstream gradients. Most cases use 16 x 16 tiles, so that lengths of 17 to 70 cross
several tiles (the online softmax's rescaling, the causal diagonal, ragged last tiles), and
head dims 40 and 80 exercise the padding to BLOCK_D = 64 and 128.

The causal kernels must *skip* the tiles above the diagonal, not just mask them: those tests
fill the keys and values (or queries and output gradients) that a skipped tile would read with
NaN, and check that the rows which never see them stay exact. The tiles the diagonal crosses
are read (and masked), so the NaN starts at a tile boundary.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from seqlib.kernels import flash_attention as FA
from seqlib.perf import ridge_point
from kernel_checks import assert_close, in_nan_buffer, nan_outs, rel_rms

NAN = float("nan")


def make_inputs(B, H, Tq, Tk, Dh, seed, dtype=torch.float32):
    """q, k, v, dout in NaN-padded buffers."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh), (B, H, Tq, Dh)]
    return [in_nan_buffer(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def reference(q, k, v, dout, causal, scale=None):
    """out, lse and (dq, dk, dv) of scaled_dot_product_attention in float64."""
    leaves = [t.double().requires_grad_() for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*leaves, is_causal=causal, scale=scale)
    grads = torch.autograd.grad(out, leaves, dout.double())
    Tq, Tk, Dh = q.shape[2], k.shape[2], q.shape[3]
    s = leaves[0].detach() @ leaves[1].detach().transpose(-1, -2)
    s = s * (1 / math.sqrt(Dh) if scale is None else scale)
    if causal:
        s = s.masked_fill(~torch.ones(Tq, Tk, dtype=torch.bool).tril(), float("-inf"))
    return out.detach(), torch.logsumexp(s, dim=-1), grads


def assert_grad_close(g, ref, name):
    """assert_close, or, where the exact gradient is zero (Tk = 1: the softmax is constant, so
    dq = dk = 0), no NaN and zero to rounding."""
    if ref.abs().max() < 1e-12:
        assert not g.isnan().any() and g.abs().max() < 1e-5, f"{name}: not zero"
    else:
        assert_close(g, ref, name)


# (B, H, Tq, Tk, Dh, causal): lengths 1, 17, 33, 70 (not multiples of the 16-row tiles),
# Tq < Tk and Tq > Tk (causal is top-left aligned), head dims 16, 40, 80.
GRID = [(1, 1, 1, 1, 16, False),
        (1, 2, 17, 17, 40, True),
        (2, 1, 33, 70, 80, True),
        (1, 1, 70, 33, 16, True),
        (1, 2, 70, 70, 40, False),
        (2, 1, 17, 33, 16, False),
        (1, 1, 33, 17, 80, True),
        (1, 1, 70, 70, 80, True),
        (1, 1, 1, 70, 40, True),
        (1, 1, 70, 1, 16, True)]
IDS = [f"B{b}H{h}-Tq{tq}-Tk{tk}-Dh{d}-{'causal' if c else 'full'}" for b, h, tq, tk, d, c in GRID]


@pytest.mark.parametrize("B,H,Tq,Tk,Dh,causal", GRID, ids=IDS)
def test_kernels_match_scaled_dot_product_attention(B, H, Tq, Tk, Dh, causal):
    q, k, v, dout = make_inputs(B, H, Tq, Tk, Dh, seed=Tq * 1000 + Tk * 10 + Dh)
    ref_out, ref_lse, ref_grads = reference(q, k, v, dout, causal)

    # The kernels alone, 16 x 16 tiles, into NaN-filled outputs.
    (out, lse), untouched = nan_outs((B, H, Tq, Dh), (B, H, Tq))
    FA.flash_attention_forward(q, k, v, causal, out=out, lse=lse, block_m=16, block_n=16)
    assert untouched(), "the forward kernel wrote past the end of out or lse"
    assert_close(out, ref_out, "out")
    assert_close(lse, ref_lse, "lse")
    (dq, dk, dv), untouched = nan_outs((B, H, Tq, Dh), (B, H, Tk, Dh), (B, H, Tk, Dh))
    FA.flash_attention_backward(q, k, v, out, lse, dout, causal, dq=dq, dk=dk, dv=dv,
                                block_m=16, block_n=16)
    assert untouched(), "the backward kernels wrote past the end of dq, dk or dv"
    for name, g, r in zip(("dq", "dk", "dv"), (dq, dk, dv), ref_grads):
        assert_grad_close(g, r, f"{name} (backward kernels)")

    # The public, differentiable function, with its default tiles.
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out2 = FA.flash_attention(*leaves, causal=causal)
    assert out2.shape == (B, H, Tq, Dh) and out2.dtype == torch.float32
    assert_close(out2.detach(), ref_out, "flash_attention out")
    for name, g, r in zip(("d q", "d k", "d v"), torch.autograd.grad(out2, leaves, dout),
                          ref_grads):
        assert_grad_close(g, r, name)


def test_scale_tiles_of_different_sizes_and_non_contiguous_inputs():
    # (B, T, H, Dh) viewed as (B, H, T, Dh), the layout a multi-head module makes; block_m !=
    # block_n; an explicit scale (2.4 times the default 1 / sqrt(Dh)).
    g = torch.Generator().manual_seed(5)
    q, k, v, dout = (torch.randn(1, T, 2, 24, generator=g).transpose(1, 2)
                     for T in (40, 50, 50, 40))
    assert not q.is_contiguous()
    SCALE = 0.5
    for causal in (False, True):
        ref_out, ref_lse, ref_grads = reference(q, k, v, dout, causal, scale=SCALE)
        out, lse = FA.flash_attention_forward(q, k, v, causal, SCALE, block_m=32, block_n=16)
        assert_close(out, ref_out, "out")
        assert_close(lse, ref_lse, "lse")
        grads = FA.flash_attention_backward(q, k, v, out, lse, dout, causal, SCALE,
                                            block_m=16, block_n=32)
        for name, g_, r in zip(("dq", "dk", "dv"), grads, ref_grads):
            assert_close(g_, r, name)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out2 = FA.flash_attention(*leaves, causal=causal, scale=SCALE, precision="tf32")
        assert_close(out2.detach(), ref_out, "flash_attention out (tf32: exact in the interpreter)")
        for name, g_, r in zip(("d q", "d k", "d v"), torch.autograd.grad(out2, leaves, dout),
                               ref_grads):
            assert_close(g_, r, name)


@pytest.mark.parametrize("dtype,tol_out,tol_grad", [(torch.float16, 2e-3, 4e-3),
                                                    (torch.bfloat16, 1.5e-2, 3e-2)])
def test_half_precision_inputs_accumulate_in_fp32(dtype, tol_out, tol_grad):
    # The reference sees the same rounded inputs in float64; what is left is the rounding of
    # p and ds to the half type before their products (as on the tensor cores) and of the outputs.
    q, k, v, dout = make_inputs(1, 2, 33, 40, 40, seed=7, dtype=dtype)
    ref_out, ref_lse, ref_grads = reference(q, k, v, dout, True)
    (out,), out_untouched = nan_outs((1, 2, 33, 40), dtype=dtype)
    (lse,), lse_untouched = nan_outs((1, 2, 33))
    FA.flash_attention_forward(q, k, v, True, out=out, lse=lse, block_m=16, block_n=16)
    assert out_untouched() and lse_untouched()
    assert not out.isnan().any() and rel_rms(out.double(), ref_out) < tol_out
    assert rel_rms(lse.double(), ref_lse) < 1e-5
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out2 = FA.flash_attention(*leaves, causal=True)
    assert out2.dtype == dtype and rel_rms(out2.detach().double(), ref_out) < tol_out
    for name, g, r in zip(("dq", "dk", "dv"), torch.autograd.grad(out2, leaves, dout), ref_grads):
        assert g.dtype == dtype and not g.isnan().any(), name
        assert rel_rms(g.double(), r) < tol_grad, f"{name}: {rel_rms(g.double(), r):.1e}"


# --------------------------------------------------------------------------- skipped tiles


def _poisoned(t, rows, dim=2):
    """A copy of t (in a NaN buffer) with NaN in the given rows of the time dimension."""
    t = in_nan_buffer(t.clone())
    t.narrow(dim, rows.start, rows.stop - rows.start).fill_(NAN)
    return t


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered")  # the NaN rows, on purpose
@pytest.mark.parametrize("T,cut", [(64, 16), (64, 48), (40, 32)])
def test_causal_forward_and_dq_never_load_keys_above_the_diagonal(T, cut):
    # Query rows < cut (a tile boundary) see no key >= cut, so the tiles of keys >= cut must
    # never be loaded for them: fill k and v there with NaN. (Masking alone would not do: a
    # masked score is -inf, but p = 0 times a NaN value is NaN in p v and in dO v^T.)
    q, k, v, dout = make_inputs(1, 1, T, T, 16, seed=T + cut)
    ref_out, ref_lse, ref_grads = reference(q, k, v, dout, True)
    kp, vp = _poisoned(k, range(cut, T)), _poisoned(v, range(cut, T))
    out, lse = FA.flash_attention_forward(q, kp, vp, True, block_m=16, block_n=16)
    assert_close(out[:, :, :cut], ref_out[:, :, :cut], "out of the rows before the cut")
    assert_close(lse[:, :, :cut], ref_lse[:, :, :cut], "lse of the rows before the cut")
    assert out[:, :, cut:].isnan().all(), "rows after the cut see the NaN keys"
    dq, _, _ = FA.flash_attention_backward(q, kp, vp, ref_out.float(), ref_lse.float(), dout,
                                           True, block_m=16, block_n=16)
    assert_close(dq[:, :, :cut], ref_grads[0][:, :, :cut], "dq of the rows before the cut")
    # The control: without the causal mask every tile is loaded, and the NaN reaches every row.
    out_full, _ = FA.flash_attention_forward(q, kp, vp, False, block_m=16, block_n=16)
    assert out_full.isnan().all()


@pytest.mark.parametrize("T,cut", [(64, 16), (64, 48), (40, 32)])
def test_causal_dkdv_never_loads_queries_above_the_diagonal(T, cut):
    # Keys >= cut are seen by no query < cut: the dK/dV kernel must not load those query rows
    # (q and dO NaN there; p = 0 times a NaN dO would be NaN in p^T dO).
    q, k, v, dout = make_inputs(1, 1, T, T, 16, seed=T * cut)
    ref_out, ref_lse, ref_grads = reference(q, k, v, dout, True)
    qp, dop = _poisoned(q, range(0, cut)), _poisoned(dout, range(0, cut))
    _, dk, dv = FA.flash_attention_backward(qp, k, v, ref_out.float(), ref_lse.float(), dop,
                                            True, block_m=16, block_n=16)
    assert_close(dk[:, :, cut:], ref_grads[1][:, :, cut:], "dk of the keys after the cut")
    assert_close(dv[:, :, cut:], ref_grads[2][:, :, cut:], "dv of the keys after the cut")
    _, dk_full, _ = FA.flash_attention_backward(qp, k, v, ref_out.float(), ref_lse.float(), dop,
                                                False, block_m=16, block_n=16)
    assert dk_full.isnan().all()  # the control: non-causal, every query tile is loaded


def test_large_scores_do_not_overflow():
    # scores near +-400: exp overflows fp32, the running max keeps every exp <= 1
    q, k, v, dout = make_inputs(1, 2, 33, 40, 16, seed=3)
    ref_out, ref_lse, _ = reference(q, k, v, dout, True, scale=100.0)
    out, lse = FA.flash_attention_forward(q, k, v, True, 100.0, block_m=16, block_n=16)
    assert ref_lse.abs().max() > 200
    assert_close(out, ref_out, "out at large scores")
    assert_close(lse, ref_lse, "lse at large scores")


def test_no_queries_gives_empty_output_and_zero_key_gradients():
    q, k, v = torch.zeros(1, 2, 0, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = FA.flash_attention(*leaves, causal=True)
    assert out.shape == (1, 2, 0, 8)
    dq, dk, dv = torch.autograd.grad(out.sum(), leaves)
    assert dq.shape == (1, 2, 0, 8) and (dk == 0).all() and (dv == 0).all()


# --------------------------------------------------------------------------- errors

Q, K, V = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 8)


@pytest.mark.parametrize("args,kwargs,match", [
    ((Q.double(), K, V), {},
     r"q must have dtype torch.float32, torch.float16 or torch.bfloat16, got torch.float64"),
    ((Q, K.half(), V), {}, r"k must have q's dtype torch.float32, got torch.float16"),
    ((Q, K, V.bfloat16()), {}, r"v must have q's dtype torch.float32, got torch.bfloat16"),
    ((Q, K, [[0.0]]), {}, r"v must be a torch.Tensor, got list"),
    ((Q, K, V), {"scale": "0.5"}, r"scale must be a Python float or None, got str"),
    ((Q, K, V), {"causal": 1}, r"causal must be a bool, got int"),
])
def test_wrong_type_is_a_type_error_naming_the_argument(args, kwargs, match):
    with pytest.raises(TypeError, match=match):
        FA.flash_attention(*args, **kwargs)


@pytest.mark.parametrize("args,kwargs,match", [
    ((Q[0], K, V), {}, r"q must have 4 dims \(B, H, Tq, Dh\), got shape \(3, 5, 8\)"),
    ((Q, K[..., None], V), {}, r"k must have 4 dims \(B, H, Tk, Dh\), got shape \(2, 3, 7, 8, 1\)"),
    ((Q, torch.zeros(2, 3, 7, 16), V), {},
     r"k must have q's head dim Dh = 8: shape \(B, H, Tk, Dh\) = \(2, 3, 7, 8\) to match q "
     r"\(2, 3, 5, 8\), got \(2, 3, 7, 16\)"),
    ((Q, torch.zeros(2, 4, 7, 8), V), {},
     r"k must have shape \(B, H, Tk, Dh\) with \(B, H\) = \(2, 3\) to match q \(2, 3, 5, 8\), "
     r"got \(2, 4, 7, 8\)"),
    ((Q, torch.zeros(1, 3, 7, 8), V), {}, r"with \(B, H\) = \(2, 3\) .* got \(1, 3, 7, 8\)"),
    ((Q, K, torch.zeros(2, 3, 6, 8)), {},
     r"v must have shape \(B, H, Tk, Dh\) = \(2, 3, 7, 8\) to match q \(2, 3, 5, 8\) and k "
     r"\(2, 3, 7, 8\), got \(2, 3, 6, 8\)"),
    ((Q, K, torch.zeros(2, 3, 7, 4)), {}, r"v must have shape \(B, H, Tk, Dh\) = \(2, 3, 7, 8\)"),
    ((Q, K[:, :, :0], V[:, :, :0]), {}, r"k must hold at least one key \(Tk >= 1\)"),
    ((torch.zeros(1, 1, 2, 300), torch.zeros(1, 1, 2, 300), torch.zeros(1, 1, 2, 300)), {},
     r"head dim Dh must lie in 1..256"),
    ((Q, K.to("meta"), V), {}, r"k is on meta but q is on cpu"),
    ((Q.to("meta"), K.to("meta"), V.to("meta")), {}, r"q must be on a cpu or cuda device"),
    ((Q, K, V), {"precision": "fp16"}, r"precision must be one of \('ieee', 'tf32'\)"),
])
def test_wrong_shape_device_or_option_is_a_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FA.flash_attention(*args, **kwargs)


def test_kernel_launchers_check_tiles_and_buffers():
    with pytest.raises(ValueError, match=r"block_m must be a power of two >= 16 .* got 24"):
        FA.flash_attention_forward(Q, K, V, block_m=24)
    with pytest.raises(ValueError, match=r"block_n must be a power of two >= 16 .* got 8"):
        FA.flash_attention_backward(Q, K, V, Q, torch.zeros(2, 3, 5), Q, block_n=8)
    with pytest.raises(ValueError, match=r"out must be a contiguous torch.float32 tensor of "
                                         r"shape \(2, 3, 5, 8\) on cpu, "
                                         r"got torch.float32 \(2, 3, 5, 7\)"):
        FA.flash_attention_forward(Q, K, V, out=torch.zeros(2, 3, 5, 7))
    with pytest.raises(ValueError, match=r"lse must be a float32 tensor of shape \(B, H, Tq\) = "
                                         r"\(2, 3, 5\), got torch.float32 \(2, 3\)"):
        FA.flash_attention_backward(Q, K, V, Q, torch.zeros(2, 3), Q)
    with pytest.raises(ValueError, match=r"dout must have shape \(B, H, Tq, Dh\) = \(2, 3, 5, 8\)"):
        FA.flash_attention_backward(Q, K, V, Q, torch.zeros(2, 3, 5), K)
    with pytest.raises(ValueError, match=r"kind must be 'fwd', 'bwd_dkdv' or 'bwd_dq'"):
        FA.launch_config("bwd", torch.float16, 64)


def test_launch_configs_have_legal_tiles_and_aot_covers_every_kernel():
    for dtype in FA.DTYPES:
        for dh in (16, 40, 64, 80, 128, 256):
            for prec in ("ieee", "tf32"):
                for kind in ("fwd", "bwd_dkdv", "bwd_dq"):
                    cfg = FA.launch_config(kind, dtype, dh, prec)
                    for b in (cfg["block_m"], cfg["block_n"]):
                        assert b >= 16 and b & (b - 1) == 0
    kernels = {c["kernel"] for c in FA.AOT_CONFIGS}
    assert kernels == {"_flash_fwd_kernel", "_flash_bwd_dkdv_kernel", "_flash_bwd_dq_kernel",
                       "_flash_bwd_delta_kernel"}
    assert len({c["id"] for c in FA.AOT_CONFIGS}) == len(FA.AOT_CONFIGS)
    # the configs are the launches flash_attention makes
    for c in FA.AOT_CONFIGS:
        if c["kernel"] != "_flash_bwd_delta_kernel":
            kind = c["kernel"][len("_flash_"):-len("_kernel")]
            dtype = {"*fp16": torch.float16, "*bf16": torch.bfloat16, "*fp32": torch.float32}[
                c["signature"]["q_ptr"]]
            cfg = FA.launch_config(kind, dtype, c["constexprs"]["Dh"],
                                   c["constexprs"]["DOT_PRECISION"])
            assert (c["constexprs"]["BLOCK_M"], c["constexprs"]["BLOCK_N"]) == (
                cfg["block_m"], cfg["block_n"])
            assert c["options"] == {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]}


# --------------------------------------------------------------------------- the cost model


def test_attention_cost_numbers():
    T, Dh = 1024, 64
    c = FA.attention_cost(T, Dh)
    assert c["flash_flops_fwd"] == c["naive_flops_fwd"] == 4 * T * T * Dh
    assert c["flash_flops_fwd_bwd"] == 14 * T * T * Dh   # backward: 5 products, recomputing s
    assert c["naive_flops_fwd_bwd"] == 12 * T * T * Dh   # backward: 4 products
    assert c["flash_bytes_fwd"] == 4 * T * Dh * 2 + 4 * T
    assert c["naive_bytes_fwd"] == 4 * T * Dh * 2 + 4 * T * T * 2
    assert c["flash_bytes_fwd_bwd"] == (4 + 13) * T * Dh * 2 + 24 * T
    assert c["naive_bytes_fwd_bwd"] == (4 + 8) * T * Dh * 2 + (4 + 7) * T * T * 2
    # the docstring's intensities: flash about T / b = 512, naive about Dh / b = 32 FLOP/byte
    assert 500 < c["flash_intensity_fwd"] < 512 and 25 < c["naive_intensity_fwd"] < 32
    for gpu in ("A100", "H100 SXM"):
        ridge = ridge_point(gpu, "bf16")
        assert c["flash_intensity_fwd"] > ridge > c["naive_intensity_fwd"]
        assert c["flash_intensity_fwd_bwd"] > ridge > c["naive_intensity_fwd_bwd"]
    assert round(ridge_point("A100", "bf16")) == 156
    assert round(ridge_point("H100 SXM", "bf16")) == 295
    # K and V re-read from HBM by every query tile of 128 rows: about 2 BLOCK_M / b = 128
    assert 110 < c["flash_flops_fwd"] / c["flash_fwd_bytes_streamed"] < 128
    # causal: the flash kernels do the T (T + 1) / 2 visible pairs; naive does all and masks
    cc = FA.attention_cost(T, Dh, causal=True)
    assert cc["flash_flops_fwd"] == 4 * Dh * T * (T + 1) // 2
    assert cc["naive_flops_fwd"] == c["naive_flops_fwd"]
    assert cc["naive_bytes_fwd"] == c["naive_bytes_fwd"] + 2 * T * T * 2


def test_attention_cost_naive_bytes_grow_as_t_squared_flash_as_t():
    for T in (1024, 4096):
        a, b = FA.attention_cost(T, 64), FA.attention_cost(2 * T, 64)
        for part in ("fwd", "fwd_bwd"):
            assert b[f"flash_bytes_{part}"] == 2 * a[f"flash_bytes_{part}"]
            assert 3.8 < b[f"naive_bytes_{part}"] / a[f"naive_bytes_{part}"] < 4
            assert b[f"flash_flops_{part}"] == 4 * a[f"flash_flops_{part}"]
    f32 = FA.attention_cost(1024, 64, dtype_bytes=4)
    assert f32["flash_bytes_fwd"] == 4 * 1024 * 64 * 4 + 4 * 1024
    with pytest.raises(ValueError, match=r"T must be a positive integer, got 0"):
        FA.attention_cost(0, 64)
