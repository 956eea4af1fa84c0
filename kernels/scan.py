"""A chunked linear scan in Triton: h_t = a_t * h_{t-1} + b_t over time, real or complex.

Shape letters (``book/notation.md``):
    B  batch size      T  sequence length      D  width (channels)
    BLOCK_T, BLOCK_D   tile sizes (powers of two): time steps and channels per tile

Tensors:
    a, b  (B, T, D)  float32 or complex64, the same dtype: coefficients and inputs
    h0    (B, D)     optional initial state (zero when None)
    h     (B, T, D)  all states, h_t = a_t * h_{t-1} + b_t (reverse: h_t = a_t * h_{t+1} + b_t)

Public API: ``linear_scan_triton(a, b, h0=None, reverse=False) -> h``, the contract of the
reference ``seqlib.scan.linear_scan`` (which calls it for backend="triton"), differentiable with
respect to a, b and h0. ``scan_forward``/``scan_backward`` launch the kernels alone (with ``out=``
buffers, so that tests can pre-fill them with NaN). ``combine_real``/``combine_complex`` are the
scan's operator exactly as the kernels use it; their ``.fn`` runs on torch tensors too, which is
how the tests check that it is associative (the interpreter folds ``tl.associative_scan``
left to right, so it would not notice if it were not).

The kernel: one pass, the carry between chunks held in registers. Every channel (b, d) is its
own scan over time. One program owns BLOCK_D channels of one batch element for the whole
sequence, and walks over time in chunks of BLOCK_T steps:

  1. load a (BLOCK_T, BLOCK_D) tile of a and of b: rows are time steps; D is contiguous in
     memory, so a row of 32 fp32 channels is one 128-byte line;
  2. fold the state carried in from the previous chunk into the first row,
     b_0 <- b_0 + a_0 * carry;
  3. ``tl.associative_scan`` over the time axis with the combine on pairs
     (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2)   (``combine_real``; see ``seqlib.scan``).
     Compiled, each warp holds whole rows (a thread one channel), so a thread scans its rows
     in sequence (16 of them for a 128 x 32 tile on 8 warps) and the warps' partial results
     are combined through shared memory (the 32 KiB in the resource table);
  4. store the tile of states; its last row is the carry into the next chunk.

Reverse runs the same loop from t = T - 1 down: row i of the tile is step t = t0 - i, by index
arithmetic, not a flipped copy. The tail chunk's rows past the sequence are masked (loads give
0, stores are skipped); they come after every real row in the scan's order, so they never reach
a stored state. Complex tensors enter as their ``view_as_real`` (B, T, D, 2) float32 planes: the
kernel loads (BLOCK_T, BLOCK_D, 2) tiles (8-byte pairs, contiguous), ``tl.split``s them into real
and imaginary planes, scans the four planes with the complex combine written out in real
arithmetic (``combine_complex``), and ``tl.join``s the result for the store (the compiler
moves the pairs between the load's layout and the scan's through shared memory, not HBM).

Why one pass: a memory-traffic model. The combine costs a few FLOPs per element against 8 to
16 bytes, far below any GPU's ridge point, so HBM traffic sets the time. Bytes per element
(``hbm_bytes``):

                         float32   complex64
    forward (this)        12 B       24 B      read a, b; write h
    backward (this)       20 B       40 B      read a, dh, h; write db (= g) and da
    3-phase forward       20 B       40 B      a, b read twice: chunk totals, then the fix-up

The one pass reads every input once and writes every output once, the least any scan can move.
The other classic design, the 3-phase scan (reduce each chunk to its total (prod a, end state)
in parallel over time as well, scan the T / BLOCK_T totals, re-scan every chunk from its
incoming state; ``seqlib.scan`` does this in PyTorch, recursively), reads a and b twice: 20 B per
element instead of 12, so at full bandwidth it reaches 60% of the one pass's speed. Decoupled
look-back (CUB's single-pass scan) has both the parallelism and the 12 B, but its programs
spin-wait on flags that their predecessors publish, which the interpreter, running programs one
after another, would deadlock on.

What the one pass gives up is parallelism over time: it runs B * ceil(D / BLOCK_D) programs. A
memory-bound kernel reaches the HBM bandwidth only with enough bytes in flight (Little's law:
bandwidth times latency, with a DRAM latency of about 0.5 us: 1.0 MB on an A100 at 2.0 TB/s,
1.7 MB on an H100 SXM at 3.35 TB/s), and a program has one tile of a and b in flight at a time
(32 KiB: 128 x 32 float32 or 64 x 32 complex64 elements of each). ``bandwidth_fraction`` is that
bound, min(1, programs * tile bytes / (bandwidth * latency)), and ``roofline_seconds`` the time
at it. For the benchmark shape of chapter 3 (B = 4, D = 256, float32: 32 programs, 1 MiB in
flight) and T = 4096, the forward moves 50 MB: at best 25 us on an A100 (100% of its HBM
bandwidth by this model) and 24 us on an H100 (63%: too few programs; it needs 52, i.e.
B D >= 1664 channels, to reach its 15 us); the 3-phase scan's floors are 42 us and 25 us. These
are upper bounds from a model, not measurements (this book's machines have no GPU): the scan
and the store of a tile do not overlap the next tile's loads (the loop is not software-
pipelined), which costs more the fewer programs share an SM; ``python -m seqlib.aot`` shows the
registers (128 to 176 per thread, 8 warps: one or two programs per SM) and no spills.

Backward, a second kernel that runs the same loop the other way in time. With g_t the gradient
reaching h_t from every path (``seqlib.scan``):
    g_t = dh_t + conj(a_{t+1}) g_{t+1}       a reverse scan whose coefficients are a read one row
                                             shifted (index arithmetic again, no copy), conjugated
    da_t = g_t conj(h_{t-1}),  db_t = g_t    fused: the kernel reads h one row shifted (h0, or
                                             0, before the first step) and writes da next to g
    dh0 = conj(a_0) g_0                      in PyTorch: (B, D), negligible
Fusing da saves traffic: unfused, the kernel would write g (12 B per element) and PyTorch would
then read g and h, build h_{t-1} (a shifted copy of h) and write da (another 20 B): 32 B against
the fused 20 B.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from seqlib.kernels._common import (check_devices, check_dtype, check_shape,
                                    require_interpreter_on_cpu)

__all__ = ["linear_scan_triton", "LinearScanTriton", "scan_forward", "scan_backward",
           "combine_real", "combine_complex", "tile_sizes", "hbm_bytes", "bandwidth_fraction",
           "roofline_seconds", "AOT_CONFIGS", "SPILL_OK"]

DTYPES = (torch.float32, torch.complex64)
# Tiles: BLOCK_T * BLOCK_D * 8 bytes of a and b per load (32 KiB) for either dtype; a complex
# element holds two fp32 planes, so its tile has half the rows.
BLOCK_T_REAL, BLOCK_T_COMPLEX, BLOCK_D = 128, 64, 32
NUM_WARPS = 8  # 4 would spill (sm_90) or reach 255 registers: each thread would hold 32 rows
DRAM_LATENCY = 0.5e-6  # seconds; an assumption for the Little's-law model (A100 and H100 alike)


def linear_scan_triton(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None,
                       reverse: bool = False, *, block_t: int | None = None,
                       block_d: int | None = None) -> torch.Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t (t = 0..T-1, h_{-1} = h0 or 0), by the kernel.

    a, b: (B, T, D), both float32 or both complex64; h0: (B, D) of that dtype, or None; all on one
    device. ``reverse=True`` runs from t = T-1 down (h_t = a_t * h_{t+1} + b_t). Returns h
    (B, T, D) of the input dtype, differentiable with respect to a, b and h0. ``block_t`` and
    ``block_d`` override the tile (powers of two; tests use small tiles to cross chunk
    boundaries at small T). On CPU tensors it runs under the Triton interpreter, which needs
    ``TRITON_INTERPRET=1`` set before triton is first imported (importing ``seqlib.kernels``
    without CUDA does that).
    """
    a, b, h0 = _check_inputs(a, b, h0)
    if b.numel() == 0:  # nothing to scan; keep the graph for autograd
        return b.clone()
    return LinearScanTriton.apply(a, b, h0, bool(reverse), block_t, block_d)


