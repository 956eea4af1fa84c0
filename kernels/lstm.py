"""A fused LSTM recurrence in Triton: W_hh on chip, gates and state update fused into each step.

Shape letters (``book/notation.md``):
    T  sequence length                  B  batch size
    N  hidden (state) size              BLOCK_B, BLOCK_N, BLOCK_K  tile sizes (powers of two, >= 16)

Tensors (gates stacked in PyTorch's order i, f, g, o, each N wide):
    xw     (T, B, 4N)  input projections, ``x_t @ W_ih^T + b_ih + b_hh``
    h0, c0 (B, N)      initial hidden and cell state
    w_hh   (4N, N)     recurrent weights, PyTorch layout
    hs, cs (T, B, N)   hidden and cell states;  gates (T, B, 4N) the activated i, f, g, o
    lengths (B,)       optional: sequence b's state is frozen after its step lengths[b] - 1

Public API: ``lstm_recurrence_triton(xw, (h0, c0), w_hh, lengths=None, precision="ieee")
-> (hs, (h_T, c_T))``, the contract of ``seqlib.gated.lstm_recurrence``, differentiable with
respect to xw, h0, c0 and w_hh. ``lstm_forward``/``lstm_backward`` launch the kernels alone
(``out=`` buffers, so tests can pre-fill them with NaN; ``on_chip=`` to force either path).

The kernel (FlashRNN, Pöppel et al. 2024, as ``kernels/rnn.py`` does for the Elman RNN). One
program owns BLOCK_B = 16 batch rows for all T steps. It loads W_hh once as four (N, N) gate
blocks, each zero-padded to BLOCK_N x BLOCK_N, and per step does four ``tl.dot``s
(BLOCK_B x BLOCK_N) @ (BLOCK_N x BLOCK_N), the sigmoids and tanhs, and the cell update
``c = f c + i g, h = o tanh(c)`` without leaving the chip; h and c stay in registers. Per step it
reads xw_t and writes h_t (plus c_t and the gates, which backward needs). ``lengths`` is a
per-row mask in the kernel: at t >= lengths[b] the row keeps its h and c, so hs[t] repeats the
last real state, exactly as the reference, and (h_T, c_T) are the states at the last real step.

Too big for the chip at N = 128. Four 128 x 128 fp32 blocks are 256 KiB: more than an SM's
shared memory (A100 164 KiB, H100 228 KiB) and all of its registers. FlashRNN then splits W_hh
over several SMs that swap h_t through a grid-wide barrier at every step; Triton has no such
barrier (and its interpreter runs programs one after another, so one would deadlock). Here,
above ``W_ON_CHIP_BYTES`` (128 KiB, so for BLOCK_N > 64), the kernel streams each gate block in
(BLOCK_K = 16) x BLOCK_N chunks at every step and reads h_{t-1} back from hs (it just wrote it;
a barrier makes it visible to all the program's threads). The chunks come from L2, not HBM:
W_hh is read from HBM once and stays in the 40 MB (A100) or 50 MB (H100) L2, so HBM traffic is
that of the fused step; what it costs is 4 N^2 * 4 bytes of L2 reads per program per step.

Backward. The forward saves the activated gates (T, B, 4N) and cs, as cuDNN saves its "reserve
space", rather than recomputing the gates from h_{t-1}: recomputing would need W_hh^T *and* W_hh
on chip (twice the 64 KiB at N = 64) and four more dots per step. The backward kernel runs the
loop in reverse with W_hh per gate on chip (or streamed): from dh, dc reaching step t it writes
dxw_t = d(i, f, g, o) pre-activation, carries dh = dxw_t @ W_hh and dc = dc f to step t - 1
(unchanged through frozen steps), and ends with dh0, dc0. ``dW_hh = sum_t dxw_t^T h_{t-1}`` is
one (T B, 4N)^T @ (T B, N) GEMM after the kernel, not on the sequential chain, as in rnn.py.

Cost per step, against cuDNN. cuDNN (and a PyTorch loop) runs every step as a GEMM that reads
all of W_hh, 4 N^2 * 4 bytes, from HBM, plus h_{t-1} and c_{t-1}; the fused step reads xw_t and
writes h_t only. ``seqlib.perf.step_cost(B, N, gates=4, fused)`` counts both (a lower bound for
cuDNN: it leaves out the 4BN pre-activations between its GEMM and its pointwise kernel):

    B = 64      FLOPs/step   HBM bytes fused / cuDNN   FLOP/byte fused / cuDNN
    N = 64      2.2 M        80 KiB / 192 KiB          26 / 11
    N = 128     8.5 M        160 KiB / 512 KiB         52 / 16     (W_hh alone: 256 KiB)

Fused, the intensity is about 2N/5 FLOP/byte whatever the batch; cuDNN's grows with B (W_hh is
shared by the rows) from 6.5 at B = 16 to 26 at B = 256 (N = 128). Rooflines (ridge points):
A100 2.0 TB/s, 19.5 TFLOP/s fp32 (ridge 9.8), 156 TFLOP/s tf32 (78); H100 SXM 3.35 TB/s,
67 TFLOP/s fp32 (20), 495 TFLOP/s tf32 (148). The fused step is above the A100's fp32 ridge
for N >= 32 at any batch; cuDNN's is below it for small batches (6.5 at B = 16, N = 128), so
reading W_hh bounds it. On an H100 in tf32 the fused step's floor is 0.05 us against 0.16 us
for cuDNN (B = 64, N = 128), and the gap widens as the batch shrinks. Neither floor is what a step
costs: only ceil(B / 16) programs run (4 of an A100's 108 SMs at B = 64) and each step waits for
the last, so the time is T times the latency of one dependent step (four small dots, the
nonlinearities, a global load and store), microseconds rather than the tenths the roofline
allows. Saving W_hh's 256 KiB per step matters most where cuDNN is memory-bound: small batches.

Precision. ``precision="ieee"`` (default) asks ``tl.dot`` for true fp32 (FMA instructions, no
tensor cores), matching the reference on a GPU; ``"tf32"`` uses tensor cores (HMMA) at about
1e-3 relative error. The interpreter is exact either way. ``python -m seqlib.aot`` prints the
registers, shared memory and spills of every config (see ``launch_options`` in ``_common``).
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

__all__ = ["lstm_recurrence_triton", "LSTMRecurrence", "lstm_forward", "lstm_backward",
           "weights_on_chip", "AOT_CONFIGS", "SPILL_OK"]

GATES = 4


def lstm_recurrence_triton(xw, state, w_hh, lengths=None, precision="ieee"):
    """The LSTM recurrence of ``seqlib.gated.lstm_recurrence``, by the fused kernels.

    xw: (T, B, 4N) float32, input projections with both biases added, gates in PyTorch's order
    i, f, g, o; state: (h0, c0), each (B, N); w_hh: (4N, N); lengths: None or (B,) integers in
    0..T (CPU or xw's device): sequence b's state stops changing after its step lengths[b] - 1.
    Returns (hs (T, B, N), (h_T, c_T)), differentiable with respect to xw, h0, c0 and w_hh.
    ``precision``: "ieee" (exact fp32 dots) or "tf32" (tensor cores on a GPU); the interpreter
    is exact either way.
    """
    xw, h0, c0, w_hh, lengths = _check_inputs(xw, state, w_hh, lengths, precision)
    if xw.shape[0] == 0:  # no steps: no outputs, and the state is the initial one
        return xw.new_zeros(0, *h0.shape), (h0, c0)
    hs, h_T, c_T = LSTMRecurrence.apply(xw, h0, c0, w_hh, lengths, precision)
    return hs, (h_T, c_T)


class LSTMRecurrence(torch.autograd.Function):
    """Autograd wrapper: forward and backward kernels, dW_hh as one PyTorch GEMM."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, lengths, precision="ieee"):
        hs, cs, gates, h_T, c_T = lstm_forward(xw, h0, c0, w_hh, lengths, precision)
        ctx.save_for_backward(h0, c0, w_hh, lengths, hs, cs, gates)
        ctx.precision = precision
        return hs, h_T, c_T

    @staticmethod
    def backward(ctx, dhs, dh_T, dc_T):
        h0, c0, w_hh, lengths, hs, cs, gates = ctx.saved_tensors
        dhs = torch.zeros_like(hs) if dhs is None else dhs.contiguous()
        dh_T = torch.zeros_like(h0) if dh_T is None else dh_T.contiguous()
        dc_T = torch.zeros_like(c0) if dc_T is None else dc_T.contiguous()
        dxw, dh0, dc0 = lstm_backward(dhs, dh_T, dc_T, gates, cs, c0, w_hh, lengths, ctx.precision)
        T, B, N = hs.shape
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], dim=0)  # h_{t-1} for t = 0..T-1
        dw_hh = dxw.reshape(T * B, GATES * N).t() @ h_prev.reshape(T * B, N)
        return dxw, dh0, dc0, dw_hh, None, None


