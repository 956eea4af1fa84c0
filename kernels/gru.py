"""A fused GRU recurrence in Triton: W_hh on chip, gates and state update fused into each step.

Shape letters (``book/notation.md``):
    T  sequence length                  B  batch size
    N  hidden (state) size              BLOCK_B, BLOCK_N, BLOCK_K  tile sizes (powers of two, >= 16)

Tensors (gates stacked in PyTorch's order r, z, n, each N wide):
    xw     (T, B, 3N)  input projections with b_ih added (b_hh cannot be folded in: r scales
                       the n part of h_{t-1} W_hh^T + b_hh)
    h0     (B, N)      initial state;  w_hh (3N, N), b_hh (3N,): recurrent weights, PyTorch layout
    hs     (T, B, N)   hidden states;  gates (T, B, 4N): r, z, n and hn = h_{t-1} W_hn^T + b_hn
    lengths (B,)       optional: sequence b's state is frozen after its step lengths[b] - 1

Public API: ``gru_recurrence_triton(xw, h0, w_hh, b_hh=None, lengths=None, precision="ieee")
-> (hs, h_T)``, the contract of ``seqlib.gated.gru_recurrence``, differentiable with respect to
xw, h0, w_hh and b_hh. ``gru_forward``/``gru_backward`` launch the kernels alone (``out=``
buffers for NaN-filled tests; ``on_chip=`` to force either path).

The kernel is the LSTM's (``kernels/lstm.py``, whose docstring explains the design) with three
gate blocks: one program per BLOCK_B = 16 batch rows for all T steps, W_hh loaded once as three
(N, N) blocks padded to BLOCK_N, and per step three ``tl.dot``s, the bias, the gates and
``h = (1 - z) n + z h_{t-1}`` fused; ``lengths`` freezes a row's state in the kernel. Three
blocks take 48 KiB at N = 64; at N = 128 (192 KiB, more than an A100's shared memory) they are
streamed from L2 in BLOCK_K x BLOCK_N chunks per step, as for the LSTM.

Backward: save, not recompute. The forward saves r, z, n and hn per step (4N values, one more
than the gates because dr needs hn = h_{t-1} W_hn^T + b_hn, which n alone does not give back).
Recomputing them from h_{t-1} would need W_hh^T and W_hh both on chip and three more dots per
step; saving costs 4N writes per row and step in the forward and as many reads in backward,
which are not on the dependent chain. The reverse loop writes dxw_t = (dr, dz, dn) before the
activations, and dhn_t = dn r, the gradient of hn (the reset gate scales it, so for the n gate
d(h W_hh^T + b_hh) differs from dxw); it carries dh = dh z + [dr, dz, dhn] @ W_hh to step t - 1
(unchanged through frozen steps) and ends with dh0. ``dW_hh = sum_t [dr, dz, dhn]_t^T h_{t-1}``
and ``db_hh = sum_t [dr, dz, dhn]_t`` are a GEMM and a sum after the kernel.

Cost per step, against cuDNN (``seqlib.perf.step_cost(B, N, gates=3, fused)``): cuDNN's per-step
GEMM re-reads W_hh, 3 N^2 * 4 bytes (192 KiB at N = 128), and h_{t-1}; fused, a step reads xw_t
and writes h_t.

    B = 64      FLOPs/step   HBM bytes fused / cuDNN   FLOP/byte fused / cuDNN
    N = 64      1.6 M        64 KiB / 128 KiB          25 / 12
    N = 128     6.4 M        128 KiB / 352 KiB         49 / 18

On the rooflines of the LSTM's docstring (A100: 2.0 TB/s, 19.5 TFLOP/s fp32, 156 tf32; H100 SXM:
3.35 TB/s, 67 fp32, 495 tf32) the fused step is above every fp32 ridge and, in tf32 on an
H100, has a floor of 0.04 us against cuDNN's 0.11 us (B = 64, N = 128). As for the LSTM, the
real time per step is the latency of a chain of dependent operations in only ceil(B / 16)
programs; the GRU's chain is a little shorter (three dots, and n waits on r).

Precision: as in ``kernels/lstm.py``; ``python -m seqlib.aot`` reports the compiled resources.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqlib.kernels._common import (BLOCK_K, _dot_w_streamed, _gate_block, _tanh, block_sizes,
                                    check_float32, check_lengths, check_precision, gated_aot_config,
                                    check_same_device, check_shape, check_slab_fits_int32,
                                    launch_options, lengths_arg, require_interpreter_on_cpu,
                                    weights_fit_on_chip)

__all__ = ["gru_recurrence_triton", "GRURecurrence", "gru_forward", "gru_backward",
           "weights_on_chip", "AOT_CONFIGS", "SPILL_OK"]

GATES = 3


def gru_recurrence_triton(xw, h0, w_hh, b_hh=None, lengths=None, precision="ieee"):
    """The GRU recurrence of ``seqlib.gated.gru_recurrence``, by the fused kernels.

    xw: (T, B, 3N) float32, input projections with b_ih added, gates in PyTorch's order r, z, n;
    h0: (B, N); w_hh: (3N, N); b_hh: (3N,) or None; lengths: None or (B,) integers in 0..T (CPU
    or xw's device): sequence b's state stops changing after its step lengths[b] - 1.
    Returns (hs (T, B, N), h_T (B, N)), differentiable with respect to xw, h0, w_hh and b_hh.
    ``precision``: "ieee" (exact fp32 dots) or "tf32" (tensor cores on a GPU); the interpreter
    is exact either way.
    """
    xw, h0, w_hh, b_hh, lengths = _check_inputs(xw, h0, w_hh, b_hh, lengths, precision)
    if xw.shape[0] == 0:  # no steps: no outputs, and the state is the initial one
        return xw.new_zeros(0, *h0.shape), h0
    bias = b_hh if b_hh is not None else xw.new_zeros(w_hh.shape[0])
    hs, h_T = GRURecurrence.apply(xw, h0, w_hh, bias, lengths, precision)
    return hs, h_T


class GRURecurrence(torch.autograd.Function):
    """Autograd wrapper: forward and backward kernels, dW_hh and db_hh as PyTorch reductions."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh, lengths, precision="ieee"):
        hs, gates, h_T = gru_forward(xw, h0, w_hh, b_hh, lengths, precision)
        ctx.save_for_backward(h0, w_hh, lengths, hs, gates)
        ctx.precision = precision
        return hs, h_T

    @staticmethod
    def backward(ctx, dhs, dh_T):
        h0, w_hh, lengths, hs, gates = ctx.saved_tensors
        dhs = torch.zeros_like(hs) if dhs is None else dhs.contiguous()
        dh_T = torch.zeros_like(h0) if dh_T is None else dh_T.contiguous()
        dxw, dhn, dh0 = gru_backward(dhs, dh_T, gates, hs, h0, w_hh, lengths, ctx.precision)
        T, B, N = hs.shape
        # d(h_{t-1} W_hh^T + b_hh): as dxw for r and z; for n the reset gate scales it (dhn).
        dhw = torch.cat([dxw[..., : 2 * N], dhn], dim=-1).reshape(T * B, GATES * N)
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], dim=0).reshape(T * B, N)
        return dxw, dh0, dhw.t() @ h_prev, dhw.sum(0), None, None


