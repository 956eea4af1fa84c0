"""CPU benchmarks of seqlib's PyTorch references against PyTorch's built-in layers.

    python -m seqlib.bench gated                 # seqlib.LSTM/GRU vs torch.nn.LSTM/GRU
    python -m seqlib.bench gated --B 8 --T 16    # any size; --repeats, --warmup, --threads

Each benchmark times forward and backward separately, interleaving the two implementations in
every repeat (so a machine that is busy for a moment slows both alike), after warm-up runs, and
reports the median of the repeats (``scan``: the best, see ``bench_scan``) and the ratio
seqlib / PyTorch measured in the same run. A ratio of 1.5 means seqlib takes 1.5 times as long.

Shapes (book/notation.md): B batch, T length, D input width, N hidden size.

A benchmark is a function ``name(**sizes) -> list of row dicts`` registered in ``BENCHMARKS``;
later chapters add theirs (``scan``, ...) the same way, and ``main`` gives each a sub-command.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import seqlib

__all__ = ["time_forward_backward", "compare", "bench_gated", "format_rows", "BENCHMARKS", "main"]


def time_forward_backward(models: dict[str, nn.Module], x: torch.Tensor, repeats: int = 7,
                          warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median seconds of forward and of backward for each model on the same input.

    models: name -> module whose forward(x) returns (output, state) as torch.nn's recurrent layers
    do; x: the input. The loss is ``output.sum()``. Each repeat runs every model once, in turn.
    Returns {name: {"forward": s, "backward": s, "total": s}}.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    samples = {name: {"forward": [], "backward": [], "total": []} for name in models}
    for i in range(warmup + repeats):
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            out = model(x)[0]
            t1 = time.perf_counter()
            out.sum().backward()
            t2 = time.perf_counter()
            if i >= warmup:
                s = samples[name]
                s["forward"].append(t1 - t0), s["backward"].append(t2 - t1), s["total"].append(t2 - t0)
    return {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}


def compare(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, repeats: int = 7,
            warmup: int = 2) -> dict[str, float]:
    """Time ``ours`` against ``theirs`` (same weights) and return medians and ratios ours / theirs."""
    t = time_forward_backward({"ours": ours, "theirs": theirs}, x, repeats, warmup)
    row = {}
    for phase in ("forward", "backward", "total"):
        row[f"{phase} ms (seqlib)"] = 1e3 * t["ours"][phase]
        row[f"{phase} ms (torch)"] = 1e3 * t["theirs"][phase]
        row[f"{phase} ratio"] = t["ours"][phase] / t["theirs"][phase]
    return row


def bench_gated(B: int = 32, T: int = 128, D: int = 64, N: int = 128, repeats: int = 7,
                warmup: int = 2, seed: int = 0) -> list[dict]:
    """seqlib.LSTM / seqlib.GRU (PyTorch reference, backend="torch") against torch.nn.LSTM / GRU.

    Both read the same x (T, B, D) with the same weights (seqlib loads PyTorch's state_dict).
    Returns one row per model: sizes, median forward / backward / total milliseconds of each,
    and the ratios seqlib / torch.
    """
    torch.manual_seed(seed)
    x = torch.randn(T, B, D, requires_grad=True)
    rows = []
    for name, ours_cls, theirs_cls in (("LSTM", seqlib.LSTM, nn.LSTM), ("GRU", seqlib.GRU, nn.GRU)):
        theirs = theirs_cls(D, N)
        ours = ours_cls(D, N, backend="torch")
        ours.load_state_dict(theirs.state_dict())
        rows.append({"model": name, "B": B, "T": T, "D": D, "N": N,
                     **compare(ours, theirs, x, repeats, warmup)})
    return rows


#: sub-command -> benchmark function; later chapters register theirs here ("scan", ...).
BENCHMARKS: dict[str, Callable[..., list[dict]]] = {"gated": bench_gated}


def bench_scan(B: int = 4, D: int = 256, T: tuple[int, ...] = (256, 1024, 4096, 16384),
               repeats: int = 7, warmup: int = 2, seed: int = 0) -> list[dict]:
    """seqlib's PyTorch parallel scan (``linear_scan``, backend="torch") against the sequential
    loop (``linear_scan_sequential``) and the memory-traffic floor, float32, a, b: (B, T, D).

    The floor is one fused elementwise pass over the same tensors, ``torch.addcmul(b, a, b)``
    (a * b + b: read a and b, write one tensor, as a scan must at least); its forward+backward is
    that expression's forward and backward through autograd. "fwd+bwd" runs the forward, then
    backward with a fixed upstream gradient into a and b. The three are interleaved in every
    repeat. Returns one row per (T, phase): the best (minimum) milliseconds of the repeats and the
    ratios to the floor. The best, not the median: noise on a shared machine only adds time, and
    it hits the floor, the shortest timing, hardest. A fresh 16 MB output is sometimes memory the
    operating system must map page by page (a few ms here) and sometimes recycled, and medians of
    the floor at T = 4096 were seen to jump from 1.4 to 3.8 ms between runs, while the best held.

    The forward rows also time, in the same repeats, the scan's two passes over a and b on their
    own (``seqlib.scan._reduce_chunks`` and ``_rescan_chunks`` on the (B, T/C, C, D) chunk views):
    "reduce / floor" and "rescan / floor". Their sum bounds from below what any schedule of the
    same eager operations can reach. They are NaN where the scan is the plain loop (T <= 32) and
    in the fwd+bwd rows.
    """
    from seqlib.scan import (_chunk_length, _reduce_chunks, _rescan_chunks, linear_scan,
                             linear_scan_sequential)
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    methods = {"floor": lambda a, b: torch.addcmul(b, a, b),
               "scan": lambda a, b: linear_scan(a, b, backend="torch"),
               "loop": linear_scan_sequential}
    rows = []
    g = torch.Generator().manual_seed(seed)
    for length in (T,) if isinstance(T, int) else T:
        a = 0.5 + 0.5 * torch.rand(B, length, D, generator=g)   # |a| < 1: a stable recurrence
        b, dh = torch.randn(B, length, D, generator=g), torch.randn(B, length, D, generator=g)
        C = _chunk_length(length)
        passes = {}
        if C is not None:                       # the scan's two passes, on the chunk views
            n = length // C
            chunks = lambda x: x[:, :n * C].unflatten(1, (n, C))          # noqa: E731
            h_in = torch.zeros(B, n, D)
            passes = {"reduce": lambda a, b: _reduce_chunks(chunks(a)[:, :-1], chunks(b)[:, :-1]),
                      # (every chunk but the last, as the scan reduces)
                      "rescan": lambda a, b: _rescan_chunks(chunks(a), chunks(b), h_in,
                                                            chunks(torch.empty_like(b)))}
        for phase in ("forward", "fwd+bwd"):
            timed = {"floor": methods["floor"], "scan": methods["scan"],
                     **(passes if phase == "forward" else {}), "loop": methods["loop"]}
            samples = {name: [] for name in timed}
            for i in range(warmup + repeats):
                for name, fn in timed.items():
                    a_, b_ = (a.requires_grad_(), b.requires_grad_()) if phase == "fwd+bwd" else \
                        (a.detach(), b.detach())
                    t0 = time.perf_counter()
                    h = fn(a_, b_)
                    if phase == "fwd+bwd":
                        h.backward(dh)
                    elapsed = time.perf_counter() - t0
                    a.grad = b.grad = None
                    del h
                    if i >= warmup:
                        samples[name].append(elapsed)
            ms = {name: 1e3 * min(v) for name, v in samples.items()}
            rows.append({"T": length, "phase": phase, "floor ms": ms["floor"], "scan ms": ms["scan"],
                         "loop ms": ms["loop"], "scan / floor": ms["scan"] / ms["floor"],
                         "loop / floor": ms["loop"] / ms["floor"], "loop / scan": ms["loop"] / ms["scan"],
                         "reduce / floor": ms.get("reduce", math.nan) / ms["floor"],
                         "rescan / floor": ms.get("rescan", math.nan) / ms["floor"]})
        a.requires_grad_(False), b.requires_grad_(False)
    return rows


BENCHMARKS["scan"] = bench_scan
#: what each benchmark reports of its repeats, when not the median
REPORTED = {"scan": "best"}


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of benchmark rows (floats with 2 decimals)."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    cells = [[f"{r[k]:.2f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([line(keys), line(["-" * w for w in widths]), *map(line, cells)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m seqlib.bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="benchmark", required=True)
    gated = sub.add_parser("gated", help="seqlib.LSTM/GRU vs torch.nn.LSTM/GRU, forward and backward")
    for name, default in (("B", 32), ("T", 128), ("D", 64), ("N", 128)):
        gated.add_argument(f"--{name}", type=int, default=default)
    scan = sub.add_parser("scan", help="parallel scan vs sequential loop vs the memory floor, float32")
    scan.add_argument("--B", type=int, default=4)
    scan.add_argument("--D", type=int, default=256)
    scan.add_argument("--T", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    for p in sub.choices.values():
        p.add_argument("--repeats", type=int, default=7,
                       help="timed repeats (the median is reported; for scan, the best)")
        p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
        p.add_argument("--threads", type=int, default=os.cpu_count(),
                       help="torch.set_num_threads (default: the machine's CPU count)")
    args = vars(parser.parse_args(argv))
    name, threads = args.pop("benchmark"), args.pop("threads")
    torch.set_num_threads(threads)
    print(f"seqlib {seqlib.__version__} | torch {torch.__version__} | {threads} threads | "
          f"benchmark {name!r}: {REPORTED.get(name, 'median')} of {args['repeats']} repeats after "
          f"{args['warmup']} warm-up")
    rows = BENCHMARKS[name](**args)
    print(format_rows(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
