"""Attention over encoder states: additive (Bahdanau et al. 2015) and multiplicative (Luong et al.
2015), with padding masks.

Shapes (book/notation.md):
    B  batch      S  source length (encoder states)      Tq  number of queries (target length T)
    Nq query size (decoder state)   Nk key size   Nv value size   Nh hidden size of the additive score

A decoder at target step t holds a query q_t (its state, (B, Nq)) and the encoder states
keys (B, S, Nk); attention scores every source position, turns the scores into weights with a
softmax over the positions that are real (not padding) and returns the weighted sum of the values:

    e_{t,s} = score(q_t, k_s)        a_t = masked_softmax(e_t, mask)        c_t = sum_s a_{t,s} v_s

Scores (the "score" names are Luong's):
    additive (Bahdanau; Luong's "concat"):  e = w^T tanh(W_q q + W_k k)        AdditiveAttention
    "dot":                                   e = q . k   (needs Nq == Nk)      MultiplicativeAttention
    "general":                               e = q^T W k                       MultiplicativeAttention

Both modules have two faces with one forward:

* the recurrent decoder-step face: ``attn(q_t, keys, ...)`` with one query per batch element,
  q_t (B, Nq) -> context (B, Nv), weights (B, S). This is what a decoder calls inside its ``step``;
* the batched face: ``attn(Q, keys, ...)`` with Q (B, Tq, Nq) -> context (B, Tq, Nv), weights
  (B, Tq, S), used when all the queries are known at once (teacher forcing, Luong's attention on top
  of the decoder outputs). It equals stepping query by query (the tests check this).

Which source positions are real is given either by ``mask`` (B, S) bool, True = attend, or by
``lengths`` (B,) with 1 <= lengths[b] <= S (positions s < lengths[b] are real), or by both, which
must then agree. Masked positions get exactly zero weight.

Self-attention (chapter 7) is at the end of the module: ``scaled_dot_product_attention`` (the
parallel face, equal to PyTorch's, with a flash-attention backend) and ``recurrent_attention`` /
``recurrent_attention_step`` (the same softmax read one key at a time, "attention as an RNN").
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from seqlib.recurrent import BACKENDS, check_tensor, resolve_backend

__all__ = ["masked_softmax", "lengths_to_mask", "AdditiveAttention", "MultiplicativeAttention",
           "scaled_dot_product_attention", "causal_mask", "recurrent_attention",
           "recurrent_attention_step", "AttentionState"]


def masked_softmax(scores, mask=None, dim=-1):
    """Softmax of ``scores`` along ``dim`` over the entries where ``mask`` is True.

    mask is a bool tensor broadcastable to scores (None = attend everywhere). Masked entries get
    exactly 0 weight. A row with every entry masked has no distribution: ValueError, not NaN.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"mask: expected a bool tensor (True = attend), got "
                        f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
    try:
        mask = mask.expand_as(scores)
    except RuntimeError:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not broadcast to the scores' shape "
                         f"{tuple(scores.shape)}") from None
    empty = ~mask.any(dim=dim)
    if empty.any():
        rows = empty.nonzero().tolist()[:5]
        raise ValueError(f"mask: rows {rows} (first {len(rows)}) mask every position along dim "
                         f"{dim}; a softmax over no positions is undefined")
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)


def lengths_to_mask(lengths, S):
    """(B,) lengths -> (B, S) bool mask, True at positions s < lengths[b]."""
    lengths = torch.as_tensor(lengths)
    return torch.arange(S, device=lengths.device)[None, :] < lengths[:, None]


