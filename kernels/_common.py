"""What the recurrent kernels (rnn, lstm, gru) share: tile sizes, the tanh they can all compile,
input checks with clear messages, and the guard against CPU tensors without the interpreter.
The scan kernel (scan.py) uses the input checks and the guard.

Private to ``seqlib.kernels``; the public face of each kernel is its own module.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

PRECISIONS = ("ieee", "tf32")
BLOCK_B = 16  # batch rows per program; tl.dot needs every dimension >= 16 on a GPU


def block_sizes(N: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_N) for a hidden size N: BLOCK_N is the next power of two >= max(N, 16)."""
    return BLOCK_B, max(16, triton.next_power_of_2(N))


def num_warps_for(precision: str) -> int:
    """Warps per program. The fp32 FMA dot ("ieee") holds more operand copies per thread than the
    tensor-core one, so it gets 8 warps to stay within 255 registers (see ``python -m seqlib.aot``)."""
    return 8 if precision == "ieee" else 4


@triton.jit
def _tanh(x):
    # No tanh in tl under the interpreter; 2 sigmoid(2x) - 1 is exact and stable for large |x|.
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


# --------------------------------------------------------------------------- input checks


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def check_float32(**tensors):
    """TypeError unless every keyword argument is a float32 torch.Tensor."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != torch.float32:
            raise TypeError(f"{name} must have dtype torch.float32, got {t.dtype} "
                            "(the kernel computes in fp32; cast with .float())")


def check_dtype(allowed, hint, **tensors):
    """TypeError unless every keyword argument is a torch.Tensor with a dtype in ``allowed``;
    ``hint`` ends the message (how to convert)."""
    names = " or ".join(str(d) for d in allowed)
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in allowed:
            raise TypeError(f"{name} must have dtype {names}, got {t.dtype} ({hint})")


def check_devices(ref_name, ref, **tensors):
    """ValueError unless every tensor is on ref's (named ``ref_name``) device, and that device is a
    CPU or a CUDA GPU."""
    for name, t in tensors.items():
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                             "all inputs must be on the same device")
    if ref.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{ref_name} must be on a cpu or cuda device, got {ref.device}")


def check_shape(name, t, expected, letters, against):
    """ValueError unless t.shape == expected; ``letters`` names the dims, ``against`` the reason."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {letters} = {tuple(expected)} to match {against}, "
                         f"got {tuple(t.shape)}")


def check_same_device(xw, **tensors):
    """ValueError unless every tensor is on xw's device, and that device is a CPU or a CUDA GPU."""
    check_devices("xw", xw, **tensors)


def check_slab_fits_int32(xw):
    """The gated kernels index one step's (B, G N) slab of xw with int32 offsets."""
    if xw.shape[1] * xw.shape[2] >= 2**31:
        raise ValueError(f"xw: one time step holds B * G N = {xw.shape[1] * xw.shape[2]} elements, "
                         f"more than the kernel's int32 offsets reach (2^31); split the batch")


def check_lengths(lengths, B, T, device):
    """None, or (B,) integer lengths in 0..T on the CPU or on ``device``; returns int32 on device.

    A sequence's state stops changing after its step lengths[b] - 1 (0: it keeps its initial
    state). None means every sequence has length T.
    """
    if lengths is None:
        return lengths_arg(None, B, T, device)
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths must be a torch.Tensor of shape (B,) or None, got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must have an integer dtype, got {lengths.dtype}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    if lengths.device.type != "cpu" and lengths.device != device:
        raise ValueError(f"lengths is on {lengths.device}; give it on the cpu or on xw's device {device}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(f"lengths must lie in 0..T = 0..{T}, got min {int(lengths.min())}, "
                         f"max {int(lengths.max())}")
    return lengths_arg(lengths, B, T, device)


def lengths_arg(lengths, B, T, device):
    """What the kernels read: (B,) int32 lengths on ``device`` (all T when lengths is None)."""
    if lengths is None:
        return torch.full((B,), T, dtype=torch.int32, device=device)
    return lengths.to(device=device, dtype=torch.int32).contiguous()


# --------------------------------------------------------------------------- interpreter guard


def require_interpreter_on_cpu(t, caller):
    """RuntimeError if t is a CPU tensor but triton compiles kernels for a GPU (no interpreter)."""
    if t.device.type == "cpu" and not is_interpreted(_tanh):
        raise RuntimeError(
            f"{caller} got CPU tensors, but triton was imported without "
            "TRITON_INTERPRET=1, so its kernels are compiled for a GPU. Set the environment "
            "variable TRITON_INTERPRET=1 before triton is first imported (for example at the "
            "top of the notebook, or import seqlib.kernels first), or move the tensors to CUDA. "
            f"TRITON_INTERPRET is currently {os.environ.get('TRITON_INTERPRET')!r}.")


def is_interpreted(kernel) -> bool:
    """Whether a @triton.jit function runs in the interpreter (decided when it was decorated)."""
    return type(kernel).__name__ == "InterpretedFunction"


# --------------------------------------------------------------------------- gated kernels (lstm, gru)

