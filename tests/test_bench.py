"""seqlib.bench: the timing helpers and the `python -m seqlib.bench gated` command, at a tiny size."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import seqlib
from seqlib.bench import BENCHMARKS, bench_gated, format_rows, time_forward_backward

TINY = dict(B=2, T=5, D=3, N=4, repeats=2, warmup=1)


def test_bench_gated_rows():
    rows = bench_gated(**TINY)
    assert [r["model"] for r in rows] == ["LSTM", "GRU"]
    for r in rows:
        assert (r["B"], r["T"], r["D"], r["N"]) == (2, 5, 3, 4)
        for phase in ("forward", "backward", "total"):
            assert r[f"{phase} ms (seqlib)"] > 0 and r[f"{phase} ms (torch)"] > 0
            assert r[f"{phase} ratio"] == pytest.approx(r[f"{phase} ms (seqlib)"] / r[f"{phase} ms (torch)"])
    assert "LSTM" in format_rows(rows) and "gated" in BENCHMARKS


def test_time_forward_backward_runs_every_model_and_leaves_gradients():
    x = torch.randn(4, 2, 3)
    models = {"ours": seqlib.GRU(3, 4), "theirs": nn.GRU(3, 4)}
    times = time_forward_backward(models, x, repeats=2, warmup=0)
    assert set(times) == {"ours", "theirs"} and all(t["forward"] > 0 for t in times.values())
    assert all(p.grad is not None for m in models.values() for p in m.parameters())
    with pytest.raises(ValueError, match="repeats"):
        time_forward_backward(models, x, repeats=0)


def test_command_line():
    out = subprocess.run([sys.executable, "-m", "seqlib.bench", "gated", "--B", "2", "--T", "4",
                          "--D", "3", "--N", "4", "--repeats", "1", "--warmup", "0", "--threads", "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "LSTM" in out and "GRU" in out and "total ratio" in out and "1 threads" in out