def weights_on_chip(N: int) -> bool:
    """Whether launches at hidden size N keep all of W_hh on chip (see ``W_ON_CHIP_BYTES``)."""
    return weights_fit_on_chip(GATES, N)


def lstm_forward(xw, h0, c0, w_hh, lengths=None, precision="ieee", out=None, on_chip=None):
    """Launch the forward kernel on checked, contiguous inputs.

    Returns (hs (T, B, N), cs (T, B, N), gates (T, B, 4N), h_T (B, N), c_T (B, N)): the hidden
    and cell states of every step, the activated gates i, f, g, o (what backward needs), and
    the final states. ``out`` is an optional tuple of those five buffers (for NaN-filled tests);
    ``on_chip`` overrides ``weights_on_chip(N)`` (tests use it to run both paths at small N).
    """
    T, B, GN = xw.shape
    N = GN // GATES
    block_b, block_n = block_sizes(N)
    on_chip = weights_on_chip(N) if on_chip is None else on_chip
    require_interpreter_on_cpu(xw, "lstm_recurrence_triton")
    lengths = lengths_arg(lengths, B, T, xw.device)
    if out is None:
        nan = float("nan")
        out = (xw.new_full((T, B, N), nan), xw.new_full((T, B, N), nan), torch.full_like(xw, nan),
               xw.new_full((B, N), nan), xw.new_full((B, N), nan))
    hs, cs, gates, h_T, c_T = out
    grid = (triton.cdiv(B, block_b),)
    _lstm_fwd_kernel[grid](xw, h0, c0, w_hh, lengths, hs, cs, gates, h_T, c_T, T, B, N,
                           BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=BLOCK_K,
                           W_ON_CHIP=on_chip, DOT_PRECISION=precision,
                           **launch_options(precision, on_chip, GATES, backward=False))
    return out