class LinearScanTriton(torch.autograd.Function):
    """Autograd wrapper: the forward kernel, and the backward kernel (g and da) plus dh0."""

    @staticmethod
    def forward(ctx, a, b, h0, reverse=False, block_t=None, block_d=None):
        h = scan_forward(a, b, h0, reverse, block_t=block_t, block_d=block_d)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.blocks = reverse, (block_t, block_d)
        return h

    @staticmethod
    def backward(ctx, dh):
        a, h, h0 = ctx.saved_tensors
        da, db, dh0 = scan_backward(dh.contiguous().resolve_conj(), a, h, h0, ctx.reverse,
                                    block_t=ctx.blocks[0], block_d=ctx.blocks[1])
        return da, db, dh0, None, None, None


def tile_sizes(is_complex: bool, block_t: int | None = None,
               block_d: int | None = None) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_D) for a dtype, or the overrides (powers of two) where given."""
    bt = (BLOCK_T_COMPLEX if is_complex else BLOCK_T_REAL) if block_t is None else block_t
    bd = BLOCK_D if block_d is None else block_d
    for name, v in (("block_t", bt), ("block_d", bd)):
        if not isinstance(v, int) or v < 2 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 2, got {v!r}")
    return bt, bd


def scan_forward(a, b, h0=None, reverse=False, out=None, block_t=None, block_d=None):
    """Launch the forward kernel on checked, contiguous inputs; returns h (B, T, D).

    ``out`` is an optional (B, T, D) buffer of the input dtype (tests pre-fill it with NaN); by
    default h is allocated uninitialised: a NaN fill would cost a third more HBM traffic.
    """
    B, T, D = a.shape
    bt, bd = tile_sizes(a.is_complex(), block_t, block_d)
    require_interpreter_on_cpu(a, "linear_scan_triton")
    h = torch.empty_like(b) if out is None else out
    grid = (B * triton.cdiv(D, bd),)
    _scan_fwd_kernel[grid](_planes(a), _planes(b), _planes(a if h0 is None else h0), _planes(h),
                           T, D, BLOCK_T=bt, BLOCK_D=bd, COMPLEX=a.is_complex(),
                           REVERSE=bool(reverse), HAS_H0=h0 is not None, num_warps=NUM_WARPS)
    return h


def scan_backward(dh, a, h, h0=None, reverse=False, out=None, block_t=None, block_d=None):
    """Launch the backward kernel; returns (da, db, dh0): (B, T, D), (B, T, D), (B, D) or None.

    dh is the upstream gradient of h, h the forward's output, ``reverse`` the forward's
    direction. db is g, the reverse scan of dh; dh0 = conj(a_first) g_first is computed here in
    PyTorch. ``out`` is an optional pair of (da, db) buffers, for NaN-filled tests.
    """
    B, T, D = a.shape
    bt, bd = tile_sizes(a.is_complex(), block_t, block_d)
    require_interpreter_on_cpu(a, "linear_scan_triton")
    da, g = (torch.empty_like(a), torch.empty_like(a)) if out is None else out
    grid = (B * triton.cdiv(D, bd),)
    _scan_bwd_kernel[grid](_planes(a), _planes(dh), _planes(h), _planes(a if h0 is None else h0),
                           _planes(g), _planes(da), T, D, BLOCK_T=bt, BLOCK_D=bd,
                           COMPLEX=a.is_complex(), REVERSE=bool(reverse), HAS_H0=h0 is not None,
                           num_warps=NUM_WARPS)
    dh0 = None
    if h0 is not None:  # h0 enters only the first step of the forward: h_first = a_first h0 + ...
        first = T - 1 if reverse else 0
        dh0 = a[:, first].conj() * g[:, first]
    return da, g, dh0


def _planes(x):
    """What a kernel pointer sees: float32 itself, or complex64 as (..., 2) float32 planes."""
    return torch.view_as_real(x) if x.is_complex() else x


# --------------------------------------------------------------------------- the combine


@triton.jit
def combine_real(a1, b1, a2, b2):
    """(a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2): first step 1, then step 2."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def combine_complex(ar1, ai1, br1, bi1, ar2, ai2, br2, bi2):
    """``combine_real`` for complex a and b given as real and imaginary planes (ar + i ai, ...):
    (a1 a2, a2 b1 + b2) with the complex products written out in real arithmetic."""
    return (ar1 * ar2 - ai1 * ai2, ar1 * ai2 + ai1 * ar2,
            ar2 * br1 - ai2 * bi1 + br2, ar2 * bi1 + ai2 * br1 + bi2)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _tile_offsets(i, cols, D, COMPLEX: tl.constexpr):
    """Offsets of a tile whose row i is i steps of time away (i may be negative) from its
    first row: (BLOCK_T, BLOCK_D), or (BLOCK_T, BLOCK_D, 2) float offsets of complex pairs."""
    offs = i[:, None] * D + cols[None, :]
    if COMPLEX:
        offs = offs[:, :, None] * 2 + tl.arange(0, 2)[None, None, :]
    return offs


