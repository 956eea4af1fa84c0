"""Hand-written BPTT (seqlib.bptt) against autograd, and truncated BPTT's cut."""
import pytest
import torch

from seqlib.bptt import rnn_backward, rnn_forward, state_jacobian_norms


def _setup(T, B, D, N, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = dict(dtype=torch.float64)
    x = torch.randn(T, B, D, generator=g, **f64)
    h0 = torch.randn(B, N, generator=g, **f64) * 0.5
    w_ih = torch.randn(N, D, generator=g, **f64) / D ** 0.5
    w_hh = torch.randn(N, N, generator=g, **f64) * 1.2 / N ** 0.5
    b = torch.randn(N, generator=g, **f64) * 0.1
    dhs = torch.randn(T, B, N, generator=g, **f64)  # dL/dh_t for a loss L = sum_t <dhs_t, h_t>
    return x, h0, w_ih, w_hh, b, dhs


def _autograd(x, h0, w_ih, w_hh, b, dhs):
    leaves = [t.clone().requires_grad_() for t in (w_ih, w_hh, b, h0, x)]
    w_ih_, w_hh_, b_, h0_, x_ = leaves
    hs = rnn_forward(x_, h0_, w_ih_, w_hh_, b_)
    (hs[1:] * dhs).sum().backward()
    return [t.grad for t in leaves]


@pytest.mark.parametrize("T,B,D,N", [(1, 1, 1, 1), (5, 3, 4, 6), (17, 2, 3, 8), (9, 4, 7, 5)])
def test_hand_bptt_equals_autograd(T, B, D, N):
    x, h0, w_ih, w_hh, b, dhs = _setup(T, B, D, N)
    hs = rnn_forward(x, h0, w_ih, w_hh, b)
    ours = rnn_backward(x, hs, w_ih, w_hh, dhs)
    ref = _autograd(x, h0, w_ih, w_hh, b, dhs)
    for name, a, r in zip(["dw_ih", "dw_hh", "db", "dh0", "dx"], ours, ref):
        assert a.shape == r.shape, name
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12, msg=name)


def test_forward_matches_torch_rnn():
    x, h0, w_ih, w_hh, b, _ = _setup(6, 3, 4, 5)
    rnn = torch.nn.RNN(4, 5, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(w_ih), rnn.weight_hh_l0.copy_(w_hh)
        rnn.bias_ih_l0.copy_(b), rnn.bias_hh_l0.zero_()
    out, _ = rnn(x, h0[None])
    torch.testing.assert_close(rnn_forward(x, h0, w_ih, w_hh, b)[1:], out.detach())


@pytest.mark.parametrize("k", [1, 2, 4])
def test_truncation_blocks_gradient_beyond_k_steps(k):
    T, t_loss = 10, 7
    x, h0, w_ih, w_hh, b, dhs = _setup(T, 2, 3, 4, seed=1)
    dhs_one = torch.zeros_like(dhs)
    dhs_one[t_loss] = dhs[t_loss]  # only the loss at step t_loss
    hs = rnn_forward(x, h0, w_ih, w_hh, b)
    *_, dx = rnn_backward(x, hs, w_ih, w_hh, dhs_one, truncate=k)
    reached = dx.abs().sum(dim=(1, 2)) > 0
    assert reached.tolist() == [t_loss - k < s <= t_loss for s in range(T)]
    # ... and within the window it is exactly autograd's gradient with h_{t-k} detached
    x_ = x.clone().requires_grad_()
    h = h0
    for s in range(t_loss + 1):
        if s == t_loss - k + 1:
            h = h.detach()
        h = torch.tanh(x_[s] @ w_ih.T + h @ w_hh.T + b)
    (h * dhs_one[t_loss]).sum().backward()
    torch.testing.assert_close(dx, x_.grad)


def test_truncation_at_T_is_full_bptt_and_weights_agree_with_detached_autograd():
    T = 8
    x, h0, w_ih, w_hh, b, dhs = _setup(T, 3, 2, 5, seed=2)
    hs = rnn_forward(x, h0, w_ih, w_hh, b)
    full = rnn_backward(x, hs, w_ih, w_hh, dhs)
    for a, r in zip(rnn_backward(x, hs, w_ih, w_hh, dhs, truncate=T), full):
        torch.testing.assert_close(a, r)
    # k = 1: every loss term sees only its own step, so dW_hh = sum_t da_t^T h_{t-1}, no chain
    dw_hh_1 = rnn_backward(x, hs, w_ih, w_hh, dhs, truncate=1)[1]
    da = dhs * (1 - hs[1:] ** 2)
    torch.testing.assert_close(dw_hh_1, torch.einsum("tbi,tbj->ij", da, hs[:-1]))


def test_truncate_rejects_zero():
    x, h0, w_ih, w_hh, b, dhs = _setup(3, 1, 1, 2)
    with pytest.raises(ValueError, match="truncate"):
        rnn_backward(x, rnn_forward(x, h0, w_ih, w_hh, b), w_ih, w_hh, dhs, truncate=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "linear"])
def test_state_jacobian_norms_match_autograd_jacobian(nonlinearity):
    T, N = 6, 4
    x, h0, w_ih, w_hh, b, _ = _setup(T, 1, 3, N, seed=3)
    hs = rnn_forward(x, h0, w_ih, w_hh, b)
    norms = state_jacobian_norms(hs, w_hh, nonlinearity)
    assert norms.shape == (T + 1,)
    for k in range(T + 1):
        def h_T_from(h_start, k=k):
            h = h_start
            for t in range(T - k, T):
                a = x[t, 0] @ w_ih.T + h @ w_hh.T + b
                h = torch.tanh(a) if nonlinearity == "tanh" else a
            return h
        if nonlinearity == "linear":  # the linearised Jacobian is W_hh^k whatever the states
            J = torch.linalg.matrix_power(w_hh, k)
        else:
            J = torch.autograd.functional.jacobian(h_T_from, hs[T - k, 0])
        assert abs(norms[k] - torch.linalg.matrix_norm(J, ord=2)) < 1e-9
