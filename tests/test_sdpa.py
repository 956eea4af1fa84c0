"""seqlib.attention's self-attention: scaled_dot_product_attention against PyTorch's
(values and gradients, over masks, causal, lengths, leading dims and scales), attention as an RNN
(recurrent_attention in chunks, recurrent_attention_step key by key) against the parallel form,
the flash-attention backend (when its kernel exists), and bad input."""
import math
import re

import pytest
import torch
import torch.nn.functional as F

from seqlib.attention import (AttentionState, causal_mask, recurrent_attention,
                              recurrent_attention_step, scaled_dot_product_attention)


def _qkv(lead, Tq, Tk, Dh, Dv, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*lead, T, d, generator=g, dtype=dtype, requires_grad=True)
            for T, d in ((Tq, Dh), (Tk, Dh), (Tk, Dv))]


def _mask(kind, shape, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    if kind == "bool":
        m = torch.rand(*shape, generator=g) > 0.3
        m[..., 0] = True  # no row fully masked here (that case has its own test)
        return m
    if kind == "float":
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()
    return None


# (lead dims, Tq, Tk, Dh, Dv, mask kind, mask shape, causal, scale)
GRID = [((), 5, 5, 4, 4, None, None, False, None),                      # 2-D
        ((3,), 4, 6, 8, 5, None, None, False, None),                    # 3-D, Tq != Tk, Dv != Dh
        ((2, 3), 5, 7, 8, 6, None, None, True, None),                   # 4-D causal, Tq < Tk
        ((2, 3), 7, 4, 8, 8, None, None, True, 0.3),                    # causal, Tq > Tk, scale
        ((2, 3), 4, 6, 8, 8, "bool", (4, 6), False, None),              # (Tq, Tk) bool mask
        ((2, 3), 4, 6, 8, 8, "bool", (2, 1, 4, 6), False, 2.0),         # broadcast over heads
        ((2, 3), 4, 6, 8, 8, "bool", (2, 1, 1, 6), False, None),        # key padding
        ((3,), 5, 5, 4, 3, "float", (3, 5, 5), False, None),            # float mask, 3-D
        ((2, 3), 4, 6, 8, 8, "float", (6,), False, 0.5),                # float bias over keys
        ((1, 3), 4, 6, 8, 8, None, None, False, None)]                  # q broadcast over batch
IDS = [f"{len(lead) + 2}d-Tq{tq}-Tk{tk}-{mk}-{'causal' if c else 'full'}-s{s}"
       for lead, tq, tk, _, _, mk, _, c, s in GRID]


@pytest.mark.parametrize("lead,Tq,Tk,Dh,Dv,mask_kind,mask_shape,causal,scale", GRID, ids=IDS)
def test_equals_torch_sdpa_values_and_gradients(lead, Tq, Tk, Dh, Dv, mask_kind, mask_shape,
                                                causal, scale):
    q, k, v = _qkv(lead, Tq, Tk, Dh, Dv)
    if lead == (1, 3):  # q broadcasts against k and v with a batch of 2
        k, v = (torch.randn(2, 3, Tk, d, dtype=torch.float64, requires_grad=True) for d in (Dh, Dv))
    mask = _mask(mask_kind, mask_shape) if mask_kind else None
    leaves = [q, k, v] + ([mask] if mask_kind == "float" else [])
    ours = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, scale=scale,
                                        backend="torch")
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, scale=scale)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, leaves, up), torch.autograd.grad(ref, leaves, up)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_float32_and_auto_backend_on_cpu():
    q, k, v = (t.detach().float() for t in _qkv((2, 2), 6, 6, 8, 8))
    ours = scaled_dot_product_attention(q, k, v, causal=True)  # auto -> torch on the CPU
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_fully_masked_row_gives_zeros_like_torch(mask_kind):
    q, k, v = _qkv((2,), 3, 4, 4, 4)
    if mask_kind == "bool":
        mask = torch.ones(3, 4, dtype=torch.bool)
        mask[1] = False
    else:
        mask = torch.zeros(3, 4, dtype=torch.float64)
        mask[1] = float("-inf")
    ours = scaled_dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(ours[:, 1], torch.zeros_like(ours[:, 1]))
    torch.testing.assert_close(ours, ref)
    up = torch.randn_like(ref)
    grads = torch.autograd.grad(ours, [q, k, v], up)
    assert all(torch.isfinite(g).all() for g in grads)
    for a, b in zip(grads, torch.autograd.grad(ref, [q, k, v], up)):
        torch.testing.assert_close(a, b)


def test_causal_mask_is_top_left():
    assert causal_mask(2, 4).tolist() == [[True, False, False, False], [True, True, False, False]]