def weights_on_chip(N: int) -> bool:
    """Whether launches at hidden size N keep all of W_hh on chip (see ``W_ON_CHIP_BYTES``)."""
    return weights_fit_on_chip(GATES, N)


def gru_forward(xw, h0, w_hh, b_hh, lengths=None, precision="ieee", out=None, on_chip=None):
    """Launch the forward kernel on checked, contiguous inputs (b_hh a (3N,) tensor, zeros for none).

    Returns (hs (T, B, N), gates (T, B, 4N), h_T (B, N)): the hidden states, what backward needs
    per step (r, z, n and hn = h_{t-1} W_hn^T + b_hn), and the final state. ``out`` is an
    optional tuple of those three buffers (for NaN-filled tests); ``on_chip`` overrides
    ``weights_on_chip(N)`` (tests use it to run both paths at small N).
    """
    T, B, GN = xw.shape
    N = GN // GATES
    block_b, block_n = block_sizes(N)
    on_chip = weights_on_chip(N) if on_chip is None else on_chip
    require_interpreter_on_cpu(xw, "gru_recurrence_triton")
    lengths = lengths_arg(lengths, B, T, xw.device)
    if out is None:
        nan = float("nan")
        out = (xw.new_full((T, B, N), nan), xw.new_full((T, B, 4 * N), nan), xw.new_full((B, N), nan))
    hs, gates, h_T = out
    grid = (triton.cdiv(B, block_b),)
    _gru_fwd_kernel[grid](xw, h0, w_hh, b_hh, lengths, hs, gates, h_T, T, B, N,
                          BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=BLOCK_K, W_ON_CHIP=on_chip,
                          DOT_PRECISION=precision,
                          **launch_options(precision, on_chip, GATES, backward=False))
    return out


