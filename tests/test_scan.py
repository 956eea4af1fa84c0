"""seqlib.scan.linear_scan: the parallel (chunked) scan against the sequential loop, real and
complex, forwards and in reverse, with and without h0; its gradients; the combine's associativity."""
import pytest
import torch

from seqlib.scan import combine, linear_scan, linear_scan_sequential

DTYPES = [torch.float64, torch.complex128]


def _inputs(T, dtype, B=2, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mag = torch.rand(B, T, D, generator=g, dtype=torch.float64) * 0.5 + 0.5
    a = mag if not dtype.is_complex else mag * torch.exp(1j * torch.rand(B, T, D, generator=g, dtype=torch.float64))
    b = torch.randn(B, T, D, generator=g, dtype=dtype)
    h0 = torch.randn(B, D, generator=g, dtype=dtype)
    return a.to(dtype), b, h0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [1, 5, 64, 65, 300, 1100])
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_equals_sequential(dtype, T, reverse):
    a, b, h0 = _inputs(T, dtype)
    for h in (None, h0):
        torch.testing.assert_close(linear_scan(a, b, h, reverse=reverse),
                                   linear_scan_sequential(a, b, h, reverse=reverse))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [3, 65])
def test_gradcheck(dtype, T):
    a, b, h0 = (t.requires_grad_() for t in _inputs(T, dtype))
    assert torch.autograd.gradcheck(lambda a, b, h: linear_scan(a, b, h), (a, b, h0))
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, reverse=True), (a, b))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradients_equal_the_loops_at_long_length(dtype):
    a, b, h0 = (t.requires_grad_() for t in _inputs(700, dtype))
    up = torch.randn_like(b)
    grads = [torch.autograd.grad((f(a, b, h0) * up.conj()).real.sum(), (a, b, h0))
             for f in (linear_scan, linear_scan_sequential)]
    for x, y in zip(*grads):
        torch.testing.assert_close(x, y)


def test_float32_long_sequence_is_accurate():
    a, b, h0 = (t.float() for t in _inputs(8192, torch.float64, B=1, D=4))
    ref = linear_scan_sequential(a.double(), b.double(), h0.double())
    out = linear_scan(a, b, h0)
    assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_combine_is_associative(dtype):
    # Triton's interpreter folds a custom combine sequentially, so it would not notice a combine
    # that is not associative; check it here on random pairs.
    p, q, r = (_inputs(1, dtype, seed=s)[:2] for s in (1, 2, 3))
    left, right = combine(combine(p, q), r), combine(p, combine(q, r))
    for x, y in zip(left, right):
        torch.testing.assert_close(x, y)


def test_combine_composes_steps():
    a, b, _ = _inputs(2, torch.float64)
    A, Bc = combine((a[:, 0], b[:, 0]), (a[:, 1], b[:, 1]))
    h = linear_scan_sequential(a, b)
    torch.testing.assert_close(Bc, h[:, 1])
    torch.testing.assert_close(A, a[:, 0] * a[:, 1])


@pytest.mark.parametrize("args,exc,match", [
    ((torch.ones(2, 3), torch.ones(2, 3)), ValueError, r"a: expected shape \(B, T, D\), got \(2, 3\)"),
    ((torch.ones(2, 3, 4), torch.ones(2, 3, 5)), ValueError, r"got a \(2, 3, 4\) and b \(2, 3, 5\)"),
    ((torch.ones(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.float64)), TypeError, "same dtype"),
    ((torch.ones(2, 3, 4), torch.ones(2, 3, 4), torch.ones(3, 4)), ValueError,
     r"h0: expected shape \(B, D\) = \(2, 4\), got \(3, 4\)"),
    ((torch.ones(2, 3, 4, dtype=torch.long),) * 2, TypeError, "floating-point"),
])
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        linear_scan(*args)
