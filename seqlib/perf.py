"""Performance models: FLOPs and HBM bytes of a recurrent step, and the rooflines of two GPUs.

Shape letters (``book/notation.md``): B batch rows, N hidden (state) size, G gates (1 for the
Elman RNN, 3 for the GRU, 4 for the LSTM).

One step of a recurrence ``pre_t = xw_t + h_{t-1} W_hh^T`` (W_hh: (G N, N)) followed by the
gate nonlinearities and the state update, done two ways:

- **unfused** (cuDNN's way, and a PyTorch loop's): every step launches a GEMM that reads all of
  W_hh and h_{t-1} from HBM, then pointwise work that reads the state(s) back;
- **fused** (FlashRNN's way, ``seqlib.kernels``): W_hh and the state stay on chip for all T
  steps; a step reads only xw_t and writes only h_t.

``step_cost`` counts the traffic each way must do at least. It leaves out what a real unfused
step adds on top (the G B N pre-activations written by the GEMM and read back by the pointwise
kernel, launch latency), so it flatters the unfused step; the fused count leaves out what a
training forward also saves for backward. Chapters 1 (G = 1) and 2 (G = 3, 4) draw their
rooflines from it.
"""
from __future__ import annotations

__all__ = ["GPUS", "step_cost", "roofline_seconds", "ridge_point", "peak_memory_bytes"]

# Dense peaks from the vendors' data sheets: HBM bytes/s and FLOP/s per arithmetic.
GPUS = {
    "A100": {"hbm": 2.0e12, "fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12},
    "H100 SXM": {"hbm": 3.35e12, "fp32": 67e12, "tf32": 495e12, "bf16": 989e12},
}


def step_cost(B: int, N: int, gates: int, fused: bool, bytes_per: int = 4,
              states: int | None = None) -> dict:
    """FLOPs, HBM bytes and arithmetic intensity (FLOP/byte) of one recurrent step for B rows.

    gates: G, the number of (N, N) blocks in W_hh (RNN 1, GRU 3, LSTM 4). states: how many
    (B, N) states the cell carries (the LSTM's h and c: 2); by default 2 for G = 4, else 1.
    FLOPs: 2 B N (G N) for the product, plus 4 per gate element for the add and activation.
    Bytes, fused: read xw_t (G B N values), write h_t (B N). Unfused adds, per step, W_hh
    (G N^2) and every state read back (states B N), and the cell state written (states - 1) B N.
    For G = 1 this is the model of chapter 1: 2 B N values fused, + N^2 + B N unfused.
    """
    for name, v in (("B", B), ("N", N), ("gates", gates), ("bytes_per", bytes_per)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    states = (2 if gates == 4 else 1) if states is None else states
    flops = 2 * B * N * gates * N + 4 * gates * B * N
    values = gates * B * N + B * N
    if not fused:
        values += gates * N * N + states * B * N + (states - 1) * B * N
    hbm_bytes = values * bytes_per
    return {"flops": flops, "hbm_bytes": hbm_bytes, "intensity": flops / hbm_bytes}


def ridge_point(gpu: str, math: str = "fp32") -> float:
    """FLOP/byte at which ``gpu`` turns from memory-bound to compute-bound for ``math``."""
    spec = GPUS[gpu]
    return spec[math] / spec["hbm"]


def roofline_seconds(cost: dict, gpu: str, math: str = "fp32") -> float:
    """The roofline floor of a step: max(bytes / bandwidth, FLOPs / peak), in seconds."""
    spec = GPUS[gpu]
    return max(cost["hbm_bytes"] / spec["hbm"], cost["flops"] / spec[math])


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    raise RuntimeError(f"/proc/self/status has no {key} line")


def peak_memory_bytes(fn, *args, **kwargs) -> tuple[int, object]:
    """Run ``fn(*args, **kwargs)`` and return (peak resident memory it added, in bytes; its result).

    Linux only: writing 5 to ``/proc/self/clear_refs`` resets the process's high-water mark of
    resident memory (VmHWM) to the current resident size, so VmHWM after the call minus VmRSS
    before it is the most memory the call held at once, whatever allocated it (PyTorch's CPU
    allocator included, which Python's tracemalloc does not see). Memory the allocator had freed
    earlier and hands out again is not counted, so small peaks read low (even 0): compare peaks
    that are large against the process's free pool, megabytes and up.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_bytes("VmRSS")
    except OSError as e:  # not Linux, or /proc not mounted
        raise RuntimeError("peak_memory_bytes needs Linux's /proc/self/clear_refs") from e
    result = fn(*args, **kwargs)
    return max(0, _status_bytes("VmHWM") - before), result
