"""A fused Elman RNN recurrence in Triton: the recurrent weights stay on chip for all T steps.

Shape letters (``book/notation.md``):
    T  sequence length                  B  batch size
    N  hidden (state) size              BLOCK_B, BLOCK_N  tile sizes (powers of two, >= 16)

Tensors:
    xw    (T, B, N)  input projection for every step, ``x_t @ W_ih^T + b_ih + b_hh``
    h0    (B, N)     initial hidden state
    w_hh  (N, N)     recurrent matrix, PyTorch layout (row j holds the weights into unit j)
    hs    (T, B, N)  all hidden states, ``h_t = f(xw_t + h_{t-1} @ W_hh^T)``, f = tanh or relu

Public API: ``rnn_recurrence_triton(xw, h0, w_hh, nonlinearity="tanh", precision="ieee") -> hs``,
differentiable with respect to xw, h0 and w_hh, with the contract of the reference
``seqlib.rnn.rnn_recurrence``. ``rnn_forward``/``rnn_backward`` launch the kernels alone (with an
``out=`` buffer, so that tests can pre-fill it with NaN).

The idea (FlashRNN, Pöppel et al. 2024). The input projection ``x @ W_ih^T`` is one big GEMM over
all T steps and needs no kernel. What is left is T small matrix products in a strict sequence,
``(B, N) @ (N, N)``, each of which reads all of W_hh. Done step by step in PyTorch, every step
launches kernels that reload W_hh from HBM (4 N^2 bytes) to do only 2 B N^2 FLOPs. Here one
program owns BLOCK_B batch rows for the whole sequence: it loads W_hh (zero-padded to
BLOCK_N x BLOCK_N) once, keeps it on chip (the compiled kernel holds it in shared memory, which
``tl.dot`` reads its operands from), and loops over time. Per step it only reads xw_t and writes
h_t from HBM; the hidden state never leaves the chip between steps.

Cost model, in words. Per step and per program: 2 BLOCK_B BLOCK_N^2 FLOPs and 8 BLOCK_B N bytes
of HBM traffic, about BLOCK_N / 4 FLOPs per byte (16 at N = 64, 32 at N = 128). That is above an
A100's ridge for fp32 FMA (19.5 TFLOP/s / 2 TB/s, about 10) and below its ridge for TF32 tensor
cores (about 78), but neither roofline is what limits the kernel: only ceil(B / BLOCK_B)
programs run, one per SM, so a batch of 64 busies 4 of an A100's 108 SMs, and every step waits
for the one before it. Time is about T times the latency of one step (a dependent chain of a
small dot, a tanh and a global load/store). That is the price of a nonlinear recurrence, and the
reason chapter 3 turns to linear recurrences, which can be scanned in parallel over time.
W_hh must fit on chip: 4 BLOCK_N^2 bytes is 16 KiB at N = 64 and 64 KiB at N = 128; well beyond
N = 128 the weights must be split across programs (FlashRNN's multi-block variant), which this
book does not do.

Backward. The backward kernel runs the time loop in reverse with the same on-chip W_hh and
writes dpre_t = dL/d(xw_t) for every step, then dL/dh0. The weight gradient
``dW_hh = sum_t dpre_t^T h_{t-1}`` is *not* in the kernel: it is not on the sequential chain
(nothing at step t - 1 depends on it) but a reduction over T B rows, which one
(T B, N)^T @ (T B, N) GEMM after the kernel does at full speed; inside the kernel every program
would need its own N x N partial sum and a cross-program reduction (atomics) to combine them.

Precision. On a GPU ``tl.dot`` multiplies fp32 in TF32 by default (about 1e-3 relative error).
``precision="ieee"`` (the default) asks for true fp32 so that results match the fp32 reference
on a GPU as they do in the interpreter; the dot then runs as FMA instructions, not on tensor
cores, and at N = 128 the forward kernel spills (see SPILL_OK). ``precision="tf32"`` puts the
dot on tensor cores (HMMA on sm_80 and sm_90) without spills up to N = 128. The interpreter is
exact either way. ``python -m seqlib.aot`` prints the registers, shared memory and spills.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqlib.kernels._common import (BLOCK_B, _tanh, block_sizes, check_float32, check_precision,
                                    check_same_device, check_shape, num_warps_for,
                                    require_interpreter_on_cpu)

__all__ = ["rnn_recurrence_triton", "RNNRecurrence", "rnn_forward", "rnn_backward", "block_sizes",
           "num_warps_for", "AOT_CONFIGS", "SPILL_OK"]

_NONLINEARITIES = ("tanh", "relu")


def rnn_recurrence_triton(xw: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor,
                          nonlinearity: str = "tanh", precision: str = "ieee") -> torch.Tensor:
    """All hidden states of an Elman RNN, ``h_t = f(xw_t + h_{t-1} @ w_hh^T)``, by the fused kernel.

    xw: (T, B, N) float32, h0: (B, N), w_hh: (N, N), all on one device; returns hs: (T, B, N).
    Differentiable with respect to xw, h0 and w_hh. ``precision`` is the ``tl.dot`` input
    precision on a GPU: "ieee" (fp32 FMA, matches the reference) or "tf32" (tensor cores, about
    1e-3 relative error, the trade cuDNN makes by default); the interpreter is exact either way.
    On CPU tensors it runs under the Triton interpreter, which needs ``TRITON_INTERPRET=1`` set
    before triton is first imported (importing ``seqlib.kernels`` without CUDA does that).
    """
    xw, h0, w_hh = _check_inputs(xw, h0, w_hh, nonlinearity, precision)
    if xw.shape[0] == 0:  # an empty sequence has no states; keep the graph for autograd
        return xw.clone()
    return RNNRecurrence.apply(xw, h0, w_hh, nonlinearity, precision)


class RNNRecurrence(torch.autograd.Function):
    """Autograd wrapper: forward and backward kernels, dW_hh as one PyTorch GEMM."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, nonlinearity, precision="ieee"):
        hs = rnn_forward(xw, h0, w_hh, nonlinearity, precision)
        ctx.save_for_backward(h0, w_hh, hs)
        ctx.nonlinearity, ctx.precision = nonlinearity, precision
        return hs

    @staticmethod
    def backward(ctx, dhs):
        h0, w_hh, hs = ctx.saved_tensors
        dxw, dh0 = rnn_backward(dhs.contiguous(), hs, w_hh, ctx.nonlinearity, ctx.precision)
        T, B, N = hs.shape
        h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]], dim=0)  # h_{t-1} for t = 0..T-1
        dw_hh = dxw.reshape(T * B, N).t() @ h_prev.reshape(T * B, N)
        return dxw, dh0, dw_hh, None, None


