"""Decoding written once for any model with a step face: greedy, beam search, diverse beam search.

Shapes:
    B  batch      K  beams (beam_size)      G  groups (diverse beam search)      V  vocabulary
    L  length of the decoded tokens (at most max_len)

The decoder protocol. A model is decoded through two callables:

* ``step(state, tokens) -> (log_probs, new_state)``: tokens (B',) are the last tokens (``bos`` at
  the first call), log_probs (B', V) the log-probabilities of the next token, where B' is the number
  of rows being decoded (B for greedy, B*K for the beam searches: row b*K + k is beam k of batch
  element b). ``state`` is whatever the model needs (None, a tensor, a nested tuple/list/dict of
  tensors: encoder outputs, masks, hidden states ...).
* ``reorder(state, index) -> state`` with index (B'',) a LongTensor: keep rows ``index`` of the state,
  in that order (used to expand B rows to B*K beams and to follow the beams that survive a step).
  The default, ``reorder_state``, index_selects **dim 0 of every tensor** in a nested
  tuple/list/dict state, so dim 0 of every state tensor must be the batch. For a state whose batch
  is elsewhere (seqlib.RNN's (L, B, N) hidden state) pass ``reorder=reorder_along(1)`` or your own,
and give ``bos`` as a (B,) tensor: the batch size B is read from ``bos`` when it is a tensor, else
from dim 0 of the first tensor found in the state.

Scores are sums of log-probabilities of the emitted tokens, the end-of-sequence token ``eos``
included. A sequence that has emitted ``eos`` is finished: it is kept and not extended, its later
positions in ``tokens`` hold ``eos`` as padding, and its length counts the tokens up to and
including its ``eos``. A sequence still running after ``max_len`` tokens is returned as it is
(length max_len, no eos).

Length normalisation (beam searches): hypotheses are ranked by score / lp(length) with the GNMT
length penalty (Wu et al. 2016) lp(n) = ((5 + n) / 6) ** alpha, alpha = ``length_penalty``;
alpha = 0 ranks by the plain score (lp = 1), larger alpha favours longer hypotheses.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["reorder_state", "reorder_along", "gnmt_length_penalty", "greedy_decode",
           "beam_search", "diverse_beam_search", "Beams", "distinct_ngrams",
           "sequence_lengths"]


def reorder_state(state, index):
    """Default reorder: index_select dim 0 of every tensor in a nested tuple/list/dict state."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # namedtuple
        return type(state)(*(reorder_state(s, index) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_state(s, index) for s in state)
    if isinstance(state, dict):
        return {k: reorder_state(v, index) for k, v in state.items()}
    return state  # None, ints, strings: shared by every row


def reorder_along(dim):
    """A reorder callable that index_selects dimension ``dim`` of every tensor in the state."""
    def reorder(state, index):
        if isinstance(state, torch.Tensor):
            return state.index_select(dim, index.to(state.device))
        if isinstance(state, tuple) and hasattr(state, "_fields"):
            return type(state)(*(reorder(s, index) for s in state))
        if isinstance(state, (tuple, list)):
            return type(state)(reorder(s, index) for s in state)
        if isinstance(state, dict):
            return {k: reorder(v, index) for k, v in state.items()}
        return state
    return reorder


def gnmt_length_penalty(length, alpha):
    """GNMT length penalty ((5 + length) / 6) ** alpha (1 when alpha = 0)."""
    return ((5.0 + length) / 6.0) ** alpha


def _first_tensor(state):
    if isinstance(state, torch.Tensor):
        return state
    if isinstance(state, dict):
        state = list(state.values())
    for s in state if isinstance(state, (tuple, list)) else ():
        t = _first_tensor(s)
        if t is not None:
            return t
    return None


def _start(state, bos):
    """The (B,) start tokens and the batch size from bos (int or (B,) tensor) and the state."""
    if isinstance(bos, torch.Tensor):
        if bos.dim() != 1:
            raise ValueError(f"bos: expected an int or a tensor of shape (B,), got {tuple(bos.shape)}")
        return bos.long(), bos.shape[0]
    t = _first_tensor(state)
    if t is None:
        raise ValueError("bos: pass a (B,) tensor of start tokens when the state holds no tensor "
                         "(the batch size B cannot be read from the state)")
    return torch.full((t.shape[0],), int(bos), dtype=torch.long, device=t.device), t.shape[0]


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _call_step(step, state, tokens, rows, V, what):
    out = step(state, tokens)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"step must return (log_probs, new_state), got {type(out).__name__}")
    log_probs, new_state = out
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 2 or log_probs.shape[0] != rows \
            or (V is not None and log_probs.shape[1] != V):
        got = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        want = f"({rows}, {V if V is not None else 'V'})"
        raise ValueError(f"step returned log_probs of shape {got}, expected {what} = {want}")
    return log_probs, new_state


