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
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seqlib.recurrent import check_tensor

__all__ = ["masked_softmax", "lengths_to_mask", "AdditiveAttention", "MultiplicativeAttention"]


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
    Luong's third score, "concat", is the additive score: use AdditiveAttention."""

    SCORES = ("dot", "general")

    def __init__(self, query_size, key_size, score="dot", scale=False, device=None, dtype=None):
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
        self.query_size, self.key_size, self.score, self.scale = query_size, key_size, score, scale
        if score == "general":
            self.weight = nn.Parameter(torch.empty(query_size, key_size, device=device, dtype=dtype))
            nn.init.uniform_(self.weight, -1 / math.sqrt(key_size), 1 / math.sqrt(key_size))

    def _scores(self, query, keys):
        if self.score == "general":
            query = query @ self.weight  # (B, Tq, Nk)
        e = torch.bmm(query, keys.transpose(1, 2))
        return e / math.sqrt(self.key_size) if self.scale else e
