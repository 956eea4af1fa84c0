"""seqlib.perf.peak_memory_bytes: the high-water mark of resident memory that a call adds."""
import pytest
import torch

from seqlib.perf import peak_memory_bytes


def test_peak_memory_sees_a_large_temporary_and_returns_the_result():
    n = 64 * 2**20 // 4  # 64 MiB of float32, allocated, touched and freed inside the call

    def make_and_drop():
        t = torch.ones(n)
        return float(t[::4096].sum())

    peak, result = peak_memory_bytes(make_and_drop)
    assert result == pytest.approx(n / 4096)
    assert 0.9 * 64 * 2**20 < peak < 1.5 * 64 * 2**20


def test_peak_memory_of_a_call_that_allocates_nothing_is_small():
    peak, result = peak_memory_bytes(lambda x: x + 1, 41)
    assert result == 42 and peak < 4 * 2**20