def lstm_backward(dhs, dh_T, dc_T, gates, cs, c0, w_hh, lengths=None, precision="ieee", out=None,
                  on_chip=None):
    """Launch the backward kernel; returns (dxw (T, B, 4N), dh0 (B, N), dc0 (B, N)).

    dhs, dh_T, dc_T are the upstream gradients of hs, h_T and c_T; gates and cs come from
    ``lstm_forward``. ``out`` (the three result buffers) and ``on_chip`` as for ``lstm_forward``.
    """
    T, B, N = cs.shape
    block_b, block_n = block_sizes(N)
    on_chip = weights_on_chip(N) if on_chip is None else on_chip
    require_interpreter_on_cpu(cs, "lstm_recurrence_triton")
    lengths = lengths_arg(lengths, B, T, cs.device)
    if out is None:
        nan = float("nan")
        out = (torch.full_like(gates, nan), c0.new_full((B, N), nan), c0.new_full((B, N), nan))
    dxw, dh0, dc0 = out
    grid = (triton.cdiv(B, block_b),)
    _lstm_bwd_kernel[grid](dhs, dh_T, dc_T, gates, cs, c0, w_hh, lengths, dxw, dh0, dc0, T, B, N,
                           BLOCK_B=block_b, BLOCK_N=block_n, BLOCK_K=BLOCK_K,
                           W_ON_CHIP=on_chip, DOT_PRECISION=precision,
                           **launch_options(precision, on_chip, GATES, backward=True))
    return out