def rnn_forward(xw, h0, w_hh, nonlinearity="tanh", precision="ieee", out=None):
    """Launch the forward kernel on checked inputs; ``out`` (T, B, N) lets a test pre-fill NaN."""
    T, B, N = xw.shape
    block_b, block_n = block_sizes(N)
    require_interpreter_on_cpu(xw, "rnn_recurrence_triton")
    hs = torch.full_like(xw, float("nan")) if out is None else out
    grid = (triton.cdiv(B, block_b),)
    _rnn_fwd_kernel[grid](xw, h0, w_hh, hs, T, B, N, BLOCK_B=block_b, BLOCK_N=block_n,
                          RELU=nonlinearity == "relu", DOT_PRECISION=precision,
                          num_warps=num_warps_for(precision))
    return hs


def rnn_backward(dhs, hs, w_hh, nonlinearity="tanh", precision="ieee", out=None):
    """Launch the backward kernel; returns (dxw (T, B, N), dh0 (B, N)).

    ``out`` is an optional pair of pre-allocated (dxw, dh0) buffers, for NaN-filled tests.
    """
    T, B, N = hs.shape
    block_b, block_n = block_sizes(N)
    require_interpreter_on_cpu(hs, "rnn_recurrence_triton")
    if out is None:
        dxw = torch.full_like(hs, float("nan"))
        dh0 = torch.full((B, N), float("nan"), dtype=hs.dtype, device=hs.device)
    else:
        dxw, dh0 = out
    grid = (triton.cdiv(B, block_b),)
    _rnn_bwd_kernel[grid](dhs, hs, w_hh, dxw, dh0, T, B, N, BLOCK_B=block_b, BLOCK_N=block_n,
                          RELU=nonlinearity == "relu", DOT_PRECISION=precision,
                          num_warps=num_warps_for(precision))
    return dxw, dh0


# --------------------------------------------------------------------------- kernels


@triton.jit
def _rnn_fwd_kernel(xw_ptr, h0_ptr, w_ptr, hs_ptr, T, B, N,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, RELU: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """One program: rows [pid * BLOCK_B, (pid + 1) * BLOCK_B) of the batch, all T steps."""
    pid = tl.program_id(0).to(tl.int64)  # int64: offsets below can exceed 2^31 at T * B * N
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]          # (BLOCK_B, BLOCK_N) into a (B, N) slab
    step = tl.cast(B, tl.int64) * N  # distance between time steps

    # W_hh^T, loaded once: wt[k, j] = W_hh[j, k]; zero padding keeps padded units at exactly 0.
    wt = tl.load(w_ptr + cols[None, :] * N + cols[:, None],
                 mask=col_ok[:, None] & col_ok[None, :], other=0.0)
    h = tl.load(h0_ptr + offs, mask=mask, other=0.0)
    for t in range(T):
        xw = tl.load(xw_ptr + t * step + offs, mask=mask, other=0.0)
        pre = xw + tl.dot(h, wt, input_precision=DOT_PRECISION)
        if RELU:
            h = tl.maximum(pre, 0.0)
        else:
            h = _tanh(pre)
        tl.store(hs_ptr + t * step + offs, h, mask=mask)