def gru_backward(dhs, dh_T, gates, hs, h0, w_hh, lengths=None, precision="ieee", out=None,
                 on_chip=None):
    """Launch the backward kernel; returns (dxw (T, B, 3N), dhn (T, B, N), dh0 (B, N)).

    dhn is the gradient of hn = h_{t-1} W_hn^T + b_hn (dxw's n part times r). ``out`` (the
    three result buffers) and ``on_chip`` as for ``gru_forward``.
    """
    T, B, N = hs.shape
    block_b, block_n = block_sizes(N)
    on_chip = weights_on_chip(N) if on_chip is None else on_chip
    require_interpreter_on_cpu(hs, "gru_recurrence_triton")
    lengths = lengths_arg(lengths, B, T, hs.device)
    if out is None:
        nan = float("nan")
        out = (hs.new_full((T, B, 3 * N), nan), hs.new_full((T, B, N), nan), hs.new_full((B, N), nan))
    dxw, dhn, dh0 = out
    grid = (triton.cdiv(B, block_b),)
    _gru_bwd_kernel[grid](dhs, dh_T, gates, hs, h0, w_hh, lengths, dxw, dhn, dh0, T, B, N,
                          BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=BLOCK_K, W_ON_CHIP=on_chip,
                          DOT_PRECISION=precision,
                          **launch_options(precision, on_chip, GATES, backward=True))
    return out


# --------------------------------------------------------------------------- kernels