@triton.jit
def _tile_mask(rows_ok, cols_ok, COMPLEX: tl.constexpr):
    mask = rows_ok[:, None] & cols_ok[None, :]
    if COMPLEX:
        mask = tl.broadcast_to(mask[:, :, None], (mask.shape[0], mask.shape[1], 2))
    return mask


@triton.jit
def _last_row(x, is_last):
    """Row BLOCK_T - 1 of a (BLOCK_T, BLOCK_D) tile, as a (BLOCK_D,) vector."""
    return tl.sum(tl.where(is_last, x, 0.0), axis=0)


@triton.jit
def _load_complex_state(ptr, batch, cols, col_ok, D):
    """Real and imaginary planes of a complex (B, D) state's row ``batch`` at ``cols``."""
    offs = (batch * D + cols)[:, None] * 2 + tl.arange(0, 2)[None, :]
    return tl.split(tl.load(ptr + offs, mask=col_ok[:, None], other=0.0))


@triton.jit
def _channels(D, BLOCK_D: tl.constexpr):
    """This program's batch element and its BLOCK_D channels (the grid is B * ceil(D / BLOCK_D))."""
    n_dblk = tl.cdiv(D, BLOCK_D)
    batch = tl.program_id(0) // n_dblk
    cols = (tl.program_id(0) % n_dblk) * BLOCK_D + tl.arange(0, BLOCK_D)
    return batch, cols