@triton.jit
def _rnn_bwd_kernel(dhs_ptr, hs_ptr, w_ptr, dxw_ptr, dh0_ptr, T, B, N,
                    BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr, RELU: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    """Reverse-time loop: dpre_t = (dhs_t + dh_carry) * f'(pre_t); dh_carry = dpre_t @ W_hh."""
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < B
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    offs = rows[:, None] * N + cols[None, :]
    step = tl.cast(B, tl.int64) * N

    w = tl.load(w_ptr + cols[:, None] * N + cols[None, :],    # W_hh itself, not transposed
                mask=col_ok[:, None] & col_ok[None, :], other=0.0)
    dh_carry = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for i in range(T):
        t = T - 1 - i
        h = tl.load(hs_ptr + t * step + offs, mask=mask, other=0.0)
        dh = tl.load(dhs_ptr + t * step + offs, mask=mask, other=0.0) + dh_carry
        if RELU:
            dpre = tl.where(h > 0.0, dh, 0.0)    # relu'(pre) from the output: pre > 0 iff h > 0
        else:
            dpre = dh * (1.0 - h * h)            # tanh'(pre) = 1 - tanh(pre)^2 = 1 - h^2
        tl.store(dxw_ptr + t * step + offs, dpre, mask=mask)
        dh_carry = tl.dot(dpre, w, input_precision=DOT_PRECISION)
    tl.store(dh0_ptr + offs, dh_carry, mask=mask)


# --------------------------------------------------------------------------- input checks


def _check_inputs(xw, h0, w_hh, nonlinearity, precision):
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {_NONLINEARITIES}, got {nonlinearity!r}")
    check_precision(precision)
    check_float32(xw=xw, h0=h0, w_hh=w_hh)
    if xw.dim() != 3:
        raise ValueError(f"xw must have shape (T, B, N), got {tuple(xw.shape)}")
    T, B, N = xw.shape
    if B < 1 or N < 1:
        raise ValueError(f"xw must have B >= 1 and N >= 1, got shape {tuple(xw.shape)}")
    check_shape("h0", h0, (B, N), "(B, N)", f"xw {tuple(xw.shape)}")
    check_shape("w_hh", w_hh, (N, N), "(N, N)", f"xw {tuple(xw.shape)}")
    check_same_device(xw, h0=h0, w_hh=w_hh)
    return xw.contiguous(), h0.contiguous(), w_hh.contiguous()


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``, which compiles each entry for sm_80 and sm_90 and reports its
# registers, shared memory and spills. Entries are the launches ``rnn_forward``/``rnn_backward``
# make for N = 64 and 128 with each dot precision. T, B, N are runtime i32 arguments.


def _aot_config(direction, n, precision):
    block_b, block_n = block_sizes(n)
    ptrs = {"fwd": ["xw_ptr", "h0_ptr", "w_ptr", "hs_ptr"],
            "bwd": ["dhs_ptr", "hs_ptr", "w_ptr", "dxw_ptr", "dh0_ptr"]}[direction]
    signature = {p: "*fp32" for p in ptrs}
    signature.update({"T": "i32", "B": "i32", "N": "i32", "BLOCK_B": "constexpr",
                      "BLOCK_N": "constexpr", "RELU": "constexpr", "DOT_PRECISION": "constexpr"})
    warps = num_warps_for(precision)
    return {
        "id": f"rnn_{direction} N={n} {precision}",
        "kernel": f"_rnn_{direction}_kernel",
        "signature": signature,
        "constexprs": {"BLOCK_B": block_b, "BLOCK_N": block_n, "RELU": False,
                       "DOT_PRECISION": precision},
        "options": {"num_warps": warps},
        "config": f"N={n} BLOCK_B={block_b} BLOCK_N={block_n} {precision} warps={warps}",
        "tensor_cores": precision == "tf32",  # expected: tl.dot on tensor cores (HMMA) or FMA
    }


AOT_CONFIGS = [_aot_config(d, n, p) for n in (64, 128) for p in ("ieee", "tf32")
               for d in ("fwd", "bwd")]

# Configs (by "id", or a kernel name for all its configs) allowed to spill, and why.
SPILL_OK = {
    "rnn_fwd N=128 ieee": (
        "an fp32 dot with input_precision='ieee' becomes FMA instructions whose operand fragments "
        "of the 16 x 128 and 128 x 128 blocks need more than 255 registers per thread, even with "
        "8 warps, so ptxas moves them to local memory. It is the exact fallback; on a GPU use "
        "precision='tf32' for N > 64, which runs on tensor cores without spilling."),
}