# ----------------------------------------------------------------------- attention as an RNN

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("Tq,Tk", [(5, 7), (7, 4), (6, 6)])
@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_recurrent_attention_equals_parallel(chunk, Tq, Tk, causal):
    q, k, v = _qkv((2, 3), Tq, Tk, 8, 5, seed=chunk + Tq)
    ours = recurrent_attention(q, k, v, causal=causal, chunk=chunk)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, [q, k, v], up), torch.autograd.grad(ref, [q, k, v], up)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_recurrent_attention_3d_scale_and_large_scores():
    q, k, v = (t.detach() for t in _qkv((3,), 4, 9, 6, 6, seed=5))
    q = q * 30.0  # scores in the hundreds: the running maximum keeps exp from overflowing
    ours = recurrent_attention(q, k, v, scale=1.5, chunk=2)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, scale=1.5))
    assert torch.isfinite(ours).all()


def test_recurrent_step_reads_keys_one_at_a_time():
    """A fixed query reading the keys one by one (Feng et al.'s many-to-one RNN): after t keys the
    output is attention over the first t keys, and the state keeps its size."""
    q, k, v = (t.detach() for t in _qkv((2, 3), 1, 6, 8, 5, seed=7))
    state = None
    for t in range(6):
        out, state = recurrent_attention_step(state, q[..., 0, :], k[..., t, :], v[..., t, :])
        ref = F.scaled_dot_product_attention(q, k[..., :t + 1, :], v[..., :t + 1, :])[..., 0, :]
        torch.testing.assert_close(out, ref)
        assert isinstance(state, AttentionState)
        assert state.m.shape == state.l.shape == (2, 3) and state.acc.shape == (2, 3, 5)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("args,kwargs,error,pattern", [
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 6), torch.randn(2, 5, 8)), {}, ValueError,
     r"k: head dim .* Dh = 8; got k of shape \(2, 5, 6\)"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 6, 8)), {}, ValueError,
     r"v: length .* Tk = 5; got v of shape \(2, 6, 8\)"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
     {"mask": torch.ones(4, 4, dtype=torch.bool)}, ValueError,
     r"mask: shape \(4, 4\) does not broadcast to .* \(2, 4, 5\)"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
     {"mask": torch.ones(3, 2, 4, 5, dtype=torch.bool)}, ValueError,
     r"mask: shape \(3, 2, 4, 5\) does not broadcast"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
     {"mask": torch.ones(4, 5, dtype=torch.int64)}, TypeError, r"mask: expected dtype bool"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)),
     {"mask": torch.ones(4, 5, dtype=torch.bool), "causal": True}, ValueError,
     r"mask and causal=True"),
    ((torch.randn(2, 4, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)), {}, ValueError,
     r"leading dims .* must broadcast"),
    ((torch.randn(8), torch.randn(5, 8), torch.randn(5, 8)), {}, ValueError,
     r"q: expected shape \(\.\.\., T, Dh\)"),
    ((torch.randn(4, 8), torch.randn(5, 8).double(), torch.randn(5, 8)), {}, TypeError,
     r"share a dtype"),
    ((torch.randn(4, 8), torch.randn(5, 8), torch.randn(5, 8)), {"backend": "cuda"}, ValueError,
     r"backend must be one of"),
    ((torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)), {"backend": "triton"},
     ValueError, r"backend='triton': the flash-attention kernel takes 4-D \(B, H, T, Dh\)"),
    ((torch.randn(1, 2, 4, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)),
     {"backend": "triton", "mask": torch.ones(4, 5, dtype=torch.bool)}, ValueError,
     r"backend='triton': the flash-attention kernel takes no mask"),
])
def test_errors(args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        scaled_dot_product_attention(*args, **kwargs)


def test_recurrent_errors():
    q, k, v = torch.randn(4, 8), torch.randn(5, 6), torch.randn(5, 8)
    with pytest.raises(ValueError, match=re.escape("k: head dim (last) must equal q's, Dh = 8")):
        recurrent_attention(q, k, v)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        recurrent_attention(q, torch.randn(5, 8), v, chunk=0)
    with pytest.raises(ValueError, match=r"k_t: width .* Dh = 8"):
        recurrent_attention_step(None, torch.randn(8), torch.randn(6), torch.randn(3))


# ------------------------------------------------------------- the flash-attention backend

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_triton_backend_equals_torch(causal):
    """Tiny shapes: the kernel runs in Triton's interpreter on the CPU (its own tests cover it)."""
    q, k, v = (t.detach().float().requires_grad_() for t in _qkv((1, 2), 19, 19, 16, 16, seed=3))
    ours = scaled_dot_product_attention(q, k, v, causal=causal, backend="triton")
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1 / math.sqrt(16))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    up = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(ours, [q, k, v], up), torch.autograd.grad(ref, [q, k, v], up)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