def _source_mask(mask, lengths, B, S, device):
    """Check mask (B, S) and/or lengths (B,) and return the (B, S) bool mask (or None)."""
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"lengths: expected shape (B,) = ({B},), got {tuple(lengths.shape)}")
        if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise TypeError(f"lengths: expected integers, got {lengths.dtype}")
        if (lengths < 1).any() or (lengths > S).any():
            raise ValueError(f"lengths: every length must be in [1, S] = [1, {S}], got "
                             f"{lengths.tolist()}")
        from_lengths = lengths_to_mask(lengths, S)
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError("mask: expected a bool tensor (B, S) with True = attend, got "
                            f"{mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        check_tensor("mask", mask, (B, S), "(B, S)")
        if lengths is not None and not torch.equal(mask.to(device), from_lengths):
            bad = (mask.to(device) != from_lengths).any(dim=1).nonzero().flatten().tolist()
            raise ValueError(f"mask does not match lengths in batch rows {bad}: with lengths "
                             f"{lengths.tolist()} the mask must be True exactly at s < lengths[b]")
        return mask.to(device)
    return from_lengths if lengths is not None else None


class _Attention(nn.Module):
    """The part both scores share: checks, mask, softmax, context. Subclasses define _scores."""

    def _scores(self, query, keys):  # (B, Tq, Nq), (B, S, Nk) -> (B, Tq, S)
        raise NotImplementedError

    def forward(self, query, keys, values=None, mask=None, lengths=None):
        """query (B, Nq) [decoder-step face] or (B, Tq, Nq); keys (B, S, Nk); values (B, S, Nv)
        (default: keys); mask (B, S) bool True = attend and/or lengths (B,).
        Returns (context (B, [Tq,] Nv), weights (B, [Tq,] S))."""
        if not isinstance(query, torch.Tensor) or query.dim() not in (2, 3):
            got = tuple(query.shape) if isinstance(query, torch.Tensor) else type(query).__name__
            raise ValueError(f"query: expected shape (B, Nq) = (*, {self.query_size}) or "
                             f"(B, Tq, Nq) = (*, *, {self.query_size}), got {got}")
        single = query.dim() == 2
        if single:
            check_tensor("query", query, (None, self.query_size), "(B, Nq)")
        else:
            check_tensor("query", query, (None, None, self.query_size), "(B, Tq, Nq)")
        q = query.unsqueeze(1) if single else query
        B = q.shape[0]
        check_tensor("keys", keys, (B, None, self.key_size), "(B, S, Nk)")
        S = keys.shape[1]
        if values is None:
            values = keys
        check_tensor("values", values, (B, S, None), "(B, S, Nv)")
        m = _source_mask(mask, lengths, B, S, keys.device)
        weights = masked_softmax(self._scores(q, keys), None if m is None else m[:, None, :])
        context = torch.bmm(weights, values)
        if single:
            return context.squeeze(1), weights.squeeze(1)
        return context, weights


class AdditiveAttention(_Attention):
    """Bahdanau et al. (2015): e_{t,s} = w^T tanh(W_q q_t + W_k k_s) (Luong's "concat" score).

    Parameters: W_q = query_proj.weight (Nh, Nq), W_k = key_proj.weight (Nh, Nk), w = v.weight
    (1, Nh); no biases, as in the paper. Call with q (B, Nq) at each decoder step, or (B, Tq, Nq).
    """

    def __init__(self, query_size, key_size, hidden_size, device=None, dtype=None):
        super().__init__()
        for name, val in (("query_size", query_size), ("key_size", key_size),
                          ("hidden_size", hidden_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        self.query_size, self.key_size, self.hidden_size = query_size, key_size, hidden_size
        f = {"device": device, "dtype": dtype}
        self.query_proj = nn.Linear(query_size, hidden_size, bias=False, **f)
        self.key_proj = nn.Linear(key_size, hidden_size, bias=False, **f)
        self.v = nn.Linear(hidden_size, 1, bias=False, **f)

    def _scores(self, query, keys):
        hidden = torch.tanh(self.query_proj(query)[:, :, None, :] + self.key_proj(keys)[:, None, :, :])
        return self.v(hidden).squeeze(-1)  # (B, Tq, S)


class MultiplicativeAttention(_Attention):
    """Luong et al. (2015): score="dot" e = q . k (needs Nq == Nk), or "general" e = q^T W k with
    W = weight (Nq, Nk). scale=True divides the scores by sqrt(Nk) (as Transformers later did).
    Luong's third score, "concat", is the additive score: use AdditiveAttention.

    backend: "torch" (``_scores`` and ``masked_softmax`` below), "triton" (the fused kernel
    ``seqlib.kernels.attention_step.attention_step_triton``: score="dot", the decoder-step face
    q (B, Nq), padding given by ``lengths`` (or none), float32; on a CPU it runs in Triton's
    interpreter) or "auto" (Triton for CUDA float32 inputs the kernel supports, PyTorch otherwise).
    With the kernel the context is differentiable as always; the weights (B, S) are recomputed
    from the kernel's log-sum-exp and carry no gradient."""

    SCORES = ("dot", "general")

    def __init__(self, query_size, key_size, score="dot", scale=False, device=None, dtype=None,
                 backend="auto"):
        super().__init__()
        for name, val in (("query_size", query_size), ("key_size", key_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if score not in self.SCORES:
            hint = " (Luong's 'concat' score is AdditiveAttention)" if score == "concat" else ""
            raise ValueError(f"score must be one of {self.SCORES}, got {score!r}{hint}")
        if score == "dot" and query_size != key_size:
            raise ValueError(f"score='dot' needs query_size == key_size, got {query_size} and "
                             f"{key_size}; use score='general' for different sizes")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "triton" and score != "dot":
            raise ValueError(f"backend='triton': the fused attention-step kernel computes the "
                             f"'dot' score only, got score={score!r}; use backend='torch'")
        self.backend = backend
        self.query_size, self.key_size, self.score, self.scale = query_size, key_size, score, scale
        if score == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size, device=device, dtype=dtype))
            nn.init.uniform_(self.weight, -1 / math.sqrt(key_size), 1 / math.sqrt(key_size))

    def _scores(self, query, keys):
        if self.score == "general":
            query = query @ self.weight  # (B, Tq, Nk)
        e = torch.bmm(query, keys.transpose(1, 2))
        return e / math.sqrt(self.key_size) if self.scale else e

    def forward(self, query, keys, values=None, mask=None, lengths=None):
        """As :meth:`_Attention.forward`; ``backend`` picks the PyTorch path or the fused kernel."""
        if self._backend_for(query, mask, lengths) == "torch":
            return super().forward(query, keys, values, mask, lengths)
        check_tensor("query", query, (None, self.query_size), "(B, Nq)")
        B = query.shape[0]
        check_tensor("keys", keys, (B, None, self.key_size), "(B, S, Nk)")
        S = keys.shape[1]
        values = keys if values is None else values
        check_tensor("values", values, (B, S, None), "(B, S, Nv)")
        if lengths is not None:
            _source_mask(mask, lengths, B, S, keys.device)  # checks lengths (and mask agrees)
            lengths = torch.as_tensor(lengths, device=keys.device)
        from seqlib.kernels.attention_step import attention_step_triton

        scale = 1.0 / math.sqrt(self.key_size) if self.scale else 1.0
        context, lse = attention_step_triton(query, keys, values, lengths, scale=scale)
        with torch.no_grad():
            e = torch.einsum("bn,bsn->bs", query, keys) * scale
            if lengths is not None:
                e = e.masked_fill(~lengths_to_mask(lengths, S), float("-inf"))
            weights = torch.exp(e - lse[:, None])
        return context, weights

    def _backend_for(self, query, mask, lengths):
        """'torch' or 'triton' for this call; ValueError if 'triton' cannot serve it."""
        ok = isinstance(query, torch.Tensor)
        if self.backend == "auto":
            ok = (ok and query.is_cuda and query.dtype == torch.float32 and query.dim() == 2
                  and self.score == "dot" and (mask is None or lengths is not None))
            return "triton" if ok else "torch"
        if self.backend == "torch" or not ok:
            return "torch"  # (a query that is not a tensor gets the base class's error)
        if query.dim() != 2:
            raise ValueError(f"backend='triton': the fused kernel runs the decoder-step face, query "
                             f"(B, Nq), got query of shape {tuple(query.shape)}; use "
                             f"backend='torch' for (B, Tq, Nq) queries")
        if mask is not None and lengths is None:
            raise ValueError("backend='triton': the fused kernel takes the real source positions "
                             "as lengths (B,), not a general mask (B, S); pass lengths= or use "
                             "backend='torch'")
        return "triton"


# ====================================================================== self-attention (chapter 7)
#
# Shapes: q (..., Tq, Dh), k (..., Tk, Dh), v (..., Tk, Dv), output (..., Tq, Dv), where ... is
# any number of leading dims (usually (B, H): batch and heads), broadcast between q and k/v as
# torch.matmul broadcasts. Dh is the query/key width of one head, Dv the value width.

SDPA_BACKENDS = ("auto", "torch", "triton")


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, scale=None, backend="auto"):
    """softmax(scale * q k^T + mask) v, as ``torch.nn.functional.scaled_dot_product_attention``.

    q (..., Tq, Dh), k (..., Tk, Dh), v (..., Tk, Dv) -> (..., Tq, Dv).
    mask: None, a bool tensor (True = the key takes part) or a float tensor added to the scores,
    broadcastable to (..., Tq, Tk). causal=True lets query i see keys j <= i (top-left aligned,
    also when Tq != Tk); it cannot be combined with a mask (build the mask you want instead).
    scale defaults to 1 / sqrt(Dh). A query whose keys are all masked gets a zero output (as
    PyTorch does), not NaN.

    backend: "torch" (the four lines below), "triton" (``seqlib.kernels.flash_attention``: 4-D
    (B, H, T, Dh) float32/float16/bfloat16 tensors, v as wide as q, no mask; on a CPU it runs in
    Triton's interpreter) or "auto" (Triton for CUDA inputs the kernel takes, PyTorch otherwise).
    """
    batch = _check_qkv(q, k, v)
    Tq, Tk = q.shape[-2], k.shape[-2]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    if mask is not None and causal:
        raise ValueError("mask and causal=True were both given; PyTorch refuses the pair too. "
                         "Pass causal=False and fold the causal pattern into your mask")
    if mask is not None:
        mask = _check_attention_mask(mask, q, batch, Tq, Tk)
    backend = _resolve_sdpa_backend(backend, q, k, v, mask)
    if backend == "triton":
        _check_flash_supported(q, k, v, mask)
        from seqlib.kernels.flash_attention import flash_attention
        return flash_attention(q, k, v, causal=causal, scale=scale)

    scores = (q @ k.transpose(-2, -1)) * scale                            # (..., Tq, Tk)
    if causal:
        mask = causal_mask(Tq, Tk, device=q.device)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    return _softmax_rows(scores) @ v


def causal_mask(Tq, Tk, device=None):
    """(Tq, Tk) bool, True where key j <= query i (top-left aligned, as PyTorch's is_causal)."""
    return torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril()


def _softmax_rows(scores):
    """Softmax over the last dim, written out: subtract the row maximum, exponentiate, normalise.
    A row of -inf (every key masked) gives zeros, and zero gradients, instead of NaN."""
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isinf(m) & (m < 0), torch.zeros_like(m), m).detach()
    e = torch.exp(scores - m)
    total = e.sum(dim=-1, keepdim=True)
    return e / torch.where(total == 0, torch.ones_like(total), total)


def _check_qkv(q, k, v):
    """Check q (..., Tq, Dh), k (..., Tk, Dh), v (..., Tk, Dv); return the broadcast leading dims."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor (..., T, Dh), got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name}: expected shape (..., T, Dh) with at least 2 dims, got "
                             f"{tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise TypeError(f"{name}: expected a floating-point tensor, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f"k: head dim (last) must equal q's, Dh = {q.shape[-1]}; got k of shape "
                         f"{tuple(k.shape)} for q of shape {tuple(q.shape)}")
    if v.shape[-2] != k.shape[-2]:
        raise ValueError(f"v: length (dim -2) must equal k's, Tk = {k.shape[-2]}; got v of shape "
                         f"{tuple(v.shape)} for k of shape {tuple(k.shape)}")
    try:
        return torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except RuntimeError:
        raise ValueError(f"q, k, v: leading dims (...) must broadcast, got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}") from None


def _check_attention_mask(mask, q, batch, Tq, Tk):
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask: expected a bool or float tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.dtype.is_floating_point:
        raise TypeError(f"mask: expected dtype bool (True = take part) or a float dtype (added "
                        f"to the scores), got {mask.dtype}")
    want = (*batch, Tq, Tk)
    try:
        fits = mask.dim() <= len(want) and torch.broadcast_shapes(mask.shape, want) == want
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"mask: shape {tuple(mask.shape)} does not broadcast to the scores' "
                         f"shape (..., Tq, Tk) = {want}")
    return mask if mask.dtype == torch.bool else mask.to(q.dtype)


def _resolve_sdpa_backend(backend, q, k, v, mask):
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"backend must be one of {SDPA_BACKENDS}, got {backend!r}")
    if backend == "auto":  # what the flash kernel takes; anything else goes to the reference
        ok = (q.is_cuda and q.dtype in (torch.float32, torch.float16, torch.bfloat16)
              and q.dim() == 4 and mask is None and k.shape == v.shape
              and q.shape[:2] == k.shape[:2] and q.shape[-1] == k.shape[-1] <= 256)
        return "triton" if ok else "torch"
    return backend


def _check_flash_supported(q, k, v, mask):
    if mask is not None:
        raise ValueError("backend='triton': the flash-attention kernel takes no mask (causal=True "
                         "is supported); use backend='torch' for masked attention")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"backend='triton': the flash-attention kernel takes 4-D (B, H, T, Dh) "
                         f"tensors, got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"backend='triton': q, k, v must have the same (B, H) (no broadcasting), "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


# ---------------------------------------------------------------------- attention as an RNN


class AttentionState(NamedTuple):
    """The running state of softmax attention read one key (or one chunk of keys) at a time.

    m (...,) the largest score so far; l (...,) the sum of exp(score - m) so far; acc (..., Dv)
    the sum of exp(score - m) v so far. The attention output at any point is acc / l.
    """
    m: torch.Tensor
    l: torch.Tensor
    acc: torch.Tensor


def _online_softmax_update(state, scores, values):
    """Fold a block of scores (..., Tq, c) and their values (..., c, Dv) into the state (m, l, acc)
    with m, l (..., Tq) and acc (..., Tq, Dv): every query reads the same c keys, so the values
    enter through one matrix product p @ values (no copy of the values per query).

    m' = max(m, max_j s_j);  l' = e^(m - m') l + sum_j e^(s_j - m');
    acc' = e^(m - m') acc + sum_j e^(s_j - m') v_j.   (Scores of -inf count for nothing.)
    """
    m, l, acc = state
    m_new = torch.maximum(m, scores.amax(dim=-1)).detach()  # the result does not depend on m
    m_safe = torch.where(torch.isinf(m_new), torch.zeros_like(m_new), m_new)  # all -inf so far
    alpha = torch.exp(m - m_safe)                                  # rescales what came before
    p = torch.exp(scores - m_safe[..., None])
    l_new = alpha * l + p.sum(dim=-1)
    acc_new = alpha[..., None] * acc + p @ values
    return AttentionState(m_new, l_new, acc_new)


def _read_out(state):
    l = state.l
    return state.acc / torch.where(l == 0, torch.ones_like(l), l)[..., None]


def recurrent_attention(q, k, v, causal=False, scale=None, chunk=1):
    """Softmax attention computed as an RNN over the keys (Feng et al. 2024, "Attention as an RNN").

    q (..., Tq, Dh), k (..., Tk, Dh), v (..., Tk, Dv) -> (..., Tq, Dv), equal (up to rounding) to
    ``scaled_dot_product_attention(q, k, v, causal=causal, scale=scale)``.

    The keys are read ``chunk`` at a time, left to right. Every query carries a running maximum m,
    a running sum l and a running numerator acc (``AttentionState``); a chunk's scores (..., Tq,
    chunk) are folded in by rescaling the old sums by e^(m_old - m_new) (the online softmax of
    Milakov & Gimelshein 2018, which flash attention tiles and Feng et al. read as an RNN). The
    Tq x Tk score matrix is never formed: the working memory is O(Tq * Dh + chunk * Tq) per
    leading index (the state and one chunk's scores) instead of O(Tq * Tk), under torch.no_grad;
    with autograd on, the graph keeps every chunk's probabilities for the backward pass, which is
    O(Tq * Tk) again (flash attention avoids that by recomputing them from the log-sum-exp).
    """
    batch = _check_qkv(q, k, v)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    Tq, Tk, Dv = q.shape[-2], k.shape[-2], v.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    state = AttentionState(q.new_full((*batch, Tq), float("-inf")), q.new_zeros((*batch, Tq)),
                           q.new_zeros((*batch, Tq, Dv)))
    rows = torch.arange(Tq, device=q.device)[:, None]                          # (Tq, 1)
    for start in range(0, Tk, chunk):
        k_c, v_c = k[..., start:start + chunk, :], v[..., start:start + chunk, :]
        scores = (q @ k_c.transpose(-2, -1)) * scale                           # (..., Tq, c)
        if causal:
            cols = torch.arange(start, start + k_c.shape[-2], device=q.device)[None, :]
            scores = scores.masked_fill(cols > rows, float("-inf"))
        state = _online_softmax_update(state, scores, v_c)
    return _read_out(state)


def recurrent_attention_step(state, q, k_t, v_t, scale=None):
    """One step of attention as an RNN: a fixed query q reads one more (key, value) pair.

    q (..., Dh), k_t (..., Dh), v_t (..., Dv); state an ``AttentionState`` with m, l (...,) and
    acc (..., Dv), or None before the first key. Returns (out (..., Dv), new state), where out is
    the softmax attention of q over every key read so far: after t steps it equals
    ``scaled_dot_product_attention(q[..., None, :], k[..., :t, :], v[..., :t, :])``. The state
    has a constant size however many keys have been read; this is Feng et al.'s many-to-one RNN.
    (A decoder's queries change at every step, and each new query needs every past key: that is
    what a Transformer's KV cache stores, see ``seqlib.transformer``.)
    """
    for name, t in (("q", q), ("k_t", k_t), ("v_t", v_t)):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a tensor of shape (..., Dh), got {got}")
    if k_t.shape[-1] != q.shape[-1]:
        raise ValueError(f"k_t: width (last dim) must equal q's, Dh = {q.shape[-1]}; got "
                         f"{tuple(k_t.shape)}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    score = (q * k_t).sum(dim=-1, keepdim=True) * scale                         # (..., 1)
    if state is None:
        batch = score.shape[:-1]
        state = AttentionState(score.new_full(batch, float("-inf")), score.new_zeros(batch),
                               score.new_zeros((*batch, v_t.shape[-1])))
    one = AttentionState(state.m[..., None], state.l[..., None], state.acc[..., None, :])  # Tq = 1
    one = _online_softmax_update(one, score[..., None], v_t[..., None, :])   # c = 1 key
    state = AttentionState(one.m[..., 0], one.l[..., 0], one.acc[..., 0, :])
    return _read_out(state), state