@triton.jit
def _scan_fwd_kernel(a_ptr, b_ptr, h0_ptr, h_ptr, T, D,
                     BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, COMPLEX: tl.constexpr,
                     REVERSE: tl.constexpr, HAS_H0: tl.constexpr):
    """One program: BLOCK_D channels of one batch element, all T steps in chunks of BLOCK_T."""
    W: tl.constexpr = 2 if COMPLEX else 1      # floats per element
    SIGN: tl.constexpr = -1 if REVERSE else 1  # time step between a tile's consecutive rows
    batch, cols = _channels(D, BLOCK_D)
    col_ok = cols < D
    i = tl.arange(0, BLOCK_T)
    offs = _tile_offsets(SIGN * i, cols, D, COMPLEX)  # int32 within a tile; the base is int64
    first = (i == 0)[:, None]
    last = (i == BLOCK_T - 1)[:, None]
    seq = batch.to(tl.int64) * T * D * W  # this batch element's (T, D) slab

    # The carry: the state entering the next chunk (h0, or 0).
    if COMPLEX:
        if HAS_H0:
            cr, ci = _load_complex_state(h0_ptr, batch, cols, col_ok, D)
        else:
            cr = tl.zeros((BLOCK_D,), tl.float32)
            ci = tl.zeros((BLOCK_D,), tl.float32)
    else:
        if HAS_H0:
            cr = tl.load(h0_ptr + batch * D + cols, mask=col_ok, other=0.0)
        else:
            cr = tl.zeros((BLOCK_D,), tl.float32)

    for s0 in range(0, T, BLOCK_T):  # s0: steps done, in the scan's order
        if REVERSE:
            t0 = T - 1 - s0
        else:
            t0 = s0
        base = seq + t0.to(tl.int64) * D * W
        ok = _tile_mask(s0 + i < T, col_ok, COMPLEX)
        if COMPLEX:
            ar, ai = tl.split(tl.load(a_ptr + base + offs, mask=ok, other=0.0))
            br, bi = tl.split(tl.load(b_ptr + base + offs, mask=ok, other=0.0))
            br = tl.where(first, br + ar * cr[None, :] - ai * ci[None, :], br)
            bi = tl.where(first, bi + ar * ci[None, :] + ai * cr[None, :], bi)
            _, _, hr, hi = tl.associative_scan((ar, ai, br, bi), 0, combine_complex)
            tl.store(h_ptr + base + offs, tl.join(hr, hi), mask=ok)
            cr = _last_row(hr, last)
            ci = _last_row(hi, last)
        else:
            a = tl.load(a_ptr + base + offs, mask=ok, other=0.0)
            b = tl.load(b_ptr + base + offs, mask=ok, other=0.0)
            b = tl.where(first, b + a * cr[None, :], b)
            _, h = tl.associative_scan((a, b), 0, combine_real)
            tl.store(h_ptr + base + offs, h, mask=ok)
            cr = _last_row(h, last)


