"""seqlib.attention: additive and multiplicative scores against a hand-written loop, masks (masked
positions get exactly zero weight), the decoder-step face against the batched face, gradients,
and bad input."""
import math
import re

import pytest
import torch

from seqlib.attention import (AdditiveAttention, MultiplicativeAttention, lengths_to_mask,
                              masked_softmax)

B, S, TQ, NQ, NK, NV, NH = 3, 5, 4, 6, 7, 2, 8
LENGTHS = [5, 2, 3]


def _modules(dtype=torch.float32):
    torch.manual_seed(0)
    return {"additive": AdditiveAttention(NQ, NK, NH, dtype=dtype),
            "dot": MultiplicativeAttention(NK, NK, "dot", dtype=dtype),
            "general": MultiplicativeAttention(NQ, NK, "general", dtype=dtype),
            "general_scaled": MultiplicativeAttention(NQ, NK, "general", scale=True, dtype=dtype)}


def _inputs(nq, dtype=torch.float32, requires_grad=False):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, TQ, nq, generator=g, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, S, NK, generator=g, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, S, NV, generator=g, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


def _reference(name, mod, q, k, v, lengths):
    """Loops over batch, query and source position, one score at a time."""
    ctx = torch.zeros(B, TQ, v.shape[2], dtype=q.dtype)
    w = torch.zeros(B, TQ, S, dtype=q.dtype)
    for b in range(B):
        for t in range(TQ):
            e = []
            for s in range(lengths[b]):
                qq, kk = q[b, t], k[b, s]
                if name == "additive":
                    h = torch.tanh(mod.query_proj.weight @ qq + mod.key_proj.weight @ kk)
                    e.append(float(mod.v.weight[0] @ h))
                elif name == "dot":
                    e.append(float(qq @ kk))
                else:
                    val = float(qq @ mod.weight @ kk)
                    e.append(val / math.sqrt(NK) if mod.scale else val)
            m = max(e)
            z = sum(math.exp(x - m) for x in e)
            for s in range(lengths[b]):
                w[b, t, s] = math.exp(e[s] - m) / z
                ctx[b, t] += w[b, t, s] * v[b, s]
    return ctx, w


@pytest.mark.parametrize("name", ["additive", "dot", "general", "general_scaled"])
def test_against_hand_written_reference(name):
    mod = _modules(torch.float64)[name]
    q, k, v = _inputs(mod.query_size, torch.float64)
    with torch.no_grad():
        ctx, w = mod(q, k, v, lengths=torch.tensor(LENGTHS))
        ref_ctx, ref_w = _reference(name, mod, q, k, v, LENGTHS)
    torch.testing.assert_close(w, ref_w)
    torch.testing.assert_close(ctx, ref_ctx)


@pytest.mark.parametrize("name", ["additive", "dot", "general"])
def test_masked_positions_get_exactly_zero_weight(name):
    mod = _modules()[name]
    q, k, v = _inputs(mod.query_size)
    mask = lengths_to_mask(torch.tensor(LENGTHS), S)
    ctx, w = mod(q, k, v, mask=mask)
    assert w.shape == (B, TQ, S) and ctx.shape == (B, TQ, NV)
    assert (w[~mask[:, None, :].expand_as(w)] == 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(B, TQ))
    # mask alone, lengths alone, and both (agreeing) give the same answer
    for kw in ({"lengths": LENGTHS}, {"mask": mask, "lengths": torch.tensor(LENGTHS)}):
        c2, w2 = mod(q, k, v, **kw)
        assert torch.equal(w, w2) and torch.equal(ctx, c2)
    # changing the padded keys/values does not change anything
    k2, v2 = k.clone(), v.clone()
    k2[~mask], v2[~mask] = 100.0, -100.0
    c3, w3 = mod(q, k2, v2, mask=mask)
    torch.testing.assert_close(c3, ctx)
    torch.testing.assert_close(w3, w)


@pytest.mark.parametrize("name", ["additive", "dot", "general"])
def test_decoder_step_face_equals_batched_queries(name):
    mod = _modules()[name]
    q, k, v = _inputs(mod.query_size)
    ctx, w = mod(q, k, v, lengths=LENGTHS)
    for t in range(TQ):
        c_t, w_t = mod(q[:, t], k, v, lengths=LENGTHS)
        assert c_t.shape == (B, NV) and w_t.shape == (B, S)
        torch.testing.assert_close(c_t, ctx[:, t])
        torch.testing.assert_close(w_t, w[:, t])


def test_values_default_to_keys_and_no_mask_is_plain_softmax():
    mod = _modules()["dot"]
    q, k, _ = _inputs(NK)
    ctx, w = mod(q, k)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(1, 2), -1))
    torch.testing.assert_close(ctx, w @ k)


@pytest.mark.parametrize("name", ["additive", "general"])
def test_gradcheck(name):
    mod = _modules(torch.float64)[name]
    q, k, v = _inputs(mod.query_size, torch.float64, requires_grad=True)
    q, k, v = q[:2, :2].detach().requires_grad_(), k[:2].detach().requires_grad_(), \
        v[:2].detach().requires_grad_()
    params = list(mod.parameters())

    def f(q, k, v, *ps):
        return mod(q, k, v, lengths=[4, 2])

    assert torch.autograd.gradcheck(f, (q, k, v, *params))
    # every parameter gets a gradient
    ctx, _ = mod(q, k, v, lengths=[4, 2])
    ctx.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)


