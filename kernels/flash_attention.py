"""Flash attention in Triton, forward and backward: softmax attention over tiles, never the T x T.

Shape letters (``book/notation.md``):
    B  batch size         H  heads            Dh  head dimension (the width of q, k and v)
    Tq query length       Tk key length       (T when they are equal)
    BLOCK_M  query rows per tile     BLOCK_N  key rows per tile     (powers of two, >= 16)
    BLOCK_D  Dh padded to a power of two >= 16 (loads masked to d < Dh)

Tensors:
    q    (B, H, Tq, Dh)   queries          k, v  (B, H, Tk, Dh)   keys and values
    out  (B, H, Tq, Dh)   softmax(scale q k^T, causal mask) v
    lse  (B, H, Tq)       float32 log-sum-exp of each row's masked, scaled scores (natural log)

Public API: ``flash_attention(q, k, v, causal=False, scale=None, precision="ieee") -> out``,
equal (values and gradients with respect to q, k and v) to
``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``.
scale None means 1 / sqrt(Dh). causal=True lets query i see keys j <= i, aligned at the top
left as PyTorch's ``is_causal`` is, also when Tq != Tk. ``flash_attention_forward`` and
``flash_attention_backward`` launch the kernels alone (with ``out=``/``dq=``... buffers, so that
tests can pre-fill them with NaN). float32, float16 and bfloat16; the two half types are
multiplied on tensor cores and accumulated in float32. ``precision`` picks the float32 product on
a GPU: "ieee" (exact fp32 FMA, the default, matches the reference) or "tf32" (tensor cores,
about 1e-3 relative error). On CPU tensors the kernels run in Triton's interpreter, whose
``tl.dot`` mishandles bfloat16 (triton 3.9): there bf16 operands are upcast to fp32 before each
product (``_dot``), which gives the same result, since a product of two bf16 numbers is exact
in fp32.

Forward (Dao et al. 2022, FlashAttention; the loop order of FlashAttention-2, Dao 2023). One
program per (query tile, b, h). It loads its (BLOCK_M, Dh) tile of q once and walks over the keys
in tiles of BLOCK_N, keeping three things on chip: m (BLOCK_M,) the running row maximum of the
scores, l (BLOCK_M,) the running sum of exp(s - m), acc (BLOCK_M, Dh) the running sum of
exp(s - m) v. Per key tile (the online softmax of Milakov & Gimelshein 2018):

  1. s = scale q k^T                         tl.dot, (BLOCK_M, BLOCK_N), -inf where masked
  2. m_new = max(m, rowmax(s));  alpha = exp(m - m_new);  p = exp(s - m_new)
  3. l <- alpha l + rowsum(p);   acc <- alpha acc + p v      tl.dot, (BLOCK_M, Dh)

and at the end out = acc / l, lse = m + log l. (The kernel uses exp2 with log2(e) folded into the
scale, as FlashAttention's Triton kernels do; lse is stored in natural-log units.) Causal: the
query tile [m0, m0 + BLOCK_M) sees no key beyond m0 + BLOCK_M - 1, so the loop stops at
min(Tk, m0 + BLOCK_M): the fully masked tiles above the diagonal are never loaded, not merely
masked, and a causal forward does about half the work. Only the tiles the diagonal crosses are
masked elementwise. Query rows past Tq and key rows past Tk are masked loads (zero), so lengths
need not be multiples of the tiles, and Dh is padded to BLOCK_D (40 -> 64, 80 -> 128) with masked
loads, since ``tl.dot`` and ``tl.arange`` want powers of two.

Backward (FlashAttention-2). Nothing of size T x T was saved; the probabilities are recomputed
from lse: p = exp(scale q k^T - lse). With dO the upstream gradient (the softmax Jacobian applied
to dp = dO v^T is p * (dp - delta)):

  preprocess   delta = rowsum(dO * out)                    (B, H, Tq), one small kernel
  dK/dV kernel one program per key tile (k, v on chip), a loop over query tiles:
                 p = exp(scale q k^T - lse)    dv += p^T dO      dp = dO v^T
                 ds = p * (dp - delta)         dk += scale ds^T q
  dQ kernel    one program per query tile, a loop over key tiles:
                 the same p, dp, ds;           dq += scale ds k

Each program owns the rows it writes, so no atomics are needed; the price is that p and dp are
computed twice (once per kernel). Causal: the dK/dV loop starts at the query tile holding the
key tile's first row, the dQ loop stops at the diagonal, as in the forward.

Cost per (b, h) at Tq = Tk = T (``attention_cost``; dtype_bytes b = 2 for fp16/bf16, causal
halves the FLOPs). FLOPs count the matrix products (2 T^2 Dh each; the exps and the rescaling are
O(T^2) more, small against Dh):
    forward   2 products (q k^T, p v)                        4 T^2 Dh
    backward  5 products (q k^T again, p^T dO, dO v^T, ds k, ds^T q)   10 T^2 Dh
Bytes (HBM; each of q, k, v, out, dO, dq, dk, dv read or written once by each kernel that needs
it, lse and delta in fp32):
    flash forward   4 T Dh b + 4 T                           linear in T
    flash backward  13 T Dh b + 20 T
    naive forward   4 T Dh b + 4 T^2 b                       scores written, read by the softmax,
                                                             probabilities written, read by p v
    naive backward  8 T Dh b + 7 T^2 b                       (p, dp, ds through HBM)
The arithmetic intensity of the flash forward is 4 T^2 Dh / (4 T Dh b) = T / b FLOP/byte: 512 at
T = 1024 in fp16, far above the ridge points (``seqlib.perf.ridge_point``) of an A100 (312
TFLOP/s bf16 / 2.0 TB/s = 156) and an H100 SXM (989 / 3.35 = 295): compute-bound, limited by the
tensor cores. Naive attention at Dh = 64 does 4 T^2 Dh FLOPs over about 4 T^2 b bytes, Dh / b =
32 FLOP/byte whatever T is: memory-bound, at a fifth of the A100's peak at best. The flash count
above assumes the K and V tiles that every query tile re-reads come from L2 (one (b, h)'s K and V
are 2 T Dh b bytes, 256 KiB at T = 1024, Dh = 64, against 40 MB of L2). If every re-read went to
HBM (``flash_fwd_bytes_streamed``), the intensity would be about 2 BLOCK_M / b = 128 FLOP/byte
at BLOCK_M = 128 (114 at T = 1024, counting q and out): still near the A100's ridge, which
is why FlashAttention's query tiles are 128 rows tall.

Tiles (``launch_config``). fp16/bf16: forward 128 x 64 (query x key rows) at Dh <= 64 and
64 x 64 above; dK/dV 64 x 64 and dQ 64 x 64 at Dh <= 64, 32 x 64 above; 8 warps. float32:
smaller tiles (its elements are twice as wide, and "ieee" has no tensor cores). The dK/dV kernel
masks with one loop; the forward and dQ kernels run an unmasked loop over the tiles every row
sees whole and a masked one over the tiles the diagonal (or the end of the keys) crosses.

Resources (``python -m seqlib.aot``, triton 3.9, CAUSAL=True, registers per thread on
sm_80 / sm_90a, shared memory per program in KiB on sm_80 / sm_90a). No config spills; every
``tl.dot`` of the half and TF32 configs is a tensor-core instruction:
    kernel  dtype, Dh      tile     warps  registers  shared KiB  tensor cores (sm_80 | sm_90a)
    fwd     fp16, 64     128 x 64   8      255 / 179  24 / 25     HMMA.16816.F32 | HGMMA.64
    dK/dV   fp16, 64      64 x 64   8      255 / 210  41 / 26     HMMA.16816.F32 | HGMMA.64
    dQ      fp16, 64      64 x 64   8      244 / 165  32 / 33     HMMA.16816.F32 | HGMMA.64
    fwd     fp16, 128     64 x 64   8      255 / 195  40 / 33     HMMA.16816.F32 | HGMMA.64
    dK/dV   fp16, 128     32 x 64   8      252 / 231  52 / 65     HMMA | HGMMA.64 and HMMA
    dQ      fp16, 128     32 x 64   8      213 / 198  48 / 49     HMMA | HMMA
    fwd     fp16, 80      64 x 64   8      255 / 217  40 / 33     HMMA | HGMMA.64  (BLOCK_D 128)
    bf16 as fp16 (HMMA.16816.F32.BF16 on sm_80, the same registers and shared memory)
    fwd     fp32 tf32, 64 64 x 32   8      206 / 154  32 / 49     HMMA.1688.F32.TF32 | HGMMA.64
    dK/dV   fp32 tf32, 64 32 x 32   4      168 / 168  48 / 49     HMMA.1688.F32.TF32 (both)
    fwd     fp32 ieee, 64 32 x 32   4      164 / 168  20 / 21     no (FMA)
At Dh > 64 the sm_90a dQ kernel (32 query rows) uses HMMA, not wgmma, whose warpgroup tile is
64 rows; so does the (32 x 64) q k^T of the dK/dV kernel.
The sm_80 kernels sit at or near the 255-register limit: these compiles know nothing about the
alignment of the pointers (``seqlib.aot`` passes no ``tt.divisibility`` hints), so every load is
scalar and holds a 64-bit address per element. A launch on a GPU specializes 16-byte-aligned
pointers (every torch allocation is) and compiles leaner code: with those hints the fp16 Dh = 64
forward at 128 x 64 on 8 warps takes 172 registers on sm_80 (114 on sm_90a) instead of 255 (179).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from seqlib.kernels._common import (check_devices, check_precision,
                                    is_interpreted, require_interpreter_on_cpu)

__all__ = ["flash_attention", "FlashAttention", "flash_attention_forward",
           "flash_attention_backward", "launch_config", "attention_cost",
           "AOT_CONFIGS", "SPILL_OK"]

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    scale: float | None = None, precision: str = "ieee") -> torch.Tensor:
    """out (B, H, Tq, Dh) = softmax(scale q k^T [causal mask]) v, by the flash kernels.

    q (B, H, Tq, Dh), k and v (B, H, Tk, Dh): one dtype (float32, float16 or bfloat16), one
    device, Tk >= 1, 1 <= Dh <= 256. scale None is 1 / sqrt(Dh). causal masks key j > query i
    (top-left aligned, as ``scaled_dot_product_attention(is_causal=True)``). Differentiable with
    respect to q, k and v. ``precision`` ("ieee" or "tf32") is the float32 ``tl.dot`` precision
    on a GPU (ignored for half types and by the interpreter, which is exact).
    """
    q, k, v = _check_inputs(q, k, v)
    scale = _check_scale(scale, q.shape[-1])
    check_precision(precision)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    return FlashAttention.apply(q, k, v, causal, scale, precision)


class FlashAttention(torch.autograd.Function):
    """Autograd wrapper: saves q, k, v, out and lse (B, H, Tq); nothing of size Tq x Tk."""

    @staticmethod
    def forward(ctx, q, k, v, causal=False, scale=None, precision="ieee"):
        out, lse = flash_attention_forward(q, k, v, causal, scale, precision=precision)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.scale, ctx.precision = causal, scale, precision
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(q, k, v, out, lse, dout.contiguous(), ctx.causal,
                                              ctx.scale, precision=ctx.precision)
        return dq, dk, dv, None, None, None


def launch_config(kind: str, dtype: torch.dtype, Dh: int, precision: str = "ieee") -> dict:
    """Tile sizes and launch options of one kernel, ``kind`` "fwd", "bwd_dkdv" or "bwd_dq", for
    q's dtype and head dimension Dh (and the float32 ``precision``).

    Returns {"block_m", "block_n", "num_warps", "num_stages"}: settings with which
    ``python -m seqlib.aot`` compiles the kernels for sm_80 and sm_90 without spills (see the
    table in the module docstring). Half types use FlashAttention's 128 x 64 forward tile up to
    Dh = 64 and 64 x 64 beyond; the backward kernels hold more tiles per program (k, v, dk, dv or
    q, dO, dq) and get 64 x 64 or smaller. float32 has twice the bytes per element and, with
    "ieee", no tensor cores (its dots are FMA), so it gets smaller tiles still.
    """
    if kind not in ("fwd", "bwd_dkdv", "bwd_dq"):
        raise ValueError(f"kind must be 'fwd', 'bwd_dkdv' or 'bwd_dq', got {kind!r}")
    wide = _block_d(Dh) > 64
    if dtype in (torch.float16, torch.bfloat16):
        bm, bn, stages = {"fwd": (64 if wide else 128, 64, 3),
                          "bwd_dkdv": (32 if wide else 64, 64, 2),
                          "bwd_dq": (32 if wide else 64, 64, 2)}[kind]
        return {"block_m": bm, "block_n": bn, "num_warps": 8, "num_stages": stages}
    if precision == "tf32":
        bm, bn = {"fwd": (32 if wide else 64, 32), "bwd_dkdv": (32, 32), "bwd_dq": (32, 32)}[kind]
        return {"block_m": bm, "block_n": bn, "num_warps": 8 if wide or kind == "fwd" else 4,
                "num_stages": 2}
    bm, bn = {"fwd": (16 if wide else 32, 32), "bwd_dkdv": (16, 32),
              "bwd_dq": (32, 16 if wide else 32)}[kind]
    return {"block_m": bm, "block_n": bn, "num_warps": 8 if wide else 4, "num_stages": 1}


def flash_attention_forward(q, k, v, causal=False, scale=None, out=None, lse=None,
                            block_m=None, block_n=None, precision="ieee"):
    """Launch the forward kernel; returns (out (B, H, Tq, Dh) in q's dtype, lse (B, H, Tq) fp32).

    Inputs are checked as in ``flash_attention`` and made contiguous. ``out``/``lse`` are
    optional contiguous buffers of those shapes and dtypes. ``block_m``/``block_n`` override
    the tile sizes of ``launch_config`` (powers of two >= 16; tests use 16).
    """
    q, k, v = _check_inputs(q, k, v)
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    scale = _check_scale(scale, Dh)
    check_precision(precision)
    require_interpreter_on_cpu(q, "flash_attention")
    cfg = launch_config("fwd", q.dtype, Dh, precision)
    bm, bn = _block("block_m", block_m, cfg["block_m"]), _block("block_n", block_n, cfg["block_n"])
    out = _buffer("out", out, q.shape, q.dtype, q.device)
    lse = _buffer("lse", lse, (B, H, Tq), torch.float32, q.device)
    if B * H * Tq:
        grid = (triton.cdiv(Tq, bm), B * H)
        _flash_fwd_kernel[grid](q, k, v, out, lse, Tq, Tk, scale * _LOG2E, Dh=Dh,
                                CAUSAL=bool(causal), BLOCK_M=bm, BLOCK_N=bn,
                                BLOCK_D=_block_d(Dh), DOT_PRECISION=precision,
                                DOT_FP32=_dot_fp32(q.dtype), num_warps=cfg["num_warps"],
                                num_stages=cfg["num_stages"])
    return out, lse


def flash_attention_backward(q, k, v, out, lse, dout, causal=False, scale=None, dq=None,
                             dk=None, dv=None, block_m=None, block_n=None, precision="ieee"):
    """Launch the backward kernels (delta, dK/dV, dQ); returns (dq, dk, dv) in q's dtype.

    out (B, H, Tq, Dh) and lse (B, H, Tq) are what the forward returned; dout is the gradient of
    out. ``dq``/``dk``/``dv`` are optional contiguous buffers; ``block_m`` (query rows) and
    ``block_n`` (key rows) override the tiles of ``launch_config("bwd_dkdv" and "bwd_dq", ...)``
    in both kernels.
    """
    q, k, v = _check_inputs(q, k, v)
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    _check_like("out", out, q, "q")
    _check_like("dout", dout, q, "q")
    if not isinstance(lse, torch.Tensor) or lse.dtype != torch.float32 \
            or tuple(lse.shape) != (B, H, Tq):
        got = (f"{lse.dtype} {tuple(lse.shape)}" if isinstance(lse, torch.Tensor)
               else type(lse).__name__)
        raise ValueError(f"lse must be a float32 tensor of shape (B, H, Tq) = {(B, H, Tq)}, "
                         f"got {got}")
    check_devices("q", q, out=out, lse=lse, dout=dout)
    scale = _check_scale(scale, Dh)
    check_precision(precision)
    require_interpreter_on_cpu(q, "flash_attention")
    cfg_kv = launch_config("bwd_dkdv", q.dtype, Dh, precision)
    cfg_q = launch_config("bwd_dq", q.dtype, Dh, precision)
    kv_m = _block("block_m", block_m, cfg_kv["block_m"])
    kv_n = _block("block_n", block_n, cfg_kv["block_n"])
    q_m = _block("block_m", block_m, cfg_q["block_m"])
    q_n = _block("block_n", block_n, cfg_q["block_n"])
    out, lse, dout = out.contiguous(), lse.contiguous(), dout.contiguous()
    dq = _buffer("dq", dq, q.shape, q.dtype, q.device)
    dk = _buffer("dk", dk, k.shape, k.dtype, k.device)
    dv = _buffer("dv", dv, v.shape, v.dtype, v.device)
    bd = _block_d(Dh)
    if B * H * Tq == 0:  # no query: nothing reaches k or v
        dk.zero_()
        dv.zero_()
        return dq, dk, dv
    delta = torch.empty(B, H, Tq, dtype=torch.float32, device=q.device)
    _flash_bwd_delta_kernel[(triton.cdiv(Tq, q_m), B * H)](out, dout, delta, Tq, Dh=Dh,
                                                           BLOCK_M=q_m, BLOCK_D=bd)
    common = dict(Dh=Dh, CAUSAL=bool(causal), BLOCK_D=bd, DOT_PRECISION=precision,
                  DOT_FP32=_dot_fp32(q.dtype))
    _flash_bwd_dkdv_kernel[(triton.cdiv(Tk, kv_n), B * H)](
        q, k, v, dout, lse, delta, dk, dv, Tq, Tk, scale, scale * _LOG2E, BLOCK_M=kv_m,
        BLOCK_N=kv_n, num_warps=cfg_kv["num_warps"], num_stages=cfg_kv["num_stages"], **common)
    _flash_bwd_dq_kernel[(triton.cdiv(Tq, q_m), B * H)](
        q, k, v, dout, lse, delta, dq, Tq, Tk, scale, scale * _LOG2E, BLOCK_M=q_m,
        BLOCK_N=q_n, num_warps=cfg_q["num_warps"], num_stages=cfg_q["num_stages"], **common)
    return dq, dk, dv


# --------------------------------------------------------------------------- kernels


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr):
    """a @ b (+ acc) with an fp32 result. DOT_FP32 upcasts the operands first: only under the
    interpreter, whose tl.dot mishandles bfloat16 (triton 3.9); the result is the same, since
    the product of two bfloat16 numbers is exact in fp32."""
    if DOT_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if acc is None:
        return tl.dot(a, b, input_precision=DOT_PRECISION)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _flash_fwd_kernel(q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, Tq, Tk, qk_scale, Dh: tl.constexpr,
                      CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                      DOT_FP32: tl.constexpr):
    """One program: query tile pid_m of head bh; online softmax over the key tiles it can see.
    qk_scale = scale * log2(e): scores are kept in base-2 units, exp2 instead of exp."""
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    rows = m0 + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    d_ok = rd < Dh
    q = tl.load(q_ptr + bh * Tq * Dh + rows[:, None] * Dh + rd[None, :],
                mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    k_base = k_ptr + bh * Tk * Dh
    v_base = v_ptr + bh * Tk * Dh

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)   # running row max (base 2)
    l_i = tl.zeros((BLOCK_M,), tl.float32)                 # running sum of exp2(s - m)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)         # running sum of exp2(s - m) v
    n_full, hi = _key_bounds(m0, Tk, CAUSAL, BLOCK_M, BLOCK_N)
    # Tiles [0, n_full) are seen whole by every row: no score masking. Tiles [n_full, hi) cross
    # the diagonal or the end of the keys. Tiles from hi on are above the diagonal: never loaded.
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, rows, 0, n_full, Tk, qk_scale,
                               False, CAUSAL, Dh, BLOCK_N, BLOCK_D, DOT_PRECISION, DOT_FP32)
    acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, rows, n_full, hi, Tk, qk_scale,
                               True, CAUSAL, Dh, BLOCK_N, BLOCK_D, DOT_PRECISION, DOT_FP32)
    acc = acc / l_i[:, None]
    tl.store(o_ptr + bh * Tq * Dh + rows[:, None] * Dh + rd[None, :],
             acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + bh * Tq + rows, (m_i + tl.log2(l_i)) * 0.6931471805599453, mask=row_ok)


@triton.jit
def _key_bounds(m0, Tk, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(n_full, hi) for the query tile at m0: key tiles below n_full are visible to all its rows
    and lie inside Tk; keys from hi on are invisible to all of them (causal) or do not exist."""
    if CAUSAL:
        n_full = (tl.minimum(m0, Tk) // BLOCK_N) * BLOCK_N   # tile ends at or before key m0
        hi = tl.minimum(Tk, m0 + BLOCK_M)                    # the tile's last row sees keys < hi
    else:
        n_full = (Tk // BLOCK_N) * BLOCK_N
        hi = Tk
    return n_full, hi


@triton.jit
def _visible(rows, cols, Tk, CAUSAL: tl.constexpr):
    """Which keys each query row may read, (BLOCK_M, BLOCK_N) (or (1, BLOCK_N) when not causal):
    the key exists (col < Tk) and, if causal, does not come after the row."""
    visible = (cols < Tk)[None, :]
    if CAUSAL:
        visible = visible & (cols[None, :] <= rows[:, None])
    return visible


@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, rows, lo, hi, Tk, qk_scale,
               MASK: tl.constexpr, CAUSAL: tl.constexpr, Dh: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
               DOT_FP32: tl.constexpr):
    """The online softmax over key tiles [lo, hi); MASK: set scores of invisible keys to -inf."""
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    d_ok = rd < Dh
    for n0 in range(lo, hi, BLOCK_N):
        cols = n0 + rn
        kv_mask = d_ok[None, :]
        if MASK:
            kv_mask = (cols < Tk)[:, None] & kv_mask
        k = tl.load(k_base + cols[:, None] * Dh + rd[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), None, DOT_PRECISION, DOT_FP32) * qk_scale
        if MASK:
            s = tl.where(_visible(rows, cols, Tk, CAUSAL), s, float("-inf"))
        # m_new is finite: key 0 is visible to every row (padding rows too), and the first tile
        # visited holds it
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + cols[:, None] * Dh + rd[None, :], mask=kv_mask, other=0.0)
        acc = _dot(p.to(v.dtype), v, acc * alpha[:, None], DOT_PRECISION, DOT_FP32)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _flash_bwd_delta_kernel(o_ptr, do_ptr, delta_ptr, Tq, Dh: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta = rowsum(dO * out) for one query tile, in fp32."""
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    rows = m0 + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    mask = row_ok[:, None] & (rd < Dh)[None, :]
    offs = bh * Tq * Dh + rows[:, None] * Dh + rd[None, :]
    o = tl.load(o_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(delta_ptr + bh * Tq + rows, tl.sum(o * do, axis=1), mask=row_ok)


@triton.jit
def _flash_bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                           Tq, Tk, scale, qk_scale, Dh: tl.constexpr,
                           CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                           DOT_FP32: tl.constexpr):
    """One program: key tile pid_n of head bh (k, v on chip); a loop over the query tiles that
    see it; p recomputed from lse; dk, dv accumulated in fp32 and stored once."""
    n0 = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1).to(tl.int64)
    cols = n0 + tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    kv_mask = (cols < Tk)[:, None] & (rd < Dh)[None, :]
    kv_offs = bh * Tk * Dh + cols[:, None] * Dh + rd[None, :]
    k = tl.load(k_ptr + kv_offs, mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + kv_offs, mask=kv_mask, other=0.0)
    q_base = q_ptr + bh * Tq * Dh
    do_base = do_ptr + bh * Tq * Dh
    lse_base = lse_ptr + bh * Tq
    delta_base = delta_ptr + bh * Tq

    dk = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    # Query tiles wholly above the key tile's first row never see it (causal): start at the
    # tile holding row n0. Without a causal mask, query rows past Tq load q = dO = 0 and add
    # nothing, and key rows past Tk only touch rows of dk, dv that are never stored.
    lo = 0
    if CAUSAL:
        lo = (n0 // BLOCK_M) * BLOCK_M
    dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, lo, Tq,
                         Tq, qk_scale, CAUSAL, Dh, BLOCK_M, BLOCK_D, DOT_PRECISION, DOT_FP32)
    dk = dk * scale
    tl.store(dk_ptr + kv_offs, dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + kv_offs, dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, cols, lo, hi, Tq, qk_scale,
                CAUSAL_MASK: tl.constexpr, Dh: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr, DOT_FP32: tl.constexpr):
    """dk, dv += the contributions of query tiles [lo, hi); CAUSAL_MASK: zero p above the
    diagonal (and at query rows past Tq). One loop with the mask, rather than a masked loop for
    the tiles the diagonal crosses and an unmasked one after, as in the forward: ptxas spills
    the two-loop version on sm_80 (``python -m seqlib.aot``)."""
    rm = tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    d_ok = rd < Dh
    for m0 in range(lo, hi, BLOCK_M):
        rows = m0 + rm
        row_ok = rows < Tq
        q_mask = row_ok[:, None] & d_ok[None, :]
        q = tl.load(q_base + rows[:, None] * Dh + rd[None, :], mask=q_mask, other=0.0)
        do = tl.load(do_base + rows[:, None] * Dh + rd[None, :], mask=q_mask, other=0.0)
        lse2 = tl.load(lse_base + rows, mask=row_ok, other=0.0) * 1.4426950408889634
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
        s = _dot(q, tl.trans(k), None, DOT_PRECISION, DOT_FP32) * qk_scale
        p = tl.exp2(s - lse2[:, None])                                  # (BLOCK_M, BLOCK_N)
        if CAUSAL_MASK:
            p = tl.where(row_ok[:, None] & (cols[None, :] <= rows[:, None]), p, 0.0)
        dv = _dot(tl.trans(p.to(do.dtype)), do, dv, DOT_PRECISION, DOT_FP32)
        dp = _dot(do, tl.trans(v), None, DOT_PRECISION, DOT_FP32)
        ds = p * (dp - delta[:, None])
        dk = _dot(tl.trans(ds.to(q.dtype)), q, dk, DOT_PRECISION, DOT_FP32)
    return dk, dv


@triton.jit
def _flash_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, do_ptr, lse_ptr, delta_ptr, dq_ptr,
                         Tq, Tk, scale, qk_scale, Dh: tl.constexpr,
                         CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                         BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                         DOT_FP32: tl.constexpr):
    """One program: query tile pid_m of head bh (q, dO on chip); a loop over the key tiles it
    sees; dq accumulated in fp32 and stored once."""
    m0 = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1).to(tl.int64)
    rows = m0 + tl.arange(0, BLOCK_M)
    rd = tl.arange(0, BLOCK_D)
    row_ok = rows < Tq
    q_mask = row_ok[:, None] & (rd < Dh)[None, :]
    q_offs = bh * Tq * Dh + rows[:, None] * Dh + rd[None, :]
    q = tl.load(q_ptr + q_offs, mask=q_mask, other=0.0)
    do = tl.load(do_ptr + q_offs, mask=q_mask, other=0.0)
    lse2 = tl.load(lse_ptr + bh * Tq + rows, mask=row_ok, other=0.0) * 1.4426950408889634
    delta = tl.load(delta_ptr + bh * Tq + rows, mask=row_ok, other=0.0)
    k_base = k_ptr + bh * Tk * Dh
    v_base = v_ptr + bh * Tk * Dh

    dq = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    n_full, hi = _key_bounds(m0, Tk, CAUSAL, BLOCK_M, BLOCK_N)
    dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, rows, 0, n_full, Tk, qk_scale,
                   False, CAUSAL, Dh, BLOCK_N, BLOCK_D, DOT_PRECISION, DOT_FP32)
    dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, rows, n_full, hi, Tk, qk_scale,
                   True, CAUSAL, Dh, BLOCK_N, BLOCK_D, DOT_PRECISION, DOT_FP32)
    dq = dq * scale
    tl.store(dq_ptr + q_offs, dq.to(dq_ptr.dtype.element_ty), mask=q_mask)


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, rows, lo, hi, Tk, qk_scale,
              MASK: tl.constexpr, CAUSAL: tl.constexpr, Dh: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
              DOT_FP32: tl.constexpr):
    """dq += the contributions of key tiles [lo, hi); MASK: zero p at invisible keys."""
    rn = tl.arange(0, BLOCK_N)
    rd = tl.arange(0, BLOCK_D)
    d_ok = rd < Dh
    for n0 in range(lo, hi, BLOCK_N):
        cols = n0 + rn
        kv_mask = d_ok[None, :]
        if MASK:
            kv_mask = (cols < Tk)[:, None] & kv_mask
        k = tl.load(k_base + cols[:, None] * Dh + rd[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + cols[:, None] * Dh + rd[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), None, DOT_PRECISION, DOT_FP32) * qk_scale
        p = tl.exp2(s - lse2[:, None])
        if MASK:
            p = tl.where(_visible(rows, cols, Tk, CAUSAL), p, 0.0)
        dp = _dot(do, tl.trans(v), None, DOT_PRECISION, DOT_FP32)
        ds = p * (dp - delta[:, None])
        dq = _dot(ds.to(k.dtype), k, dq, DOT_PRECISION, DOT_FP32)
    return dq


# --------------------------------------------------------------------------- input checks


def _check_inputs(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    for name, t, letters in (("q", q, "(B, H, Tq, Dh)"), ("k", k, "(B, H, Tk, Dh)"),
                             ("v", v, "(B, H, Tk, Dh)")):
        if t.dim() != 4:
            raise ValueError(f"{name} must have 4 dims {letters}, got shape {tuple(t.shape)}")
    if q.dtype not in DTYPES:
        raise TypeError(f"q must have dtype torch.float32, torch.float16 or torch.bfloat16, "
                        f"got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    if k.shape[0] != B or k.shape[1] != H:
        raise ValueError(f"k must have shape (B, H, Tk, Dh) with (B, H) = {(B, H)} to match q "
                         f"{tuple(q.shape)}, got {tuple(k.shape)}")
    if k.shape[3] != Dh:
        raise ValueError(f"k must have q's head dim Dh = {Dh}: shape (B, H, Tk, Dh) = "
                         f"{(B, H, Tk, Dh)} to match q {tuple(q.shape)}, got {tuple(k.shape)}")
    if tuple(v.shape) != (B, H, Tk, Dh):
        raise ValueError(f"v must have shape (B, H, Tk, Dh) = {(B, H, Tk, Dh)} to match q "
                         f"{tuple(q.shape)} and k {tuple(k.shape)}, got {tuple(v.shape)}")
    if Tk < 1:
        raise ValueError(f"k must hold at least one key (Tk >= 1), got shape {tuple(k.shape)}")
    if not 1 <= Dh <= MAX_HEAD_DIM:
        raise ValueError(f"q's head dim Dh must lie in 1..{MAX_HEAD_DIM}, got shape "
                         f"{tuple(q.shape)}")
    check_devices("q", q, k=k, v=v)
    return q.contiguous(), k.contiguous(), v.contiguous()


def _check_scale(scale, Dh):
    if scale is None:
        return 1.0 / math.sqrt(Dh)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a Python float or None, got {type(scale).__name__}")
    return float(scale)


def _check_like(name, t, ref, ref_name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}, got {t.dtype}")
    if t.shape != ref.shape:
        raise ValueError(f"{name} must have shape (B, H, Tq, Dh) = {tuple(ref.shape)} to match "
                         f"{ref_name}, got {tuple(t.shape)}")


def _buffer(name, buf, shape, dtype, device):
    """buf (checked: shape, dtype, device, contiguous), or a new empty tensor."""
    if buf is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if (not isinstance(buf, torch.Tensor) or tuple(buf.shape) != tuple(shape)
            or buf.dtype != dtype or buf.device != device or not buf.is_contiguous()):
        got = (f"{buf.dtype} {tuple(buf.shape)} on {buf.device}" if isinstance(buf, torch.Tensor)
               else type(buf).__name__)
        raise ValueError(f"{name} must be a contiguous {dtype} tensor of shape {tuple(shape)} "
                         f"on {device}, got {got}")
    return buf


def _block(name, value, default):
    b = default if value is None else value
    if not isinstance(b, int) or isinstance(b, bool) or b < 16 or b & (b - 1):
        raise ValueError(f"{name} must be a power of two >= 16 (tl.dot's smallest tile), "
                         f"got {b!r}")
    return b


def _dot_fp32(dtype):
    return dtype == torch.bfloat16 and is_interpreted(_flash_fwd_kernel)


def _block_d(Dh):
    return max(16, triton.next_power_of_2(Dh))


# --------------------------------------------------------------------------- cost model


def attention_cost(T: int, Dh: int, causal: bool = False, dtype_bytes: int = 2, *,
                   block_m: int = 128) -> dict:
    """FLOPs and HBM bytes of attention for one (b, h) at Tq = Tk = T, flash against naive.

    Keys ``{flash,naive}_flops_{fwd,fwd_bwd}``, ``{flash,naive}_bytes_{fwd,fwd_bwd}``,
    ``{flash,naive}_intensity_{fwd,fwd_bwd}`` (FLOP/byte) and ``flash_fwd_bytes_streamed``
    (the forward if every query tile of ``block_m`` rows re-read K and V from HBM rather than L2).
    FLOPs are the matrix products' (2 per multiply-add): the forward does 2 (q k^T, p v), the
    flash backward 5 (it recomputes q k^T), the naive backward 4. The causal flash kernels do
    only the T (T + 1) / 2 visible pairs (up to the diagonal tiles); naive attention computes all
    T^2 scores and masks them, which costs one more pass over the scores (read and write).
    Bytes: q, k, v, out (and dO, dq, dk, dv) of T Dh ``dtype_bytes`` each, as in the module
    docstring; lse and delta are fp32; naive attention also moves the T x T scores, probabilities
    and their gradients in ``dtype_bytes``.
    """
    for name, x in (("T", T), ("Dh", Dh), ("dtype_bytes", dtype_bytes), ("block_m", block_m)):
        if not isinstance(x, int) or isinstance(x, bool) or x < 1:
            raise ValueError(f"{name} must be a positive integer, got {x!r}")
    b = dtype_bytes
    pairs = T * (T + 1) // 2 if causal else T * T
    vec = T * Dh * b                                   # one (T, Dh) tensor
    sq = T * T * b                                     # one (T, T) tensor
    flash_fwd_flops = 4 * pairs * Dh
    flash_bwd_flops = 10 * pairs * Dh
    naive_fwd_flops = 4 * T * T * Dh
    naive_bwd_flops = 8 * T * T * Dh
    flash_fwd_bytes = 4 * vec + 4 * T                  # q, k, v read, out written, lse written
    # delta: read out, dO, write delta; dK/dV: read q, k, v, dO, lse, delta, write dk, dv;
    # dQ: read q, k, v, dO, lse, delta, write dq
    flash_bwd_bytes = 2 * vec + 4 * T + 6 * vec + 8 * T + 5 * vec + 8 * T
    mask_pass = 2 * sq if causal else 0
    naive_fwd_bytes = 4 * vec + 4 * sq + mask_pass     # s written + read, p written + read
    naive_bwd_bytes = 8 * vec + 7 * sq                 # p twice, dp, ds, ... (module docstring)
    tiles = -(-T // block_m)
    kv_tiles_read = (sum(min(T, (i + 1) * block_m) for i in range(tiles)) if causal
                     else tiles * T)                   # key rows read over all query tiles
    out = {
        "flash_flops_fwd": flash_fwd_flops,
        "flash_flops_fwd_bwd": flash_fwd_flops + flash_bwd_flops,
        "naive_flops_fwd": naive_fwd_flops,
        "naive_flops_fwd_bwd": naive_fwd_flops + naive_bwd_flops,
        "flash_bytes_fwd": flash_fwd_bytes,
        "flash_bytes_fwd_bwd": flash_fwd_bytes + flash_bwd_bytes,
        "naive_bytes_fwd": naive_fwd_bytes,
        "naive_bytes_fwd_bwd": naive_fwd_bytes + naive_bwd_bytes,
        "flash_fwd_bytes_streamed": 2 * vec + 4 * T + 2 * kv_tiles_read * Dh * b,
    }
    for kind in ("flash", "naive"):
        for part in ("fwd", "fwd_bwd"):
            flops, nbytes = out[f"{kind}_flops_{part}"], out[f"{kind}_bytes_{part}"]
            out[f"{kind}_intensity_{part}"] = flops / nbytes
    return out


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``: the launches flash_attention makes (launch_config) for
# fp16 and bf16 at Dh = 64 and 128, fp16 at Dh = 80 (padded to BLOCK_D = 128), fp32 at Dh = 64
# with TF32 tensor cores and with exact FMA ("ieee"), and the small delta kernel. Tq, Tk and the
# scales are runtime arguments; Dh is compiled in (a launch compiles once per head dim), and so is
# causal (True here: the causal kernels have both the unmasked and the masked loops).

_TL_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
_POINTERS = {
    "fwd": ["q_ptr", "k_ptr", "v_ptr", "o_ptr", "lse_ptr"],
    "bwd_dkdv": ["q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dk_ptr", "dv_ptr"],
    "bwd_dq": ["q_ptr", "k_ptr", "v_ptr", "do_ptr", "lse_ptr", "delta_ptr", "dq_ptr"],
}
_SCALARS = {"fwd": ["Tq", "Tk", "qk_scale"],
            "bwd_dkdv": ["Tq", "Tk", "scale", "qk_scale"],
            "bwd_dq": ["Tq", "Tk", "scale", "qk_scale"]}


def _aot_config(kernel, dtype, dh, precision="ieee", causal=True):
    cfg = launch_config(kernel, dtype, dh, precision)
    t = _TL_DTYPE[dtype]
    signature = {p: "*fp32" if p in ("lse_ptr", "delta_ptr") else f"*{t}"
                 for p in _POINTERS[kernel]}
    signature.update({s: "fp32" if "scale" in s else "i32" for s in _SCALARS[kernel]})
    signature.update({c: "constexpr" for c in ("Dh", "CAUSAL", "BLOCK_M", "BLOCK_N", "BLOCK_D",
                                               "DOT_PRECISION", "DOT_FP32")})
    bd = _block_d(dh)
    prec = f" {precision}" if dtype == torch.float32 else ""
    return {
        "id": f"flash_{kernel} {t} Dh={dh}{prec}",
        "kernel": f"_flash_{kernel}_kernel",
        "signature": signature,
        "constexprs": {"Dh": dh, "CAUSAL": causal, "BLOCK_M": cfg["block_m"],
                       "BLOCK_N": cfg["block_n"], "BLOCK_D": bd, "DOT_PRECISION": precision,
                       "DOT_FP32": False},
        "options": {"num_warps": cfg["num_warps"], "num_stages": cfg["num_stages"]},
        "config": (f"{t}{prec} Dh={dh} BLOCK_M={cfg['block_m']} BLOCK_N={cfg['block_n']} "
                   f"BLOCK_D={bd} warps={cfg['num_warps']} stages={cfg['num_stages']}"),
        "tensor_cores": dtype != torch.float32 or precision == "tf32",
    }


AOT_CONFIGS = ([_aot_config(kern, dt, dh) for dt, dh in ((torch.float16, 64), (torch.float16, 128),
                                                     (torch.float16, 80), (torch.bfloat16, 64),
                                                     (torch.bfloat16, 128))
                for kern in ("fwd", "bwd_dkdv", "bwd_dq")]
               + [_aot_config(kern, torch.float32, 64, prec) for prec in ("tf32", "ieee")
                  for kern in ("fwd", "bwd_dkdv", "bwd_dq")]
               + [{"id": "flash_bwd_delta fp16 Dh=64", "kernel": "_flash_bwd_delta_kernel",
                   "signature": {"o_ptr": "*fp16", "do_ptr": "*fp16", "delta_ptr": "*fp32",
                                 "Tq": "i32", "Dh": "constexpr", "BLOCK_M": "constexpr",
                                 "BLOCK_D": "constexpr"},
                   "constexprs": {"Dh": 64, "BLOCK_M": 64, "BLOCK_D": 64},
                   "options": {"num_warps": 4}, "config": "fp16 Dh=64 BLOCK_M=64 warps=4",
                   "tensor_cores": False}])

# Configs allowed to spill, and why: none.
SPILL_OK: dict[str, str] = {}
