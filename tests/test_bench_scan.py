"""`python -m seqlib.bench scan`: the parallel scan against the loop and the memory floor, tiny sizes."""
import subprocess
import sys

import pytest

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
    assert "fwd+bwd" in format_rows(rows) and BENCHMARKS["scan"] is bench_scan


def test_bench_scan_accepts_one_length_and_checks_repeats():
    assert [r["T"] for r in bench_scan(B=1, D=2, T=5, repeats=1, warmup=0)] == [5, 5]
    with pytest.raises(ValueError, match="repeats"):
        bench_scan(B=1, D=2, T=5, repeats=0)


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "seqlib.bench", "scan", "--B", "2", "--D", "3",
                          "--T", "16", "40", "--repeats", "1", "--warmup", "0", "--threads", "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "scan / floor" in out and "loop ms" in out and "1 threads" in out
    assert out.count("fwd+bwd") == 2