BLOCK_K = 16  # rows of W_hh per chunk when it is read from memory at every step
# Largest W_hh (padded, fp32) that a program keeps on chip for the whole sequence: the LSTM's
# 4 blocks at N <= 64 take 64 KiB, the GRU's 3 take 48 KiB. At N = 128 they would take 256 and
# 192 KiB, more than an SM's shared memory (A100: 164 KiB, H100: 228 KiB) and as much as its
# whole register file (256 KiB), so the kernels stream W_hh from L2 instead.
W_ON_CHIP_BYTES = 128 * 1024


def weights_fit_on_chip(gates: int, N: int) -> bool:
    """Whether the gates (N, N) blocks of W_hh, padded to BLOCK_N and in fp32, fit W_ON_CHIP_BYTES."""
    return gates * block_sizes(N)[1] ** 2 * 4 <= W_ON_CHIP_BYTES


def launch_options(precision: str, on_chip: bool, gates: int, backward: bool) -> dict:
    """num_warps / num_stages / maxnreg of a gated kernel's launch: the settings with which no
    config of ``python -m seqlib.aot`` spills (but one, see SPILL_OK in lstm.py), found by
    compiling the alternatives with triton 3.9 for sm_80 and sm_90.

    On chip, the fp32 FMA dots ("ieee") keep operand copies per thread: four gate blocks (LSTM)
    need 16 warps, three (GRU) fit in 8; tensor-core dots ("tf32") need 8. The forward kernels
    also get maxnreg, the whole register file for one program (65536 / threads): left alone,
    ptxas budgets for two programs per SM and spills, but one program per SM is the design (W_hh
    fills the shared memory). The backward kernels spill *with* it (ptxas then schedules for
    more registers than there are), so they go without. Streamed, software pipelining
    (num_stages > 1) only adds live registers to a loop that waits on L2 anyway.
    """
    if not on_chip:
        return {"num_warps": 8 if precision == "ieee" else 16, "num_stages": 1}
    warps = 16 if precision == "ieee" and gates > 3 else 8
    if backward:
        return {"num_warps": warps}
    return {"num_warps": warps, "maxnreg": min(255, 65536 // (32 * warps))}


@triton.jit
def _gate_block(w_ptr, k, N, cols, col_ok, TRANSPOSE: tl.constexpr):
    """Gate k's (N, N) block of W_hh (rows k N .. k N + N - 1), zero-padded to BLOCK_N x BLOCK_N;
    transposed (out[m, j] = W_hh[k N + j, m]) for the forward product h @ W_k^T."""
    wmask = col_ok[:, None] & col_ok[None, :]
    if TRANSPOSE:
        return tl.load(w_ptr + (k * N + cols[None, :]) * N + cols[:, None], mask=wmask, other=0.0)
    return tl.load(w_ptr + (k * N + cols[:, None]) * N + cols[None, :], mask=wmask, other=0.0)





@triton.jit
def _dot_w_streamed(a_ptr, a_stride, rows, row_ok, w_ptr, g, N,
                    TRANSPOSE_W: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(BLOCK_B, BLOCK_N) = A @ W_g^T (TRANSPOSE_W) or A @ W_g, with W_g = w[g N : g N + N, :].

    A is read from memory: row r of it is a_ptr + r * a_stride + (0..N-1). W_g is read BLOCK_K
    rows of the contraction at a time, so that no more than a (BLOCK_K, BLOCK_N) chunk of it is
    live: the kernels take this path when all of W_hh would not fit on chip.
    """
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, N, BLOCK_K):
        k = k0 + ks
        k_ok = k < N
        a = tl.load(a_ptr + rows[:, None] * a_stride + k[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        if TRANSPOSE_W:  # chunk [k, j] = W[g N + j, k], read along W's rows (contiguous k)
            w = tl.trans(tl.load(w_ptr + (g * N + cols[:, None]) * N + k[None, :],
                                 mask=col_ok[:, None] & k_ok[None, :], other=0.0))
        else:            # chunk [k, m] = W[g N + k, m]
            w = tl.load(w_ptr + (g * N + k[:, None]) * N + cols[None, :],
                        mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
    return acc


def gated_aot_config(family: str, direction: str, n: int, precision: str, pointers: list,
                     gates: int, on_chip: bool) -> dict:
    """One ``AOT_CONFIGS`` entry for the fused LSTM or GRU kernel (``_{family}_{direction}_kernel``):
    the launch ``{family}_forward``/``_backward`` makes at hidden size n with this dot precision."""
    block_b, block_n = block_sizes(n)
    signature = {p: "*i32" if p == "len_ptr" else "*fp32" for p in pointers}
    signature.update({"T": "i32", "B": "i32", "N": "i32", "BLOCK_B": "constexpr",
                      "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "W_ON_CHIP": "constexpr",
                      "DOT_PRECISION": "constexpr"})
    options = launch_options(precision, on_chip, gates, backward=direction == "bwd")
    return {
        "id": f"{family}_{direction} N={n} {precision}",
        "kernel": f"_{family}_{direction}_kernel",
        "signature": signature,
        "constexprs": {"BLOCK_B": block_b, "BLOCK_N": block_n, "BLOCK_K": BLOCK_K,
                       "W_ON_CHIP": on_chip, "DOT_PRECISION": precision},
        "options": options,
        "config": (f"N={n} BLOCK_B={block_b} BLOCK_N={block_n} {precision} warps={options['num_warps']} "
                   f"W_hh {'on chip' if on_chip else 'per step'}"),
        "tensor_cores": precision == "tf32",
    }