@triton.jit
def _gru_fwd_kernel(xw_ptr, h0_ptr, w_ptr, b_ptr, len_ptr, hs_ptr, gates_ptr, hT_ptr, T, B, N,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    W_ON_CHIP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program: rows [pid * BLOCK_B, (pid + 1) * BLOCK_B) of the batch, all T steps."""
    # Offsets within one step's (B, 4N) slab are int32 (the launcher checks B * 3N < 2^31, and
    # the gates slab is 4N wide only for N < 2^29 / B); the step offset is an int64 scalar.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]              # into a (B, N) slab
    xoffs = rows[:, None] * (3 * N) + cols[None, :]       # gate r's columns of a (B, 3N) slab
    goffs = rows[:, None] * (4 * N) + cols[None, :]       # the same in the (B, 4N) saved gates
    step = tl.cast(B, tl.int64) * N
    length = tl.load(len_ptr + rows, mask=row_ok, other=0)
    b_r = tl.load(b_ptr + cols, mask=col_ok, other=0.0)[None, :]
    b_z = tl.load(b_ptr + N + cols, mask=col_ok, other=0.0)[None, :]
    b_n = tl.load(b_ptr + 2 * N + cols, mask=col_ok, other=0.0)[None, :]

    if W_ON_CHIP:  # W_hh^T per gate, loaded once; zero padding keeps padded units at exactly 0
        wt_r = _gate_block(w_ptr, 0, N, cols, col_ok, True)
        wt_z = _gate_block(w_ptr, 1, N, cols, col_ok, True)
        wt_n = _gate_block(w_ptr, 2, N, cols, col_ok, True)
    h = tl.load(h0_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        if W_ON_CHIP:
            hw_r = tl.dot(h, wt_r, input_precision=DOT_PRECISION)
            hw_z = tl.dot(h, wt_z, input_precision=DOT_PRECISION)
            hw_n = tl.dot(h, wt_n, input_precision=DOT_PRECISION)
        else:  # too large to keep: stream W_hh (from L2) in chunks, h_{t-1} from what we stored
            if t == 0:
                h_prev = h0_ptr
            else:
                h_prev = hs_ptr + (t - 1) * step
            hw_r = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 0, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            hw_z = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 1, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            hw_n = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 2, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
        x = xw_ptr + t * 3 * step  # gate k of row r at x + k N + xoffs
        r = tl.sigmoid(tl.load(x + xoffs, mask=mask, other=0.0) + hw_r + b_r)
        z = tl.sigmoid(tl.load(x + N + xoffs, mask=mask, other=0.0) + hw_z + b_z)
        hn = hw_n + b_n
        n = _tanh(tl.load(x + 2 * N + xoffs, mask=mask, other=0.0) + r * hn)
        live = (t < length)[:, None]          # after its last step a sequence keeps its state
        h = tl.where(live, (1.0 - z) * n + z * h, h)
        tl.store(hs_ptr + t * step + offs, h, mask=mask)
        gt = gates_ptr + t * 4 * step  # saved for backward, which then needs no W_hh^T
        tl.store(gt + goffs, r, mask=mask)
        tl.store(gt + N + goffs, z, mask=mask)
        tl.store(gt + 2 * N + goffs, n, mask=mask)
        tl.store(gt + 3 * N + goffs, hn, mask=mask)
        if not W_ON_CHIP:
            tl.debug_barrier()  # h_t stored by every thread before any reads it at step t + 1
    tl.store(hT_ptr + offs, h, mask=mask)


@triton.jit
def _gru_bwd_kernel(dhs_ptr, dhT_ptr, gates_ptr, hs_ptr, h0_ptr, w_ptr, len_ptr,
                    dxw_ptr, dhn_ptr, dh0_ptr, T, B, N,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                    W_ON_CHIP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Reverse-time loop. With dh the gradient reaching h_t = (1 - z) n + z h_{t-1}:
    dn_pre = dh (1 - z)(1 - n^2), dz_pre = dh (h_{t-1} - n) z (1 - z), dr_pre = dn_pre hn r (1 - r)
    (= dxw_t), dhn = dn_pre r; then dh = dh z + [dr_pre, dz_pre, dhn] @ W_hh carries to t - 1."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    xoffs = rows[:, None] * (3 * N) + cols[None, :]
    goffs = rows[:, None] * (4 * N) + cols[None, :]
    step = tl.cast(B, tl.int64) * N
    length = tl.load(len_ptr + rows, mask=row_ok, other=0)

    if W_ON_CHIP:  # W_hh itself per gate (not transposed)
        w_r = _gate_block(w_ptr, 0, N, cols, col_ok, False)
        w_z = _gate_block(w_ptr, 1, N, cols, col_ok, False)
        w_n = _gate_block(w_ptr, 2, N, cols, col_ok, False)
    dh = tl.load(dhT_ptr + offs, mask=mask, other=0.0)
    for s in range(T):
        t = T - 1 - s
        live = (t < length)[:, None]  # a frozen step passes dh through unchanged
        dh += tl.load(dhs_ptr + t * step + offs, mask=mask, other=0.0)
        gt = gates_ptr + t * 4 * step
        r = tl.load(gt + goffs, mask=mask, other=0.0)
        z = tl.load(gt + N + goffs, mask=mask, other=0.0)
        n = tl.load(gt + 2 * N + goffs, mask=mask, other=0.0)
        hn = tl.load(gt + 3 * N + goffs, mask=mask, other=0.0)
        if t > 0:
            h_prev = tl.load(hs_ptr + (t - 1) * step + offs, mask=mask, other=0.0)
        else:
            h_prev = tl.load(h0_ptr + offs, mask=mask, other=0.0)
        d_n = tl.where(live, dh * (1.0 - z) * (1.0 - n * n), 0.0)
        d_z = tl.where(live, dh * (h_prev - n) * z * (1.0 - z), 0.0)
        d_r = d_n * hn * r * (1.0 - r)
        d_hn = d_n * r
        dx = dxw_ptr + t * 3 * step
        tl.store(dx + xoffs, d_r, mask=mask)
        tl.store(dx + N + xoffs, d_z, mask=mask)
        tl.store(dx + 2 * N + xoffs, d_n, mask=mask)
        tl.store(dhn_ptr + t * step + offs, d_hn, mask=mask)
        if W_ON_CHIP:
            dh_prev = tl.dot(d_r, w_r, dh * z, input_precision=DOT_PRECISION)  # accumulate in place
            dh_prev = tl.dot(d_z, w_z, dh_prev, input_precision=DOT_PRECISION)
            dh_prev = tl.dot(d_hn, w_n, dh_prev, input_precision=DOT_PRECISION)
        else:  # stream W_hh in chunks; the chunks of dxw_t and dhn_t come back from memory
            tl.debug_barrier()  # dxw_t, dhn_t stored by every thread before any reads them back
            dh_prev = dh * z
            dh_prev += _dot_w_streamed(dx, 3 * N, rows, row_ok, w_ptr, 0, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            dh_prev += _dot_w_streamed(dx + N, 3 * N, rows, row_ok, w_ptr, 1, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            dh_prev += _dot_w_streamed(dhn_ptr + t * step, N, rows, row_ok, w_ptr, 2, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
        dh = tl.where(live, dh_prev, dh)
    tl.store(dh0_ptr + offs, dh, mask=mask)


# --------------------------------------------------------------------------- input checks


def _check_inputs(xw, h0, w_hh, b_hh, lengths, precision):
    check_precision(precision)
    check_float32(xw=xw, h0=h0, w_hh=w_hh, **({} if b_hh is None else {"b_hh": b_hh}))
    if xw.dim() != 3 or xw.shape[-1] % GATES:
        raise ValueError(f"xw must have shape (T, B, 3N), got {tuple(xw.shape)}")
    T, B, GN = xw.shape
    N = GN // GATES
    if B < 1 or N < 1:
        raise ValueError(f"xw must have B >= 1 and N >= 1, got shape {tuple(xw.shape)}")
    check_slab_fits_int32(xw[..., :1].expand(T, B, 4 * N))  # the saved gates are 4N wide
    against = f"xw {tuple(xw.shape)}"
    check_shape("h0", h0, (B, N), "(B, N)", against)
    check_shape("w_hh", w_hh, (GN, N), "(3N, N)", against)
    if b_hh is not None:
        check_shape("b_hh", b_hh, (GN,), "(3N,)", against)
    check_same_device(xw, h0=h0, w_hh=w_hh, **({} if b_hh is None else {"b_hh": b_hh}))
    lengths = check_lengths(lengths, B, T, xw.device)
    b_hh = None if b_hh is None else b_hh.contiguous()
    return xw.contiguous(), h0.contiguous(), w_hh.contiguous(), b_hh, lengths


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``: the launches ``gru_forward``/``gru_backward`` make for
# N = 64 (W_hh on chip) and N = 128 (W_hh streamed per step), with each dot precision.

_POINTERS = {
    "fwd": ["xw_ptr", "h0_ptr", "w_ptr", "b_ptr", "len_ptr", "hs_ptr", "gates_ptr", "hT_ptr"],
    "bwd": ["dhs_ptr", "dhT_ptr", "gates_ptr", "hs_ptr", "h0_ptr", "w_ptr", "len_ptr",
            "dxw_ptr", "dhn_ptr", "dh0_ptr"],
}


def _aot_config(direction, n, precision):
    return gated_aot_config("gru", direction, n, precision, _POINTERS[direction], GATES,
                            weights_on_chip(n))


AOT_CONFIGS = [_aot_config(d, n, p) for n in (64, 128) for p in ("ieee", "tf32")
               for d in ("fwd", "bwd")]

SPILL_OK = {}
