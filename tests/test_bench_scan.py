"""`python -m seqlib.bench scan`: the parallel scan against the loop and the memory floor, tiny sizes."""
import math
import subprocess
import sys

import pytest
import torch

from seqlib.bench import BENCHMARKS, bench_scan, format_rows

TINY = dict(B=2, D=3, T=(40, 70), repeats=2, warmup=1)


def test_bench_scan_rows():
    rows = bench_scan(**TINY)
    assert [(r["T"], r["phase"]) for r in rows] == [(40, "forward"), (40, "fwd+bwd"),
                                                    (70, "forward"), (70, "fwd+bwd")]
    for r in rows:
        for name in ("floor", "scan", "loop"):
            assert r[f"{name} ms"] > 0
        assert r["scan / floor"] == pytest.approx(r["scan ms"] / r["floor ms"])
        assert r["loop / scan"] == pytest.approx(r["loop ms"] / r["scan ms"])
        passes = (r["reduce / floor"], r["rescan / floor"])
        if r["phase"] == "forward":   # T = 40 and 70 are chunked (C = 8): both passes timed
            assert all(math.isfinite(x) and x > 0 for x in passes)
        else:
            assert all(math.isnan(x) for x in passes)
    assert "fwd+bwd" in format_rows(rows) and BENCHMARKS["scan"] is bench_scan


def test_bench_scan_accepts_one_length_and_checks_repeats():
    assert [r["T"] for r in bench_scan(B=1, D=2, T=5, repeats=1, warmup=0)] == [5, 5]
    with pytest.raises(ValueError, match="repeats"):
        bench_scan(B=1, D=2, T=5, repeats=0)


def test_the_timed_passes_are_the_scans_own():
    """The benchmark times _reduce_chunks and _rescan_chunks on their own; together with the
    chunk-state scan between them they are the scan, so they must compose to linear_scan."""
    from seqlib.scan import _chunk_length, _reduce_chunks, _rescan_chunks, linear_scan_sequential
    g = torch.Generator().manual_seed(0)
    B, T, D = 2, 64, 3
    a, b = torch.rand(B, T, D, generator=g, dtype=torch.float64), torch.randn(B, T, D, generator=g, dtype=torch.float64)
    C = _chunk_length(T)
    n = T // C
    chunks = lambda x: x.unflatten(1, (n, C))  # noqa: E731
    prod_a, end = _reduce_chunks(chunks(a), chunks(b))
    h_in = torch.zeros(B, n, D, dtype=a.dtype)
    h_in[:, 1:] = linear_scan_sequential(prod_a[:, :-1], end[:, :-1])   # the state entering each chunk
    h = _rescan_chunks(chunks(a), chunks(b), h_in, chunks(torch.empty_like(b))).flatten(1, 2)
    torch.testing.assert_close(h, linear_scan_sequential(a, b))


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "seqlib.bench", "scan", "--B", "2", "--D", "3",
                          "--T", "16", "40", "--repeats", "1", "--warmup", "0", "--threads", "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "scan / floor" in out and "loop ms" in out and "1 threads" in out
    assert "best of 1 repeats" in out    # the scan benchmark reports the best repeat
    assert out.count("fwd+bwd") == 2