def greedy_decode(step, state, bos, eos, max_len):
    """Take the most probable token at every step.

    Returns (tokens (B, L), scores (B,)): L <= max_len (decoding stops once every row has emitted
    eos), positions after a row's eos hold eos, scores are the summed log-probs up to and
    including eos. Use ``sequence_lengths(tokens, eos)`` for the lengths.
    """
    _check_positive("max_len", max_len)
    tokens, B = _start(state, bos)
    scores = None
    finished = torch.zeros(B, dtype=torch.bool, device=tokens.device)
    out, V = [], None
    for _ in range(max_len):
        log_probs, state = _call_step(step, state, tokens, B, V, "(B, V)")
        V = log_probs.shape[1]
        lp, tok = log_probs.max(dim=1)
        if scores is None:
            scores = torch.zeros(B, dtype=log_probs.dtype, device=log_probs.device)
        tok = torch.where(finished, torch.full_like(tok, eos), tok)
        scores = scores + torch.where(finished, torch.zeros_like(lp), lp)
        finished = finished | (tok == eos)
        out.append(tok)
        tokens = tok
        if finished.all():
            break
    return torch.stack(out, dim=1), scores


def sequence_lengths(tokens, eos):
    """Lengths of (..., L) decoded tokens: up to and including the first eos, else L."""
    L = tokens.shape[-1]
    is_eos = tokens == eos
    first = is_eos.int().argmax(-1) + 1
    return torch.where(is_eos.any(-1), first, torch.full_like(first, L)).long()


class Beams(NamedTuple):
    """Result of a beam search, hypotheses sorted best first by normalised score.

    tokens (B, K, L) (after eos: eos), scores (B, K) normalised score = log_prob / lp(length),
    log_probs (B, K) summed log-probabilities, lengths (B, K) (eos included)."""
    tokens: torch.Tensor
    scores: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor


def beam_search(step, state, bos, eos, beam_size, max_len, length_penalty=0.0, reorder=None):
    """Beam search over a batch: keep the beam_size best hypotheses of every batch element.

    At each step every running hypothesis is extended by every token, finished ones (eos) are
    kept unchanged, and the beam_size best candidates by normalised score survive. Returns
    ``Beams`` (see its docstring); ``beam_size=1`` is greedy decoding.
    """
    _check_positive("beam_size", beam_size)
    return _beam_core(step, state, bos, eos, beam_size, 1, 0.0, max_len, length_penalty, reorder)


def diverse_beam_search(step, state, bos, eos, beam_size, groups, diversity_strength, max_len,
                        length_penalty=0.0, reorder=None):
    """Diverse beam search (Vijayakumar et al. 2016) with the Hamming diversity penalty.

    The beam_size beams are split into ``groups`` groups of beam_size / groups beams. At each step
    the groups are extended in turn; group g chooses its candidates by
    score + log p(token) - diversity_strength * (how many beams of groups 0..g-1 chose that token
    at this step, in the same batch element). The returned log_probs are the true summed
    log-probabilities (the penalty only steers the choice). Returns ``Beams`` with all beam_size
    hypotheses sorted by normalised score. groups=1 (or strength 0 with one group) is beam_search.
    """
    _check_positive("beam_size", beam_size)
    _check_positive("groups", groups)
    if beam_size % groups:
        raise ValueError(f"groups must divide beam_size, got beam_size={beam_size}, groups={groups}")
    if float(diversity_strength) < 0:
        raise ValueError(f"diversity_strength must be >= 0, got {diversity_strength!r}")
    return _beam_core(step, state, bos, eos, beam_size, groups, float(diversity_strength), max_len,
                      length_penalty, reorder)


