"""One fused attention step in Triton: a decoder query attends over variable-length encoder states.

Shape letters (``book/notation.md``):
    B  batch size        S  source (encoder) length
    N  query/key width   Nv value width
    BLOCK_S, BLOCK_N, BLOCK_NV   tile sizes (powers of two; the widths padded to >= 16 and masked)

Tensors:
    q        (B, N)       one decoder query per batch row
    k        (B, S, N)    keys (the encoder states)
    v        (B, S, Nv)   values
    lengths  (B,)         integers in 1..S: row b attends to positions s < lengths[b]
    context  (B, Nv)      softmax(scale * q . k^T, masked to s < lengths[b]) . v
    lse      (B,)         log-sum-exp of the masked, scaled scores

Public API: ``attention_step_triton(q, k, v, lengths=None, scale=1.0) -> (context, lse)``, the
"dot" score of ``seqlib.attention.MultiplicativeAttention`` with ``masked_softmax`` over
``lengths_to_mask(lengths, S)``, for a single query step; differentiable with respect to q, k
and v (lse is returned for the backward and for inspection; gradients do not flow through it).
``attention_step_forward``/``attention_step_backward`` launch the kernels alone (with ``out=``
buffers, so that tests can pre-fill them with NaN).

The forward kernel: one program per batch row, all in one pass (the online softmax of
Milakov & Gimelshein 2018, as in FlashAttention). The program holds q (BLOCK_N,) and walks over
the keys in tiles of BLOCK_S positions, stopping at lengths[b] (tiles past it are never read):

  1. load a (BLOCK_S, BLOCK_N) tile of k; scores s = scale * sum(k * q, axis=1), set to -inf at
     positions >= lengths[b] (their loads are masked, so padding is never read, even if NaN);
  2. m_new = max(m, max(s)); rescale the running sum and context by alpha = exp(m - m_new):
     l <- alpha l + sum(p), acc <- alpha acc + sum(p[:, None] * v_tile, axis=0), p = exp(s - m_new);
  3. after the last tile, context = acc / l and lse = m + log(l).

A single query makes every product a matrix-vector product: the kernel writes them as
``tl.sum`` of elementwise products (FMA on the CUDA cores). ``tl.dot`` needs at least 16 rows on
a GPU, so it would pay only for a block of Tq >= 16 queries per batch row (teacher forcing, or a
beam of 16), where the scores are a (Tq, BLOCK_S) ``tl.dot`` and the context update another:
that is FlashAttention's forward, and not what a step of greedy decoding has.

Backward (a second kernel, one program per batch row, flash-attention style: nothing of size
(B, S) is saved; the probabilities are recomputed from lse). With dctx the upstream gradient and
delta = sum(dctx * context) (a scalar per row, computed in the kernel from the saved context):
    per tile:  p = exp(s - lse)           (0 at s >= lengths[b])
               dv = p[:, None] * dctx     stored (the row's dv has one tile's writes per tile)
               dp = sum(v * dctx, axis=1)
               ds = p * (dp - delta)      (the softmax's Jacobian applied to dp)
               dk = scale * ds[:, None] * q     stored
               dq += scale * sum(ds[:, None] * k, axis=0)
and dq is stored after the loop. Every row's dk and dv belong to that row alone, so no program
needs another's results (no atomics). The backward visits every tile up to S, not lengths[b]:
the tiles past the length cost no loads (their loads are masked off), only the stores of the
zeros that dk and dv hold there.

Memory traffic per batch row (fp32, ``hbm_bytes``), the measure of a memory-bound step (a
matrix-vector product does 2 FLOPs per 4-byte element: far below any GPU's ridge point):
    fused forward    L (N + Nv) 4 + (N + Nv + 1) 4  K, V read once up to L = lengths[b], q, ctx, lse
    unfused forward  S (N + Nv) 4 + 4 S 4 + ...     scores written, read by the softmax, the
                                                    probabilities written, read by the context
The unfused path (``q @ K^T``, ``masked_softmax``, ``p @ V`` in PyTorch) adds 16 S bytes per row
(the (B, S) scores and probabilities each written once and read once) and reads K and V up to S,
not L. At N = Nv = 64 that is 16 S on top of 512 S bytes, 3%; the bigger saving is the
launches (three or more kernels per step instead of one) and the padded positions that the
fused kernel skips. At B = 64, S = 1024, N = Nv = 128 the forward reads 67 MB: 34 us at an
A100's 2.0 TB/s, 20 us at an H100 SXM's 3.35 TB/s (``roofline_seconds``); these are floors from a
model, not measurements (this book's machines have no GPU), and B = 64 programs with one tile
in flight each (BLOCK_S (N + Nv) 4 = 64 KiB) hold 4 MB in flight, above the 1 to 1.7 MB that
Little's law asks for to reach the bandwidth (see ``kernels/scan.py``).

Resources (``python -m seqlib.aot``, triton 3.9, BLOCK_S = 64): no config spills. The forward
takes 96 to 157 registers per thread; the backward, which holds a tile of k and of v and the
tiles of dk and dv it stores, sits at 247 to 255 of the 255 (4 warps at width 64, 8 warps at
128: ``num_warps_for``). Wider heads (N > 128) would need BLOCK_S = 32 in the backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqlib.kernels._common import (check_devices, check_float32, check_shape,
                                    require_interpreter_on_cpu)

__all__ = ["attention_step_triton", "AttentionStepTriton", "attention_step_forward",
           "attention_step_backward", "block_sizes", "num_warps_for", "hbm_bytes",
           "roofline_seconds",
           "AOT_CONFIGS", "SPILL_OK"]

BLOCK_S = 64    # key positions per tile


def num_warps_for(block_n: int, block_nv: int) -> int:
    """Warps per program: 4 for widths up to 64, 8 beyond. A (BLOCK_S, 128) fp32 tile of k or v
    is 32 KiB: on 4 warps the backward, which holds both, spills (255 registers); on 8 warps at
    width 64 ptxas caps the backward at 128 registers on sm_80 and spills a little. The table of
    ``python -m seqlib.aot`` shows the chosen settings without spills."""
    return 4 if max(block_n, block_nv) <= 64 else 8


def attention_step_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          lengths: torch.Tensor | None = None, scale: float = 1.0, *,
                          block_s: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(context (B, Nv), lse (B,)) of one attention step, by the fused kernel.

    q (B, N), k (B, S, N), v (B, S, Nv): float32 on one device; lengths (B,) integers in 1..S on
    the CPU or that device (None: every row attends to all S positions); scale multiplies the
    scores (1 / sqrt(N) for scaled dot-product attention). context is differentiable with
    respect to q, k and v. ``block_s`` overrides BLOCK_S (a power of two >= 2; tests use small
    tiles). On CPU tensors it runs under the Triton interpreter (``TRITON_INTERPRET=1`` before
    triton is first imported; importing ``seqlib.kernels`` without CUDA does that).
    """
    q, k, v, lengths = _check_inputs(q, k, v, lengths)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a Python float, got {type(scale).__name__}")
    _block_s(block_s)
    return AttentionStepTriton.apply(q, k, v, lengths, float(scale), block_s)