def test_masked_softmax():
    scores = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    mask = torch.tensor([[True, False, True], [False, True, False]])
    w = masked_softmax(scores, mask)
    e = torch.exp(torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(w[0], torch.stack([e[0], torch.tensor(0.0), e[1]]) / e.sum())
    assert torch.equal(w[1], torch.tensor([0.0, 1.0, 0.0]))
    assert not torch.isnan(w).any()
    with pytest.raises(ValueError, match="mask every position"):
        masked_softmax(scores, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(TypeError, match="bool"):
        masked_softmax(scores, mask.float())


def test_bad_input():
    mod = _modules()["additive"]
    q, k, v = _inputs(NQ)
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[1, S\] = \[1, 5\]"):
        mod(q, k, v, lengths=[6, 2, 3])
    with pytest.raises(ValueError, match=r"\[1, S\]"):
        mod(q, k, v, lengths=[0, 2, 3])
    with pytest.raises(ValueError, match=r"lengths: expected shape \(B,\) = \(3,\), got \(2,\)"):
        mod(q, k, v, lengths=[2, 3])
    bad = lengths_to_mask(torch.tensor(LENGTHS), S)
    bad[1, 3] = True
    with pytest.raises(ValueError, match=r"mask does not match lengths in batch rows \[1\]"):
        mod(q, k, v, mask=bad, lengths=LENGTHS)
    with pytest.raises(ValueError, match=r"mask: expected shape \(B, S\) = \(3, 5\), got \(3, 4\)"):
        mod(q, k, v, mask=torch.ones(B, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask: expected a bool tensor"):
        mod(q, k, v, mask=torch.ones(B, S))
    with pytest.raises(ValueError, match="mask every position"):
        mod(q, k, v, mask=torch.zeros(B, S, dtype=torch.bool))
    with pytest.raises(ValueError, match=re.escape("query: expected shape (B, Tq, Nq) = ('*', '*', 6), got (3, 4, 5)")):
        mod(q[..., :5], k, v)
    with pytest.raises(ValueError, match=re.escape("query: expected shape (B, Nq) = ('*', 6), got (3, 5)")):
        mod(q[:, 0, :5], k, v)
    with pytest.raises(ValueError, match=re.escape("keys: expected shape (B, S, Nk) = (3, '*', 7), got (2, 5, 7)")):
        mod(q, k[:2], v)
    with pytest.raises(ValueError, match=re.escape("values: expected shape (B, S, Nv) = (3, 5, '*'), got (3, 4, 2)")):
        mod(q, k, v[:, :4])
    with pytest.raises(ValueError, match="query_size == key_size"):
        MultiplicativeAttention(4, 5, "dot")
    with pytest.raises(ValueError, match="AdditiveAttention"):
        MultiplicativeAttention(4, 5, "concat")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        AdditiveAttention(4, 5, 0)


# ---------------------------------------------------------------- the fused kernel as a backend


def _dot_pair(scale=False):
    """The same "dot" module twice: backend torch and triton (the kernel, in the interpreter)."""
    return (MultiplicativeAttention(NK, NK, "dot", scale=scale, backend="torch"),
            MultiplicativeAttention(NK, NK, "dot", scale=scale, backend="triton"))


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, None])
def test_triton_backend_equals_torch_values_and_gradients(scale, lengths):
    ref, fused = _dot_pair(scale)
    q, k, v = _inputs(NK)
    q = q[:, 0].detach()
    up = torch.randn(B, NV, generator=torch.Generator().manual_seed(2))
    out, grads = {}, {}
    for name, mod in (("torch", ref), ("triton", fused)):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        lens = None if lengths is None else torch.tensor(lengths)
        ctx, w = mod(qq, kk, vv, lengths=lens)
        assert ctx.shape == (B, NV) and w.shape == (B, S)
        out[name] = (ctx.detach(), w.detach())
        grads[name] = torch.autograd.grad((ctx * up).sum(), (qq, kk, vv))
    for a, b in zip(out["triton"], out["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads["triton"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if lengths is not None:  # padding gets exactly zero weight on the kernel path too
        assert (out["triton"][1][~lengths_to_mask(torch.tensor(lengths), S)] == 0).all()


def test_triton_backend_values_default_to_keys_and_mask_with_lengths():
    ref, fused = _dot_pair()
    q, k, _ = _inputs(NK)
    lens = torch.tensor(LENGTHS)
    mask = lengths_to_mask(lens, S)
    for a, b in zip(fused(q[:, 1], k, mask=mask, lengths=lens), ref(q[:, 1], k, lengths=lens)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_backend_auto_takes_torch_on_cpu_and_bad_backend_input():
    q, k, v = _inputs(NK)
    auto = MultiplicativeAttention(NK, NK, "dot")
    assert auto.backend == "auto" and auto._backend_for(q[:, 0], None, LENGTHS) == "torch"
    _, fused = _dot_pair()
    with pytest.raises(ValueError, match="backend must be one of"):
        MultiplicativeAttention(NK, NK, "dot", backend="cuda")
    with pytest.raises(ValueError, match=r"'dot' score only, got score='general'"):
        MultiplicativeAttention(NQ, NK, "general", backend="triton")
    with pytest.raises(ValueError, match=r"decoder-step face, query \(B, Nq\), got query of shape \(3, 4, 7\)"):
        fused(q, k, v, lengths=LENGTHS)
    with pytest.raises(ValueError, match="not a general mask"):
        fused(q[:, 0], k, v, mask=lengths_to_mask(torch.tensor(LENGTHS), S))
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[1, S\]"):
        fused(q[:, 0], k, v, lengths=[6, 2, 3])
    with pytest.raises(ValueError, match=re.escape("keys: expected shape (B, S, Nk) = (3, '*', 7)")):
        fused(q[:, 0], k[:, :, :5], v, lengths=LENGTHS)
