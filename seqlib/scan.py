"""Linear recurrences as scans: h_t = a_t * h_{t-1} + b_t, computed in parallel over time.

Shapes (book/notation.md):
    B  batch      T  length      D  width (channels)
    a, b : (B, T, D)   real or complex, the same dtype      h0 : (B, D)      h : (B, T, D)

The recurrence is elementwise in D, so each channel is an independent first-order scan. The pairs
(a, b) compose with the associative operator

    (a1, b1) . (a2, b2) = (a1 * a2,  a2 * b1 + b2)         ("first apply 1, then 2")

so h_t is the t-th prefix "product" of the pairs, and any parallel prefix-sum algorithm computes it.

``linear_scan`` uses the chunked algorithm that GPUs use (and that keeps work linear in T):
  1. cut time into chunks of C steps and reduce every chunk, all at once, to the pair
     (product of its a, its end state when started from 0): C steps, each of them parallel over
     B * T/C * D elements;
  2. those pairs form a scan of length T/C whose states are the states entering the chunks:
     solve it by calling the same scan on it (recursively; a short one runs sequentially);
  3. rescan every chunk from its entering state, all chunks at once, writing h.
The work is O(T) (a and b are read twice), the depth about C per level plus the short
sequential end, and no step is a Python loop over all of time. On a CPU each step is one
PyTorch operation, and C is the power of two nearest sqrt(T) (64 at T = 4096): about 2 sqrt(T)
large operations per level, the lengths shrinking T -> T/C -> ... -> a short loop.
``linear_scan_sequential`` is the plain loop, the reference.

Gradients. With g_t = dL/dh_t summed over every path, g_t = dL/dh_t(direct) + a_{t+1} g_{t+1}:
a scan run backwards in time with the coefficients shifted by one. Then
    dL/db_t = g_t,     dL/da_t = g_t * h_{t-1},     dL/dh0 = a_0 * g_0
(for complex tensors, PyTorch's convention conjugates: a -> conj(a), h -> conj(h)).
So the backward pass is itself one reverse linear scan (``LinearScan.backward``).

Log space. When every a_t > 0 and b_t > 0 (and h0 >= 0), so is every h_t, and the recurrence can
run on logarithms (Heinsen's form, used by minGRU and minLSTM). With a*_t = sum_{s<=t} log a_s,

    h_t = exp(a*_t) * (h0 + sum_{s<=t} b_s exp(-a*_s))
    log h_t = a*_t + logcumsumexp_t(log b_s - a*_s)          (h0 = 0)

a cumulative sum and a cumulative log-sum-exp, both parallel over time in PyTorch. Products of
many gates below one never underflow, because they stay sums of logarithms (``log_linear_scan``).
"""
from __future__ import annotations

import math

import torch

__all__ = ["linear_scan", "linear_scan_sequential", "combine", "log_linear_scan"]

_MIN_CHUNKED = 32  # below this length the plain loop is as fast as the chunked algorithm


def combine(first, second):
    """The scan's associative operator on pairs (a, b): apply ``first``, then ``second``."""
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


def linear_scan_sequential(a, b, h0=None, reverse=False):
    """The reference: the loop h_t = a_t * h_{t-1} + b_t, one step at a time. Same contract as
    ``linear_scan``."""
    a, b, h0 = _check(a, b, h0)
    if reverse:
        return linear_scan_sequential(a.flip(1), b.flip(1), h0).flip(1)
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    hs = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):  # split once; indexing per step is quadratic
        h = a_t * h + b_t
        hs.append(h)
    return torch.stack(hs, 1) if hs else b.clone()


def linear_scan(a, b, h0=None, reverse=False, backend="auto"):
    """All states of h_t = a_t * h_{t-1} + b_t (t = 0..T-1, h_{-1} = h0 or 0), in parallel.

    a, b: (B, T, D), real or complex, the same dtype and device; h0: (B, D) or None.
    reverse=True runs the recurrence from t = T-1 down to 0 (h_t = a_t * h_{t+1} + b_t).
    backend: "torch" (the chunked scan here), "triton" (``seqlib.kernels.scan``; the interpreter on a
    CPU), or "auto" (Triton for CUDA tensors, torch otherwise). Differentiable in a, b and h0.
    Returns h: (B, T, D).
    """
    a, b, h0 = _check(a, b, h0)
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be one of ('auto', 'torch', 'triton'), got {backend!r}")
    if backend == "triton" or (backend == "auto" and a.is_cuda):
        from seqlib.kernels.scan import linear_scan_triton
        return linear_scan_triton(a, b, h0, reverse=reverse)
    return LinearScan.apply(a, b, h0, reverse)