class AttentionStepTriton(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, lengths, context and lse (no (B, S) tensor)."""

    @staticmethod
    def forward(ctx, q, k, v, lengths, scale=1.0, block_s=None):
        context, lse = attention_step_forward(q, k, v, lengths, scale, block_s=block_s)
        ctx.save_for_backward(q, k, v, lengths, context, lse)
        ctx.scale, ctx.block_s = scale, block_s
        ctx.mark_non_differentiable(lse)
        return context, lse

    @staticmethod
    def backward(ctx, dcontext, dlse):
        q, k, v, lengths, context, lse = ctx.saved_tensors
        if dcontext is None:
            dcontext = torch.zeros_like(context)
        dq, dk, dv = attention_step_backward(dcontext.contiguous(), q, k, v, lengths, context,
                                             lse, ctx.scale, block_s=ctx.block_s)
        return dq, dk, dv, None, None, None


def block_sizes(N: int, Nv: int, block_s: int | None = None) -> tuple[int, int, int]:
    """(BLOCK_S, BLOCK_N, BLOCK_NV): the widths padded to powers of two >= 16."""
    return (_block_s(block_s), max(16, triton.next_power_of_2(N)),
            max(16, triton.next_power_of_2(Nv)))


def _block_s(block_s):
    bs = BLOCK_S if block_s is None else block_s
    if not isinstance(bs, int) or isinstance(bs, bool) or bs < 2 or bs & (bs - 1):
        raise ValueError(f"block_s must be a power of two >= 2, got {bs!r}")
    return bs


def attention_step_forward(q, k, v, lengths, scale=1.0, out=None, block_s=None):
    """Launch the forward kernel on checked, contiguous inputs (lengths int32 on q's device);
    returns (context (B, Nv), lse (B,)). ``out`` is an optional (context, lse) pair of buffers."""
    B, S, N = k.shape
    Nv = v.shape[2]
    bs, bn, bnv = block_sizes(N, Nv, block_s)
    require_interpreter_on_cpu(q, "attention_step_triton")
    context, lse = ((torch.empty(B, Nv, device=q.device), torch.empty(B, device=q.device))
                    if out is None else out)
    if B:
        _attn_step_fwd_kernel[(B,)](q, k, v, lengths, context, lse, S, N, Nv, float(scale),
                                    BLOCK_S=bs, BLOCK_N=bn, BLOCK_NV=bnv,
                                    num_warps=num_warps_for(bn, bnv))
    return context, lse


def attention_step_backward(dcontext, q, k, v, lengths, context, lse, scale=1.0, out=None,
                            block_s=None):
    """Launch the backward kernel; returns (dq (B, N), dk (B, S, N), dv (B, S, Nv)).
    ``out`` is an optional (dq, dk, dv) triple of buffers."""
    B, S, N = k.shape
    Nv = v.shape[2]
    bs, bn, bnv = block_sizes(N, Nv, block_s)
    require_interpreter_on_cpu(q, "attention_step_triton")
    dq, dk, dv = ((torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
                  if out is None else out)
    if B:
        _attn_step_bwd_kernel[(B,)](q, k, v, lengths, context, lse, dcontext, dq, dk, dv,
                                    S, N, Nv, float(scale),
                                    BLOCK_S=bs, BLOCK_N=bn, BLOCK_NV=bnv,
                                    num_warps=num_warps_for(bn, bnv))
    return dq, dk, dv


# --------------------------------------------------------------------------- kernels


@triton.jit
def _attn_step_fwd_kernel(q_ptr, k_ptr, v_ptr, len_ptr, ctx_ptr, lse_ptr, S, N, Nv, scale,
                          BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_NV: tl.constexpr):
    """One program: batch row b, its keys in tiles of BLOCK_S up to lengths[b], online softmax."""
    b = tl.program_id(0).to(tl.int64)
    L = tl.load(len_ptr + b)
    cn = tl.arange(0, BLOCK_N)
    cv = tl.arange(0, BLOCK_NV)
    n_ok = cn < N
    v_ok = cv < Nv
    rs = tl.arange(0, BLOCK_S)
    q = tl.load(q_ptr + b * N + cn, mask=n_ok, other=0.0)
    k_row = k_ptr + b * S * N
    v_row = v_ptr + b * S * Nv

    m = tl.full((), float("-inf"), tl.float32)   # running max of the scores
    l = tl.zeros((), tl.float32)                 # running sum of exp(s - m)
    acc = tl.zeros((BLOCK_NV,), tl.float32)      # running sum of exp(s - m) v
    for s0 in range(0, L, BLOCK_S):              # tiles past lengths[b] are never visited
        pos = s0 + rs
        ok = pos < L
        kt = tl.load(k_row + pos[:, None] * N + cn[None, :],
                     mask=ok[:, None] & n_ok[None, :], other=0.0)
        s = tl.where(ok, tl.sum(kt * q[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: every visited tile has a position < L
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        vt = tl.load(v_row + pos[:, None] * Nv + cv[None, :],
                     mask=ok[:, None] & v_ok[None, :], other=0.0)
        l = l * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * vt, axis=0)
        m = m_new
    tl.store(ctx_ptr + b * Nv + cv, acc / l, mask=v_ok)
    tl.store(lse_ptr + b, m + tl.log(l))


@triton.jit
def _attn_step_bwd_kernel(q_ptr, k_ptr, v_ptr, len_ptr, ctx_ptr, lse_ptr, dctx_ptr,
                          dq_ptr, dk_ptr, dv_ptr, S, N, Nv, scale,
                          BLOCK_S: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_NV: tl.constexpr):
    """One program: batch row b; p recomputed from lse per tile; dk, dv stored per tile (zeros
    past lengths[b]), dq accumulated and stored at the end."""
    b = tl.program_id(0).to(tl.int64)
    L = tl.load(len_ptr + b)
    cn = tl.arange(0, BLOCK_N)
    cv = tl.arange(0, BLOCK_NV)
    n_ok = cn < N
    v_ok = cv < Nv
    rs = tl.arange(0, BLOCK_S)
    q = tl.load(q_ptr + b * N + cn, mask=n_ok, other=0.0)
    dctx = tl.load(dctx_ptr + b * Nv + cv, mask=v_ok, other=0.0)
    ctx = tl.load(ctx_ptr + b * Nv + cv, mask=v_ok, other=0.0)
    delta = tl.sum(dctx * ctx, axis=0)
    lse = tl.load(lse_ptr + b)
    k_row = k_ptr + b * S * N
    v_row = v_ptr + b * S * Nv
    dk_row = dk_ptr + b * S * N
    dv_row = dv_ptr + b * S * Nv

    dq = tl.zeros((BLOCK_N,), tl.float32)
    for s0 in range(0, S, BLOCK_S):
        pos = s0 + rs
        ok = pos < L          # positions that were attended to: the only ones loaded
        inside = pos < S      # positions of the tensors: stored (zeros past L)
        mk = ok[:, None] & n_ok[None, :]
        mv = ok[:, None] & v_ok[None, :]
        kt = tl.load(k_row + pos[:, None] * N + cn[None, :], mask=mk, other=0.0)
        vt = tl.load(v_row + pos[:, None] * Nv + cv[None, :], mask=mv, other=0.0)
        s = tl.sum(kt * q[None, :], axis=1) * scale
        p = tl.where(ok, tl.exp(s - lse), 0.0)
        dp = tl.sum(vt * dctx[None, :], axis=1)
        ds = p * (dp - delta)
        tl.store(dv_row + pos[:, None] * Nv + cv[None, :], p[:, None] * dctx[None, :],
                 mask=inside[:, None] & v_ok[None, :])
        tl.store(dk_row + pos[:, None] * N + cn[None, :], (ds * scale)[:, None] * q[None, :],
                 mask=inside[:, None] & n_ok[None, :])
        dq += tl.sum(ds[:, None] * kt, axis=0) * scale
    tl.store(dq_ptr + b * N + cn, dq, mask=n_ok)


# --------------------------------------------------------------------------- input checks


def _check_inputs(q, k, v, lengths):
    check_float32(q=q, k=k, v=v)
    if q.dim() != 2:
        raise ValueError(f"q must have shape (B, N), got {tuple(q.shape)}")
    if k.dim() != 3:
        raise ValueError(f"k must have shape (B, S, N), got {tuple(k.shape)}")
    B, N = q.shape
    S = k.shape[1]
    check_shape("k", k, (B, S, N), "(B, S, N)", f"q {tuple(q.shape)}")
    if v.dim() != 3:
        raise ValueError(f"v must have shape (B, S, Nv), got {tuple(v.shape)}")
    check_shape("v", v, (B, S, v.shape[2]), "(B, S, Nv)", f"k {tuple(k.shape)}")
    check_devices("q", q, k=k, v=v)
    if S == 0:
        raise ValueError(f"k must hold at least one position (S >= 1), got shape {tuple(k.shape)}")
    if lengths is None:
        lengths = torch.full((B,), S, dtype=torch.int32, device=q.device)
    else:
        if not isinstance(lengths, torch.Tensor):
            raise TypeError(f"lengths must be a torch.Tensor of shape (B,) or None, "
                            f"got {type(lengths).__name__}")
        if (lengths.dtype.is_floating_point or lengths.dtype.is_complex
                or lengths.dtype == torch.bool):
            raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
        if lengths.device.type != "cpu" and lengths.device != q.device:
            raise ValueError(f"lengths is on {lengths.device}; give it on the cpu or on q's "
                             f"device {q.device}")
        if B and (int(lengths.min()) < 1 or int(lengths.max()) > S):
            raise ValueError(f"lengths must lie in 1..S = 1..{S} (a softmax over no positions is "
                             f"undefined), got min {int(lengths.min())}, max {int(lengths.max())}")
        lengths = lengths.to(device=q.device, dtype=torch.int32).contiguous()
    return q.contiguous(), k.contiguous(), v.contiguous(), lengths


# --------------------------------------------------------------------------- cost model


def hbm_bytes(B: int, S: int, N: int, Nv: int, L: int | None = None, fused: bool = True) -> int:
    """HBM bytes of one forward step (fp32). Fused: K and V read once up to L (default S), q, the
    context and lse. Unfused (PyTorch: scores, masked softmax, context): K and V read up to S,
    and the (B, S) scores and probabilities each written once and read once (16 S bytes per row)."""
    L = S if L is None else L
    ends = (N + Nv + 1) * 4
    if fused:
        return B * (L * (N + Nv) * 4 + ends)
    return B * (S * (N + Nv) * 4 + 4 * S * 4 + ends)


def roofline_seconds(B: int, S: int, N: int, Nv: int, gpu: str = "A100",
                     fused: bool = True) -> float:
    """``hbm_bytes`` at ``gpu``'s full HBM bandwidth (``seqlib.perf.GPUS``): a floor, not a time."""
    from seqlib.perf import GPUS

    return hbm_bytes(B, S, N, Nv, fused=fused) / GPUS[gpu]["hbm"]


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``: forward and backward at N = Nv = 64 and 128, BLOCK_S = 64.
# S, N, Nv and scale are runtime arguments.

_POINTERS = {"fwd": ["q_ptr", "k_ptr", "v_ptr", "len_ptr", "ctx_ptr", "lse_ptr"],
             "bwd": ["q_ptr", "k_ptr", "v_ptr", "len_ptr", "ctx_ptr", "lse_ptr", "dctx_ptr",
                     "dq_ptr", "dk_ptr", "dv_ptr"]}


def _aot_config(direction, n):
    bs, bn, bnv = block_sizes(n, n)
    warps = num_warps_for(bn, bnv)
    signature = {p: "*i32" if p == "len_ptr" else "*fp32" for p in _POINTERS[direction]}
    signature.update({"S": "i32", "N": "i32", "Nv": "i32", "scale": "fp32",
                      "BLOCK_S": "constexpr", "BLOCK_N": "constexpr", "BLOCK_NV": "constexpr"})
    return {
        "id": f"attention_step_{direction} N=Nv={n}",
        "kernel": f"_attn_step_{direction}_kernel",
        "signature": signature,
        "constexprs": {"BLOCK_S": bs, "BLOCK_N": bn, "BLOCK_NV": bnv},
        "options": {"num_warps": warps},
        "config": f"N=Nv={n} BLOCK_S={bs} BLOCK_N={bn} warps={warps}",
        "tensor_cores": False,  # tl.sum of products: matrix-vector, no tl.dot
    }


AOT_CONFIGS = [_aot_config(d, n) for n in (64, 128) for d in ("fwd", "bwd")]

# Configs allowed to spill, and why: none.
SPILL_OK: dict[str, str] = {}