@triton.jit
def _scan_bwd_kernel(a_ptr, dh_ptr, h_ptr, h0_ptr, g_ptr, da_ptr, T, D,
                     BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, COMPLEX: tl.constexpr,
                     REVERSE: tl.constexpr, HAS_H0: tl.constexpr):
    """The forward's loop run the other way in time (REVERSE is the forward's direction):
    g_t = dh_t + conj(a_prev) g_prev over this kernel's order, where "prev" is the step this
    kernel did before (the forward's next step); and da_t = g_t conj(h_next), "next" being the
    step this kernel does next (the forward's previous step; h0 or 0 beyond the end)."""
    W: tl.constexpr = 2 if COMPLEX else 1
    SIGN: tl.constexpr = 1 if REVERSE else -1  # this kernel's time step between rows
    batch, cols = _channels(D, BLOCK_D)
    col_ok = cols < D
    i = tl.arange(0, BLOCK_T)
    offs = _tile_offsets(SIGN * i, cols, D, COMPLEX)
    row = SIGN * D * W  # from a row of the tile to the next one in this kernel's order
    first = (i == 0)[:, None]
    last = (i == BLOCK_T - 1)[:, None]
    seq = batch.to(tl.int64) * T * D * W

    if COMPLEX:
        if HAS_H0:  # h_{-1}: what da reads beyond the forward's first step
            pr, pi = _load_complex_state(h0_ptr, batch, cols, col_ok, D)
        else:
            pr = tl.zeros((BLOCK_D,), tl.float32)
            pi = tl.zeros((BLOCK_D,), tl.float32)
        cr = tl.zeros((BLOCK_D,), tl.float32)
        ci = tl.zeros((BLOCK_D,), tl.float32)
    else:
        if HAS_H0:
            pr = tl.load(h0_ptr + batch * D + cols, mask=col_ok, other=0.0)
        else:
            pr = tl.zeros((BLOCK_D,), tl.float32)
        cr = tl.zeros((BLOCK_D,), tl.float32)

    for s0 in range(0, T, BLOCK_T):
        if REVERSE:
            t0 = s0
        else:
            t0 = T - 1 - s0
        base = seq + t0.to(tl.int64) * D * W
        s = s0 + i
        ok = _tile_mask(s < T, col_ok, COMPLEX)
        ok_a = _tile_mask((s >= 1) & (s < T), col_ok, COMPLEX)  # no coefficient at s = 0
        ok_h = _tile_mask(s < T - 1, col_ok, COMPLEX)           # h0 (or 0) at s = T - 1
        at_h0 = (s == T - 1)[:, None]
        if COMPLEX:
            ar, ai = tl.split(tl.load(a_ptr + base + offs - row, mask=ok_a, other=0.0))
            ai = -ai  # conj(a)
            gr, gi = tl.split(tl.load(dh_ptr + base + offs, mask=ok, other=0.0))
            gr = tl.where(first, gr + ar * cr[None, :] - ai * ci[None, :], gr)
            gi = tl.where(first, gi + ar * ci[None, :] + ai * cr[None, :], gi)
            _, _, gr, gi = tl.associative_scan((ar, ai, gr, gi), 0, combine_complex)
            tl.store(g_ptr + base + offs, tl.join(gr, gi), mask=ok)
            hr, hi = tl.split(tl.load(h_ptr + base + offs + row, mask=ok_h, other=0.0))
            hr = tl.where(at_h0, pr[None, :], hr)
            hi = tl.where(at_h0, pi[None, :], hi)
            # da = g conj(h_prev)
            tl.store(da_ptr + base + offs, tl.join(gr * hr + gi * hi, gi * hr - gr * hi), mask=ok)
            cr = _last_row(gr, last)
            ci = _last_row(gi, last)
        else:
            a = tl.load(a_ptr + base + offs - row, mask=ok_a, other=0.0)
            g = tl.load(dh_ptr + base + offs, mask=ok, other=0.0)
            g = tl.where(first, g + a * cr[None, :], g)
            _, g = tl.associative_scan((a, g), 0, combine_real)
            tl.store(g_ptr + base + offs, g, mask=ok)
            hp = tl.load(h_ptr + base + offs + row, mask=ok_h, other=0.0)
            hp = tl.where(at_h0, pr[None, :], hp)
            tl.store(da_ptr + base + offs, g * hp, mask=ok)
            cr = _last_row(g, last)


# --------------------------------------------------------------------------- input checks