class LinearScan(torch.autograd.Function):
    """Forward: the chunked scan. Backward: one chunked scan the other way (module docstring)."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse):
        h = _scan(a, b, h0, reverse)
        ctx.reverse = reverse
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        return (*_scan_backward(a, h, h0, dh, ctx.reverse, ctx.needs_input_grad[0]), None)


def _scan_backward(a, h, h0, dh, reverse, need_da=True):
    """(da, db, dh0) of the scan. Forward in time, g_t = dh_t + conj(a_{t+1}) g_{t+1} is a reverse
    scan whose coefficients are a shifted by one step: read as the view a[:, 1:], not a copy."""
    T = a.shape[1]
    if T == 0:
        return torch.zeros_like(a), torch.zeros_like(a), None if h0 is None else torch.zeros_like(h0)
    ac = a.conj()
    g = torch.empty_like(h)                                    # g = dL/db
    last, rest, shift = (0, slice(1, T), slice(0, T - 1)) if reverse else \
        (T - 1, slice(0, T - 1), slice(1, T))
    g[:, last] = dh[:, last]                                   # the step no later step reads
    _scan(ac[:, shift], dh[:, rest], g[:, last], not reverse, out=g[:, rest])
    edge = T - 1 if reverse else 0                             # the step that reads h0
    da = None
    if need_da:                                                # da_t = g_t conj(h_{t-1})
        da = torch.empty_like(a)
        torch.mul(g[:, shift], h[:, rest].conj(), out=da[:, shift])
        if h0 is None:
            da[:, edge].zero_()
        else:
            torch.mul(g[:, edge], h0.conj(), out=da[:, edge])
    dh0 = None if h0 is None else ac[:, edge] * g[:, edge]
    return da, g, dh0


def _chunk_length(T):
    """C, the chunk length, or None for the plain loop: the power of two nearest sqrt(T), at
    least 8. Each level costs about 2C PyTorch operations over T/C chunks and hands a scan of
    length T/C to the next, so C ~ sqrt(T) balances the two. On a CPU the wider chunk also
    pays: a step of phase 1 or 3 reads one row of D values in each of B * T/C chunks, and fewer
    rows per operation (fewer pages) make those strided reads cheaper (measured against C = 16:
    5-15% faster on one thread, equal on two)."""
    if T <= _MIN_CHUNKED:
        return None
    return 1 << max(3, round(math.log2(T) / 2))


@torch.no_grad()
def _scan(a, b, h0=None, reverse=False, out=None):
    """The chunked scan without autograd (LinearScan supplies the gradient), written into ``out``.

    a, b: (B, T, D), any strides (views of a shifted or expanded tensor are fine); h0: (B, D) or
    None; out: (B, T, D) or None (a new tensor). Three phases, none of them a loop over all of T:
      1. reduce every chunk to a pair (product of its a, its end state when it starts from 0),
         a loop over the C steps of a chunk, all chunks at once;
      2. the states entering the chunks: the same scan on those pairs (recursively);
      3. rescan every chunk from its entering state, writing the states straight into ``out``.
    """
    B, T, D = b.shape
    out = torch.empty(B, T, D, dtype=b.dtype, device=b.device) if out is None else out
    C = _chunk_length(T)
    if C is None:
        return _scan_loop(a, b, h0, reverse, out)
    n, r = divmod(T, C)                       # n chunks; r leftover steps, scanned at the end
    main = slice(r, T) if reverse else slice(0, n * C)
    av, bv, ov = (x[:, main].unflatten(1, (n, C)) for x in (a, b, out))   # (B, n, C, D) views
    # 1. chunk pairs, for every chunk whose end state another chunk reads
    reads, edge = (slice(1, n), n - 1) if reverse else (slice(0, n - 1), 0)
    ends = slice(0, n - 1) if reverse else slice(1, n)         # the chunks that receive them
    prod_a, end = _reduce_chunks(av[:, reads], bv[:, reads], reverse)
    # 2. the state entering each chunk
    h_in = b.new_empty(B, n, D)
    if h0 is None:
        h_in[:, edge].zero_()
    else:
        h_in[:, edge].copy_(h0)
    if n > 1:
        _scan(prod_a, end, h0, reverse, out=h_in[:, ends])
    # 3. rescan each chunk from its entering state
    _rescan_chunks(av, bv, h_in, ov, reverse)
    if r:  # the leftover steps continue from the last state of the chunked part
        tail = slice(0, r) if reverse else slice(n * C, T)
        _scan_loop(a[:, tail], b[:, tail], ov[:, 0, 0] if reverse else ov[:, -1, -1], reverse,
                   out[:, tail])
    return out


def _in_time_order(length, reverse):
    """The step indices 0..length-1 in the order the recurrence visits them."""
    return range(length - 1, -1, -1) if reverse else range(length)


def _reduce_chunks(av, bv, reverse=False):
    """Phase 1, one pass over a and b: every chunk of ``av``, ``bv`` (B, n, C, D), C >= 2, reduced
    to its pair (product of its a, its end state when started from 0), each (B, n, D). The loop
    runs over the C steps of a chunk; each step is one operation on all n chunks."""
    steps = _in_time_order(av.shape[2], reverse)
    prod_a = av.prod(2)
    a_st, b_st = av.unbind(2), bv.unbind(2)   # the C step views in one call each: cheaper
    end = torch.addcmul(b_st[steps[1]], a_st[steps[1]], b_st[steps[0]])
    for t in steps[2:]:
        torch.addcmul(b_st[t], a_st[t], end, out=end)
    return prod_a, end


def _rescan_chunks(av, bv, h_in, ov, reverse=False):
    """Phase 3, a second pass over a and b: every chunk rescanned from its entering state
    ``h_in`` (B, n, D), all chunks at once, the states written into ``ov`` (B, n, C, D)."""
    prev = h_in
    a_st, b_st, o_st = av.unbind(2), bv.unbind(2), ov.unbind(2)
    for t in _in_time_order(av.shape[2], reverse):
        torch.addcmul(b_st[t], a_st[t], prev, out=o_st[t])
        prev = o_st[t]
    return ov


def _scan_loop(a, b, h0, reverse, out):
    """The sequential scan into ``out``, vectorised over B and D, without autograd."""
    h = h0
    a_st, b_st, o_st = a.unbind(1), b.unbind(1), out.unbind(1)
    for t in _in_time_order(b.shape[1], reverse):
        if h is None:
            o_st[t].copy_(b_st[t])
        else:
            torch.addcmul(b_st[t], a_st[t], h, out=o_st[t])
        h = o_st[t]
    return out


def _check(a, b, h0):
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor (B, T, D), got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name}: expected shape (B, T, D), got {tuple(t.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"a and b: expected the same shape (B, T, D), got a {tuple(a.shape)} "
                         f"and b {tuple(b.shape)}")
    if a.dtype != b.dtype or a.device != b.device:
        raise TypeError(f"a and b: expected the same dtype and device, got {a.dtype}/{a.device} "
                        f"and {b.dtype}/{b.device}")
    if not (a.is_floating_point() or a.is_complex()):
        raise TypeError(f"a: expected a real or complex floating-point dtype, got {a.dtype}")
    if h0 is not None:
        want = (a.shape[0], a.shape[2])
        if not isinstance(h0, torch.Tensor) or tuple(h0.shape) != want:
            got = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
            raise ValueError(f"h0: expected shape (B, D) = {want}, got {got}")
        if h0.dtype != a.dtype or h0.device != a.device:
            raise TypeError(f"h0: expected dtype/device {a.dtype}/{a.device}, got {h0.dtype}/{h0.device}")
    return a, b, h0


def log_linear_scan(log_a, log_b, log_h0=None):
    """log h for the positive recurrence h_t = a_t * h_{t-1} + b_t, from log a and log b.

    log_a, log_b: (B, T, D) real, the same dtype and device; log_h0: (B, D) or None (h0 = 0;
    -inf entries mean h0 = 0 there too). Returns log h: (B, T, D). Differentiable (plain PyTorch
    operations: ``cumsum`` and ``logcumsumexp``, each parallel over time).

    Precision: log h_t is a difference of two numbers of size |a*_t| = |sum of log a| (see the
    module docstring), so its absolute error is about eps * |a*_t|: for float32, about 1e-4 after
    a thousand steps of gates near one half. Compute in float64 when that matters.
    """
    log_a, log_b, log_h0 = _check(log_a, log_b, log_h0)
    if log_a.is_complex():
        raise TypeError(f"log_a: expected a real floating-point dtype, got {log_a.dtype}")
    a_star = torch.cumsum(log_a, 1)                                   # log of prod_{s<=t} a_s
    log_h = a_star + torch.logcumsumexp(log_b - a_star, 1)
    if log_h0 is not None:  # h0 contributes exp(a*_t) * h0
        log_h = torch.logaddexp(log_h, a_star + log_h0.unsqueeze(1))
    return log_h
