"""seqlib.minrnn: minGRU and minLSTM. The step face, the linear-scan face and the log-space face
compute the same states; gradients check; the log face survives gates whose products underflow."""
import pytest
import torch

from seqlib.minrnn import MinGRU, MinLSTM, g, log_g

MODELS = [MinGRU, MinLSTM]


def _model(cls, D=3, N=4, seed=0, **kw):
    torch.manual_seed(seed)
    return cls(D, N, dtype=torch.float64, **kw)


def _step_loop(model, x, h0):
    h, hs = h0, []
    for x_t in x.unbind(1):
        y, h = model.step(h, x_t)
        hs.append(y)
    return torch.stack(hs, 1)


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("T", [1, 7, 130])
@pytest.mark.parametrize("with_h0", [False, True])
def test_step_equals_both_parallel_faces(cls, T, with_h0):
    model = _model(cls)
    x = torch.randn(2, T, 3, dtype=torch.float64)
    h0 = torch.randn(2, 4, dtype=torch.float64) if with_h0 else None  # any sign, even in log mode
    ref = _step_loop(model, x, h0)
    for mode in ("linear", "log"):
        h, h_T = model(x, h0, mode=mode)
        torch.testing.assert_close(h, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_T, ref[:, -1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls", MODELS)
def test_not_positive_is_the_papers_sequential_model(cls):
    model = _model(cls, positive=False, mode="linear")
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    h, _ = model(x)
    torch.testing.assert_close(h, _step_loop(model, x, None))
    assert (h < 0).any()  # the candidate is no longer forced positive
    with pytest.raises(ValueError, match="positive=True"):
        model(x, mode="log")


def test_mingru_matches_its_equation():
    model = _model(MinGRU)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    z, ht = torch.sigmoid(model.linear_z(x)), g(model.linear_h(x))
    h = torch.zeros(2, 4, dtype=torch.float64)
    for t in range(5):
        h = (1 - z[:, t]) * h + z[:, t] * ht[:, t]
    torch.testing.assert_close(model(x)[1], h)


def test_minlstm_gates_are_normalised():
    model = _model(MinLSTM)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    a, b = model._coefficients(x)
    torch.testing.assert_close(a + b, torch.ones_like(a))
    la, lb = model._log_coefficients(x)
    torch.testing.assert_close(la.exp(), a)
    torch.testing.assert_close(lb.exp(), b)


def test_g_is_positive_continuous_and_log_g_is_its_log():
    x = torch.linspace(-30, 30, 2001, dtype=torch.float64)
    assert (g(x) > 0).all()
    torch.testing.assert_close(log_g(x), g(x).log())
    assert abs(g(torch.tensor(-1e-12)) - g(torch.tensor(0.0))) < 1e-9


@pytest.mark.parametrize("cls", MODELS)
@pytest.mark.parametrize("mode", ["linear", "log"])
def test_gradcheck(cls, mode):
    model = _model(cls, D=2, N=3, mode=mode)
    x = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    w = model.linear_h.weight
    assert torch.autograd.gradcheck(lambda x, h0: model(x, h0)[0], (x, h0))
    # and the parameters: the same loss, differentiated against a finite difference
    loss = lambda: (model(x, h0)[0] ** 2).sum()
    (grad,) = torch.autograd.grad(loss(), w)
    eps, d = 1e-6, torch.zeros_like(w)
    d[1, 0] = eps
    with torch.no_grad():
        w += d
        up = loss()
        w -= 2 * d
        down = loss()
        w += d
    assert abs((up - down) / (2 * eps) - grad[1, 0]) < 1e-6


@pytest.mark.parametrize("cls", MODELS)
def test_log_mode_survives_underflowing_gate_products(cls):
    # Forget gates near 1e-3 for 2000 steps: prod a = 1e-6000 underflows even float64, and the log
    # face still returns the states of the step loop.
    model = _model(cls, D=1, N=2)
    with torch.no_grad():
        for lin in (model.linear_h,) + tuple(getattr(model, f"linear_{n}") for n in cls.gate_names):
            lin.weight.fill_(0.5)
            lin.bias.zero_()
    x = torch.full((1, 2000, 1), 14.0, dtype=torch.float64) + torch.randn(1, 2000, 1, dtype=torch.float64)
    h, _ = model(x, mode="log")
    torch.testing.assert_close(h, _step_loop(model, x, None), rtol=1e-10, atol=0)
    assert torch.isfinite(h).all()


def test_float32_log_and_linear_agree():
    torch.manual_seed(0)
    model = MinGRU(8, 16)
    x = torch.randn(4, 1024, 8)
    h_lin, _ = model(x, mode="linear")
    h_log, _ = model(x, mode="log")
    assert ((h_lin - h_log).abs() / h_lin.abs()).max() < 1e-3  # log space: error ~ eps * |sum log a|


@pytest.mark.parametrize("cls", MODELS)
def test_bad_input(cls):
    model = cls(3, 4)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\) = .*3\), got \(2, 5\)"):
        model(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"h0: expected shape \(B, N\) = \(2, 4\), got \(2, 3\)"):
        model(torch.randn(2, 5, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, D\) = .*3\), got \(2, 1, 3\)"):
        model.step(None, torch.randn(2, 1, 3))
    with pytest.raises(ValueError, match="mode must be one of"):
        model(torch.randn(2, 5, 3), mode="fast")
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        cls(3, 0)


@pytest.mark.parametrize("cls", MODELS)
def test_empty_sequence(cls):
    model = cls(3, 4)
    h, h_T = model(torch.randn(2, 0, 3))
    assert h.shape == (2, 0, 4) and h_T.shape == (2, 4)
