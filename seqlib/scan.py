"""Linear recurrences as scans: h_t = a_t * h_{t-1} + b_t, computed in parallel over time.

Shapes (book/notation.md):
    B  batch      T  length      D  width (channels)
    a, b : (B, T, D)   real or complex, the same dtype      h0 : (B, D)      h : (B, T, D)

The recurrence is elementwise in D, so each channel is an independent first-order scan. The pairs
(a, b) compose with the associative operator

    (a1, b1) . (a2, b2) = (a1 * a2,  a2 * b1 + b2)         ("first apply 1, then 2")

so h_t is the t-th prefix "product" of the pairs, and any parallel prefix-sum algorithm computes it.

``linear_scan`` uses the chunked algorithm that GPUs use (and that keeps work linear in T):
  1. cut time into chunks of C steps and scan inside every chunk at once (C steps, each of them
     parallel over B * T/C * D elements), keeping the running product of a as well;
  2. the chunks' end states form a scan of length T/C with coefficients (prod a, end state):
     solve it by calling linear_scan on it (recursively; a short one runs sequentially);
  3. add each chunk's incoming state times the running product: h = h_local + A_local * h_in.
The depth is about C + T/C steps (C = sqrt(T) at each level), the work O(T), and no step is a
Python loop over all of time. ``linear_scan_sequential`` is the plain loop, the reference.

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

_MIN_CHUNKED = 64  # below this length the plain loop is as fast as the chunked algorithm


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
    if reverse:
        a, b = a.flip(1), b.flip(1)
    if h0 is None:
        h = LinearScan.apply(a, b)
    else:
        h = LinearScan.apply(a, b, h0)
    return h.flip(1) if reverse else h


class LinearScan(torch.autograd.Function):
    """Forward: the chunked scan. Backward: one reverse chunked scan (see the module docstring)."""

    @staticmethod
    def forward(ctx, a, b, h0=None):
        h = _scan(a, b if h0 is None else _fold_h0(a, b, h0))
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        # g_t = dh_t + conj(a_{t+1}) g_{t+1}: a reverse scan with coefficients shifted by one step
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], 1).conj()
        g = _scan(a_next.flip(1), dh.flip(1)).flip(1)
        h_prev = torch.cat([_initial(h, h0).unsqueeze(1), h[:, :-1]], 1)
        da = g * h_prev.conj()
        dh0 = None if h0 is None else a[:, 0].conj() * g[:, 0]
        return da, g, dh0


def _fold_h0(a, b, h0):
    """h0 enters only the first step: b_0 + a_0 h0."""
    return torch.cat([(b[:, :1] + a[:, :1] * h0.unsqueeze(1)), b[:, 1:]], 1)


def _initial(h, h0):
    return torch.zeros_like(h[:, 0]) if h0 is None else h0


@torch.no_grad()
def _scan(a, b):
    """Chunked scan without autograd (LinearScan supplies the gradient)."""
    B, T, D = b.shape
    if T <= _MIN_CHUNKED:
        return _scan_loop(a, b)[0]
    C = 1 << max(2, round(math.log2(math.sqrt(T))))        # chunk length, about sqrt(T)
    n = -(-T // C)                                          # number of chunks
    pad = n * C - T
    if pad:  # identity pairs (a=1, b=0) leave the states of the real steps unchanged
        a = torch.cat([a, a.new_ones(B, pad, D)], 1)
        b = torch.cat([b, b.new_zeros(B, pad, D)], 1)
    h_local, a_local = _scan_loop(a.view(B, n, C, D), b.view(B, n, C, D), axis=2)
    # state entering chunk j: the scan over chunks of (total a of chunk, end state of chunk)
    h_end = _scan(a_local[:, :, -1], h_local[:, :, -1])             # (B, n, D)
    h_in = torch.cat([h_end.new_zeros(B, 1, D), h_end[:, :-1]], 1)  # shift: chunk 0 starts at 0
    h = h_local.addcmul_(a_local, h_in.unsqueeze(2)) if not h_local.is_complex() else \
        h_local + a_local * h_in.unsqueeze(2)
    return h.view(B, n * C, D)[:, :T]


def _scan_loop(a, b, axis=1):
    """Sequential scan along ``axis``, vectorised over every other axis; also returns the running
    product of a (what the chunked algorithm needs to carry states into a chunk)."""
    h, A = torch.empty_like(b), torch.empty_like(a)
    h_t, A_t = None, None
    for t, (a_t, b_t) in enumerate(zip(a.unbind(axis), b.unbind(axis))):
        h_t = b_t if t == 0 else a_t * h_t + b_t
        A_t = a_t if t == 0 else A_t * a_t
        h.select(axis, t).copy_(h_t)
        A.select(axis, t).copy_(A_t)
    return h, A


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