def _check_inputs(a, b, h0):
    hint = "the kernel computes in fp32; cast with .float() or .to(torch.complex64)"
    check_dtype(DTYPES, hint, a=a)
    check_dtype((a.dtype,), "the dtype of a", b=b)
    if a.dim() != 3:
        raise ValueError(f"a must have shape (B, T, D), got {tuple(a.shape)}")
    B, T, D = a.shape
    check_shape("b", b, (B, T, D), "(B, T, D)", f"a {tuple(a.shape)}")
    tensors = {"b": b}
    if h0 is not None:
        check_dtype((a.dtype,), "the dtype of a", h0=h0)
        check_shape("h0", h0, (B, D), "(B, D)", f"a {tuple(a.shape)}")
        tensors["h0"] = h0
    check_devices("a", a, **tensors)
    prep = lambda t: None if t is None else t.resolve_conj().contiguous()  # noqa: E731
    return prep(a), prep(b), prep(h0)


# --------------------------------------------------------------------------- cost model


def hbm_bytes(B: int, T: int, D: int, is_complex: bool = False, backward: bool = False,
              passes: int = 1) -> int:
    """HBM bytes a scan must move: forward reads a, b and writes h (3 values per element);
    the fused backward reads a, dh, h and writes db, da (5). ``passes=2`` counts a 3-phase
    forward, which reads a and b twice (5 values)."""
    values = (5 if backward else 3) + (2 if passes == 2 and not backward else 0)
    return values * B * T * D * (8 if is_complex else 4)


def bandwidth_fraction(B: int, D: int, gpu: str = "A100", block_d: int = BLOCK_D,
                       tile_bytes: int | None = None) -> float:
    """Little's-law bound on the fraction of ``gpu``'s HBM bandwidth the one-pass kernel can use:
    B ceil(D / block_d) programs, each with one tile of loads (``tile_bytes``, default a
    BLOCK_T_REAL x BLOCK_D tile of a and b: 32 KiB) in flight, against bandwidth x DRAM_LATENCY."""
    from seqlib.perf import GPUS

    tile_bytes = BLOCK_T_REAL * block_d * 8 if tile_bytes is None else tile_bytes
    programs = B * -(-D // block_d)
    return min(1.0, programs * tile_bytes / (GPUS[gpu]["hbm"] * DRAM_LATENCY))


def roofline_seconds(B: int, T: int, D: int, gpu: str = "A100", is_complex: bool = False,
                     backward: bool = False) -> float:
    """The one-pass kernel's time at ``bandwidth_fraction`` of ``gpu``'s HBM bandwidth."""
    from seqlib.perf import GPUS

    bw = GPUS[gpu]["hbm"] * bandwidth_fraction(B, D, gpu)
    return hbm_bytes(B, T, D, is_complex, backward) / bw


# --------------------------------------------------------------------------- ahead-of-time configs
# Read by ``python -m seqlib.aot``: the forward and backward launches for float32 and complex64
# with an initial state (the HAS_H0 = False variants only drop a load), and float32 in reverse
# (only the index arithmetic differs, for either dtype). T and D are runtime i32 arguments.

_POINTERS = {"fwd": ["a_ptr", "b_ptr", "h0_ptr", "h_ptr"],
             "bwd": ["a_ptr", "dh_ptr", "h_ptr", "h0_ptr", "g_ptr", "da_ptr"]}


def _aot_config(direction, is_complex, reverse=False):
    bt, bd = tile_sizes(is_complex)
    signature = {p: "*fp32" for p in _POINTERS[direction]}
    signature.update({"T": "i32", "D": "i32", "BLOCK_T": "constexpr", "BLOCK_D": "constexpr",
                      "COMPLEX": "constexpr", "REVERSE": "constexpr", "HAS_H0": "constexpr"})
    kind = "complex64" if is_complex else "float32"
    return {
        "id": f"scan_{direction} {kind}" + (" reverse" if reverse else ""),
        "kernel": f"_scan_{direction}_kernel",
        "signature": signature,
        "constexprs": {"BLOCK_T": bt, "BLOCK_D": bd, "COMPLEX": is_complex, "REVERSE": reverse,
                       "HAS_H0": True},
        "options": {"num_warps": NUM_WARPS},
        "config": f"{kind} BLOCK_T={bt} BLOCK_D={bd} warps={NUM_WARPS} h0"
                  + (" reverse" if reverse else ""),
        "tensor_cores": False,  # no tl.dot
    }


AOT_CONFIGS = ([_aot_config(d, c) for c in (False, True) for d in ("fwd", "bwd")]
               + [_aot_config(d, False, reverse=True) for d in ("fwd", "bwd")])

# Configs allowed to spill, and why: none.
SPILL_OK: dict[str, str] = {}
