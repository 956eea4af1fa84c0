"""seqlib.scan.log_linear_scan: the log-space scan of a positive recurrence against the loop, with
and without h0, its gradients, its robustness to underflow, and its float32 precision."""
import pytest
import torch
import torch.nn.functional as F

from seqlib.scan import linear_scan_sequential, log_linear_scan


def _positive(T, B=2, D=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(B, T, D, generator=g, dtype=torch.float64)
    log_a = -F.softplus(k)                                                     # a in (0, 1)
    log_b = -F.softplus(-k) + 0.5 * torch.randn(B, T, D, generator=g, dtype=torch.float64)
    log_h0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    return log_a.to(dtype), log_b.to(dtype), log_h0.to(dtype)


@pytest.mark.parametrize("T", [1, 2, 17, 300, 2000])
def test_equals_the_loop(T):
    log_a, log_b, log_h0 = _positive(T)
    for h0 in (None, log_h0):
        ref = linear_scan_sequential(log_a.exp(), log_b.exp(), None if h0 is None else h0.exp())
        torch.testing.assert_close(log_linear_scan(log_a, log_b, h0), ref.log(), rtol=0, atol=1e-11)


def test_minus_infinity_h0_is_zero_h0():
    log_a, log_b, log_h0 = _positive(20)
    log_h0[0, 1] = -float("inf")
    ref = linear_scan_sequential(log_a.exp(), log_b.exp(), log_h0.exp())
    torch.testing.assert_close(log_linear_scan(log_a, log_b, log_h0), ref.log())


def test_gradcheck():
    log_a, log_b, log_h0 = (t.requires_grad_() for t in _positive(9))
    assert torch.autograd.gradcheck(log_linear_scan, (log_a, log_b, log_h0))


def test_gradient_equals_the_loops():
    log_a, log_b, log_h0 = (t.requires_grad_() for t in _positive(200))
    up = torch.randn(2, 200, 3, dtype=torch.float64)
    ours = torch.autograd.grad((log_linear_scan(log_a, log_b, log_h0).exp() * up).sum(),
                               (log_a, log_b, log_h0))
    ref = torch.autograd.grad(
        (linear_scan_sequential(log_a.exp(), log_b.exp(), log_h0.exp()) * up).sum(),
        (log_a, log_b, log_h0))
    for x, y in zip(ours, ref):
        torch.testing.assert_close(x, y)


def test_products_that_underflow_stay_finite():
    # a = e^-50 at every step: prod a underflows after ~15 steps, exp(-a*) overflows, the log
    # scan does neither. The true answer is h_t ~ b_t, since the past is forgotten at once.
    T = 400
    log_a = torch.full((1, T, 2), -50.0, dtype=torch.float64)
    log_b = torch.randn(1, T, 2, dtype=torch.float64)
    out = log_linear_scan(log_a, log_b)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, log_b, rtol=0, atol=1e-10)  # eps * |a*| = 2e-16 * 2e4


def test_float32_precision_at_length_4096():
    # The documented limit: absolute error in log h of about eps * |sum log a| (here ~3000).
    log_a, log_b, log_h0 = _positive(4096, B=1, D=8)
    ref = log_linear_scan(log_a, log_b, log_h0)
    out = log_linear_scan(log_a.float(), log_b.float(), log_h0.float()).double()
    err = (out - ref).abs().max().item()
    assert err < 1e-3, err


@pytest.mark.parametrize("args,exc,match", [
    ((torch.ones(2, 3), torch.ones(2, 3)), ValueError, r"a: expected shape \(B, T, D\), got \(2, 3\)"),
    ((torch.ones(2, 3, 4), torch.ones(2, 3, 5)), ValueError, r"got a \(2, 3, 4\) and b \(2, 3, 5\)"),
    ((torch.ones(2, 3, 4), torch.ones(2, 3, 4), torch.ones(3, 4)), ValueError,
     r"h0: expected shape \(B, D\) = \(2, 4\), got \(3, 4\)"),
    ((torch.ones(2, 3, 4, dtype=torch.complex64),) * 2, TypeError, "real floating-point"),
])
def test_bad_input(args, exc, match):
    with pytest.raises(exc, match=match):
        log_linear_scan(*args)