def _beam_core(step, state, bos, eos, K, G, strength, max_len, alpha, reorder):
    _check_positive("max_len", max_len)
    reorder = reorder_state if reorder is None else reorder
    start, B = _start(state, bos)
    dev = start.device
    W = K // G  # beams per group
    state = reorder(state, torch.arange(B, device=dev).repeat_interleave(K))
    tokens = start.repeat_interleave(K)                      # (B*K,)
    # one live beam per group at the start; the others -inf so that they are not picked twice
    cum = torch.full((B, G, W), float("-inf"), device=dev, dtype=torch.float64)
    cum[:, :, 0] = 0.0
    lengths = torch.zeros(B, G, W, dtype=torch.long, device=dev)
    finished = torch.zeros(B, G, W, dtype=torch.bool, device=dev)
    history = torch.empty(B, G, W, 0, dtype=torch.long, device=dev)
    V, dtype = None, None
    for _ in range(max_len):
        log_probs, new_state = _call_step(step, state, tokens, B * K, V, "(B*beams, V)")
        V, dtype = log_probs.shape[1], log_probs.dtype
        lp = log_probs.detach().to(torch.float64).view(B, G, W, V)
        # a finished hypothesis has one continuation, eos, at no cost
        keep = torch.full_like(lp, float("-inf"))
        keep[..., eos] = 0.0
        lp = torch.where(finished[..., None], keep, lp)
        new_len = lengths + (~finished).long()               # (B, G, W)
        total = cum[..., None] + lp                          # (B, G, W, V) true log-probs
        norm = total / gnmt_length_penalty(new_len.to(torch.float64), alpha)[..., None]
        counts = torch.zeros(B, V, device=dev, dtype=torch.float64)
        src_all, tok_all = [], []
        for g in range(G):
            sel = norm[:, g] - strength * counts[:, None, :] if strength and g else norm[:, g]
            _, order = torch.sort(sel.reshape(B, W * V), dim=1, descending=True, stable=True)
            idx = order[:, :W]                                # (B, W)
            src, tok = idx // V, idx % V
            src_all.append(src)
            tok_all.append(tok)
            live = ~finished[:, g].gather(1, src)
            counts.scatter_add_(1, tok, live.to(counts.dtype))
        src = torch.stack(src_all, 1)                         # (B, G, W) beam within the group
        tok = torch.stack(tok_all, 1)
        cum = total.reshape(B, G, W * V).gather(2, src * V + tok)
        lengths = new_len.gather(2, src)
        was_finished = finished.gather(2, src)
        finished = was_finished | (tok == eos)
        history = torch.cat([history.gather(2, src[..., None].expand(-1, -1, -1, history.shape[3])),
                             tok[..., None]], dim=3)
        rows = (torch.arange(B, device=dev)[:, None, None] * K
                + torch.arange(G, device=dev)[None, :, None] * W + src).reshape(-1)
        state = reorder(new_state, rows)
        tokens = tok.reshape(-1)
        if finished.all():
            break
    cum, lengths, history = cum.view(B, K), lengths.view(B, K), history.view(B, K, -1)
    norm = cum / gnmt_length_penalty(lengths.to(torch.float64), alpha)
    norm, order = torch.sort(norm, dim=1, descending=True, stable=True)
    return Beams(tokens=history.gather(1, order[..., None].expand_as(history)),
                 scores=norm.to(dtype), log_probs=cum.gather(1, order).to(dtype),
                 lengths=lengths.gather(1, order))


def distinct_ngrams(sequences, n=2):
    """Diversity of a set of token sequences: distinct n-grams / all n-grams (Li et al. 2016).

    sequences: an iterable of lists (or 1-D tensors) of tokens, e.g. the hypotheses of one beam."""
    grams = []
    for s in sequences:
        s = s.tolist() if isinstance(s, torch.Tensor) else list(s)
        grams += [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
    return len(set(grams)) / max(len(grams), 1)