# --------------------------------------------------------------------------- kernels


@triton.jit
def _lstm_fwd_kernel(xw_ptr, h0_ptr, c0_ptr, w_ptr, len_ptr, hs_ptr, cs_ptr, gates_ptr,
                     hT_ptr, cT_ptr, T, B, N,
                     BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     W_ON_CHIP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One program: rows [pid * BLOCK_B, (pid + 1) * BLOCK_B) of the batch, all T steps."""
    # Offsets within one step's (B, 4N) slab are int32 (the launcher checks B * 4N < 2^31);
    # the step offset t * B * 4N is an int64 scalar. int64 tiles would double their registers.
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]              # into a (B, N) slab
    goffs = rows[:, None] * (4 * N) + cols[None, :]       # gate i's columns of a (B, 4N) slab
    step = tl.cast(B, tl.int64) * N
    length = tl.load(len_ptr + rows, mask=row_ok, other=0)

    if W_ON_CHIP:  # W_hh^T per gate, loaded once; zero padding keeps padded units at exactly 0
        wt_i = _gate_block(w_ptr, 0, N, cols, col_ok, True)
        wt_f = _gate_block(w_ptr, 1, N, cols, col_ok, True)
        wt_g = _gate_block(w_ptr, 2, N, cols, col_ok, True)
        wt_o = _gate_block(w_ptr, 3, N, cols, col_ok, True)
    h = tl.load(h0_ptr + offs, mask=mask, other=0.0)
    c = tl.load(c0_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        if W_ON_CHIP:
            hw_i = tl.dot(h, wt_i, input_precision=DOT_PRECISION)
            hw_f = tl.dot(h, wt_f, input_precision=DOT_PRECISION)
            hw_g = tl.dot(h, wt_g, input_precision=DOT_PRECISION)
            hw_o = tl.dot(h, wt_o, input_precision=DOT_PRECISION)
        else:  # too large to keep: stream W_hh (from L2) in chunks, h_{t-1} from what we stored
            if t == 0:
                h_prev = h0_ptr
            else:
                h_prev = hs_ptr + (t - 1) * step
            hw_i = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 0, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            hw_f = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 1, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            hw_g = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 2, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            hw_o = _dot_w_streamed(h_prev, N, rows, row_ok, w_ptr, 3, N, True,
                                   BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
        x = xw_ptr + t * 4 * step  # gate k of row r at x + k N + goffs
        i = tl.sigmoid(tl.load(x + goffs, mask=mask, other=0.0) + hw_i)
        f = tl.sigmoid(tl.load(x + N + goffs, mask=mask, other=0.0) + hw_f)
        g = _tanh(tl.load(x + 2 * N + goffs, mask=mask, other=0.0) + hw_g)
        o = tl.sigmoid(tl.load(x + 3 * N + goffs, mask=mask, other=0.0) + hw_o)
        live = (t < length)[:, None]          # after its last step a sequence keeps its state
        c = tl.where(live, f * c + i * g, c)
        h = tl.where(live, o * _tanh(c), h)
        tl.store(hs_ptr + t * step + offs, h, mask=mask)
        tl.store(cs_ptr + t * step + offs, c, mask=mask)
        gt = gates_ptr + t * 4 * step  # saved for backward, which then needs no W_hh^T
        tl.store(gt + goffs, i, mask=mask)
        tl.store(gt + N + goffs, f, mask=mask)
        tl.store(gt + 2 * N + goffs, g, mask=mask)
        tl.store(gt + 3 * N + goffs, o, mask=mask)
        if not W_ON_CHIP:
            tl.debug_barrier()  # h_t stored by every thread before any reads it at step t + 1
    tl.store(hT_ptr + offs, h, mask=mask)
    tl.store(cT_ptr + offs, c, mask=mask)


@triton.jit
def _lstm_bwd_kernel(dhs_ptr, dhT_ptr, dcT_ptr, gates_ptr, cs_ptr, c0_ptr, w_ptr, len_ptr,
                     dxw_ptr, dh0_ptr, dc0_ptr, T, B, N,
                     BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     W_ON_CHIP: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Reverse-time loop. With dh, dc the gradients reaching h_t, c_t:
    dc += dh o tanh'(c_t); d(i, f, g, o) = (dc g, dc c_{t-1}, dc i, dh tanh(c_t)) times the
    activations' derivatives = dxw_t; then dh = dxw_t @ W_hh and dc = dc f carry to step t - 1."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    goffs = rows[:, None] * (4 * N) + cols[None, :]
    step = tl.cast(B, tl.int64) * N
    length = tl.load(len_ptr + rows, mask=row_ok, other=0)

    if W_ON_CHIP:  # W_hh itself per gate (not transposed): dh_{t-1} = sum_k dpre_k @ W_k
        w_i = _gate_block(w_ptr, 0, N, cols, col_ok, False)
        w_f = _gate_block(w_ptr, 1, N, cols, col_ok, False)
        w_g = _gate_block(w_ptr, 2, N, cols, col_ok, False)
        w_o = _gate_block(w_ptr, 3, N, cols, col_ok, False)
    dh = tl.load(dhT_ptr + offs, mask=mask, other=0.0)
    dc = tl.load(dcT_ptr + offs, mask=mask, other=0.0)
    for s in range(T):
        t = T - 1 - s
        live = (t < length)[:, None]  # a frozen step passes dh and dc through unchanged
        dh += tl.load(dhs_ptr + t * step + offs, mask=mask, other=0.0)
        gt = gates_ptr + t * 4 * step
        i = tl.load(gt + goffs, mask=mask, other=0.0)
        f = tl.load(gt + N + goffs, mask=mask, other=0.0)
        g = tl.load(gt + 2 * N + goffs, mask=mask, other=0.0)
        o = tl.load(gt + 3 * N + goffs, mask=mask, other=0.0)
        tc = _tanh(tl.load(cs_ptr + t * step + offs, mask=mask, other=0.0))
        if t > 0:
            c_prev = tl.load(cs_ptr + (t - 1) * step + offs, mask=mask, other=0.0)
        else:
            c_prev = tl.load(c0_ptr + offs, mask=mask, other=0.0)
        dct = dc + dh * o * (1.0 - tc * tc)
        d_i = tl.where(live, dct * g * i * (1.0 - i), 0.0)
        d_f = tl.where(live, dct * c_prev * f * (1.0 - f), 0.0)
        d_g = tl.where(live, dct * i * (1.0 - g * g), 0.0)
        d_o = tl.where(live, dh * tc * o * (1.0 - o), 0.0)
        dx = dxw_ptr + t * 4 * step
        tl.store(dx + goffs, d_i, mask=mask)
        tl.store(dx + N + goffs, d_f, mask=mask)
        tl.store(dx + 2 * N + goffs, d_g, mask=mask)
        tl.store(dx + 3 * N + goffs, d_o, mask=mask)
        if W_ON_CHIP:
            dh_prev = tl.dot(d_i, w_i, input_precision=DOT_PRECISION)  # accumulate in place
            dh_prev = tl.dot(d_f, w_f, dh_prev, input_precision=DOT_PRECISION)
            dh_prev = tl.dot(d_g, w_g, dh_prev, input_precision=DOT_PRECISION)
            dh_prev = tl.dot(d_o, w_o, dh_prev, input_precision=DOT_PRECISION)
        else:  # stream W_hh in chunks; the chunks of dxw_t come back from memory
            tl.debug_barrier()  # dxw_t stored by every thread before any reads it back
            dh_prev = _dot_w_streamed(dx, 4 * N, rows, row_ok, w_ptr, 0, N, False,
                                      BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            dh_prev += _dot_w_streamed(dx + N, 4 * N, rows, row_ok, w_ptr, 1, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            dh_prev += _dot_w_streamed(dx + 2 * N, 4 * N, rows, row_ok, w_ptr, 2, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
            dh_prev += _dot_w_streamed(dx + 3 * N, 4 * N, rows, row_ok, w_ptr, 3, N, False,
                                       BLOCK_B, BLOCK_N, BLOCK_K, DOT_PRECISION)
        dh = tl.where(live, dh_prev, dh)
        dc = tl.where(live, dct * f, dc)
    tl.store(dh0_ptr + offs, dh, mask=mask)
    tl.store(dc0_ptr + offs, dc, mask=mask)


# --------------------------------------------------------------------------- input checks


def _check_inputs(xw, state, w_hh, lengths, precision):
    check_precision(precision)
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"state must be a pair (h0, c0) of (B, N) tensors, got {type(state).__name__}")
    h0, c0 = state
    check_float32(xw=xw, h0=h0, c0=c0, w_hh=w_hh)
    if xw.dim() != 3 or xw.shape[-1] % GATES:
        raise ValueError(f"xw must have shape (T, B, 4N), got {tuple(xw.shape)}")
    T, B, GN = xw.shape
    N = GN // GATES
    if B < 1 or N < 1:
        raise ValueError(f"xw must have B >= 1 and N >= 1, got shape {tuple(xw.shape)}")
    check_slab_fits_int32(xw)
    against = f"xw {tuple(xw.shape)}"
    check_shape("h0", h0, (B, N), "(B, N)", against)
    check_shape("c0", c0, (B, N), "(B, N)", against)
    check_shape("w_hh", w_hh, (GN, N), "(4N, N)", against)
    check_same_device(xw, h0=h0, c0=c0, w_hh=w_hh)
    lengths = check_lengths(lengths, B, T, xw.device)
    return xw.contiguous(), h0.contiguous(), c0.contiguous(), w_hh.contiguous(), lengths


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``: the launches ``lstm_forward``/``lstm_backward`` make for
# N = 64 (W_hh on chip) and N = 128 (W_hh re-read per step), with each dot precision.

_POINTERS = {
    "fwd": ["xw_ptr", "h0_ptr", "c0_ptr", "w_ptr", "len_ptr", "hs_ptr", "cs_ptr", "gates_ptr",
            "hT_ptr", "cT_ptr"],
    "bwd": ["dhs_ptr", "dhT_ptr", "dcT_ptr", "gates_ptr", "cs_ptr", "c0_ptr", "w_ptr", "len_ptr",
            "dxw_ptr", "dh0_ptr", "dc0_ptr"],
}


def _aot_config(direction, n, precision):
    return gated_aot_config("lstm", direction, n, precision, _POINTERS[direction], GATES,
                            weights_on_chip(n))


AOT_CONFIGS = [_aot_config(d, n, p) for n in (64, 128) for p in ("ieee", "tf32")
               for d in ("fwd", "bwd")]

# Configs (by "id") allowed to spill, and why.
SPILL_OK = {
    "lstm_fwd N=128 ieee": (
        "W_hh is streamed from L2 at N = 128 and the exact-fp32 dot runs as FMA instructions, "
        "whose operand fragments for four gates leave ptxas about 20 bytes short of registers on "
        "sm_90 (none on sm_80); more warps cap registers at 128 per thread and spill more. The "
        "spill is a few stores per step next to 256 KiB of W_hh read from L2; precision='tf32' "
        "does not spill."),
}
