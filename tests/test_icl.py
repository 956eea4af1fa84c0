"""seqlib.icl: in-context linear regression prompts, the paper's linear self-attention, least
squares and one step of gradient descent; a short training run learns the paper's predictor and
breaks under a covariate shift (Zhang, Frei and Bartlett, 2023)."""
import pytest
import torch

from seqlib.icl import (LinearSelfAttention, gd_error, gd_predict, icl_error,
                        least_squares_error, ls_predict, optimal_preconditioner,
                        regression_prompts, split_prompt, train_icl)

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ prompts
def test_prompt_layout_and_shapes():
    Z, y_q = regression_prompts(3, 7, 4, _gen())
    assert Z.shape == (3, 5, 8) and y_q.shape == (3,)
    assert (Z[:, 4, 7] == 0).all()                      # the query's label is blank
    X, y, x_q = split_prompt(Z)
    assert X.shape == (3, 7, 4) and y.shape == (3, 7) and x_q.shape == (3, 4)
    torch.testing.assert_close(X[:, 2], Z[:, :4, 2])
    # noiseless: the labels are one linear function per prompt, which also gives y_q
    w = torch.linalg.lstsq(X.double(), y.double().unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close((x_q.double() * w).sum(-1), y_q.double(), rtol=1e-4, atol=1e-4)


def test_prompts_are_reproducible_and_noise_is_added():
    a, b = regression_prompts(2, 5, 3, _gen(7)), regression_prompts(2, 5, 3, _gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    Z, _ = regression_prompts(4, 10, 3, _gen(), noise=0.3, dtype=F64)
    X, y, _ = split_prompt(Z)
    fit = torch.linalg.lstsq(X, y.unsqueeze(-1)).solution
    assert (y - (X @ fit).squeeze(-1)).abs().max() > 1e-3  # not exactly linear any more


@pytest.mark.parametrize("cov", [2.5, torch.tensor([0.5, 1.0, 4.0]),
                                 torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 0.0]])])
def test_covariance_of_x(cov):
    Z, _ = regression_prompts(400, 49, 3, _gen(), cov_scale=cov, dtype=F64)
    x = Z[:, :3].transpose(1, 2).reshape(-1, 3)        # 20000 draws
    lam = cov * torch.eye(3, dtype=F64) if isinstance(cov, float) else cov.to(F64)
    lam = torch.diag(lam) if lam.dim() == 1 else lam
    torch.testing.assert_close(x.T @ x / len(x), lam, atol=0.1, rtol=0.05)


# ------------------------------------------------------------------------------------ the model
def test_lsa_forward_equals_hand_computation():
    # d = 1, n = 2: Z = [[x1, x2, xq], [y1, y2, 0]]
    Z = torch.tensor([[[1.0, -2.0, 0.5], [3.0, 1.0, 0.0]]], dtype=F64)
    model = LinearSelfAttention(1, dtype=F64)
    W_pv = torch.tensor([[0.3, -0.1], [0.2, 0.7]], dtype=F64)
    W_kq = torch.tensor([[0.4, 0.6], [-0.5, 0.1]], dtype=F64)
    with torch.no_grad():
        model.W_pv.copy_(W_pv)
        model.W_kq.copy_(W_kq)
    z = Z[0]
    want = torch.empty(2, 3, dtype=F64)
    for r in range(2):
        for c in range(3):
            total = 0.0
            for j in range(3):          # f = Z + W^PV Z (Z^T W^KQ Z) / n, one column j at a time
                value = sum(W_pv[r, a] * z[a, j] for a in range(2))
                score = sum(z[a, j] * W_kq[a, b] * z[b, c] for a in range(2) for b in range(2))
                total += value * score
            want[r, c] = z[r, c] + total / 2
    out = model(Z)
    torch.testing.assert_close(out[0], want)
    torch.testing.assert_close(model.predict(Z), out[:, 1, 2])


def test_predict_is_the_bottom_right_entry_for_random_weights():
    model = LinearSelfAttention(4, init="random", sigma=1.0, generator=_gen(), dtype=F64)
    Z, _ = regression_prompts(5, 9, 4, _gen(1), dtype=F64)
    Z[:, 4, 9] = 0.7                                    # also when the query slot is not blank
    torch.testing.assert_close(model.predict(Z), model(Z)[:, 4, 9])


def test_paper_init_is_one_step_of_preconditioned_gradient_descent():
    model = LinearSelfAttention(3, sigma=0.5, generator=_gen(), dtype=F64)
    assert (model.W_pv[3, :3] == 0).all() and (model.W_kq[3] == 0).all()
    assert model.W_pv[3, 3] == 0.5
    A = model.effective_preconditioner()
    torch.testing.assert_close(torch.linalg.matrix_norm(A), torch.tensor(0.25, dtype=F64))
    Z, _ = regression_prompts(6, 8, 3, _gen(1), dtype=F64)
    torch.testing.assert_close(model.predict(Z), gd_predict(Z, A.T))


# ------------------------------------------------------------------------------------ baselines
@pytest.mark.parametrize("n", [4, 5, 12])
def test_least_squares_is_exact_without_noise(n):
    Z, y_q = regression_prompts(50, n, 4, _gen(), dtype=F64)
    torch.testing.assert_close(ls_predict(Z), y_q, rtol=1e-7, atol=1e-7)
    assert least_squares_error(n, 4, trials=64) < 1e-6


def test_least_squares_below_d_is_min_norm_interpolation():
    Z, y_q = regression_prompts(20, 2, 4, _gen(), dtype=F64)
    X, y, x_q = split_prompt(Z)
    w_hat = torch.linalg.pinv(X) @ y.unsqueeze(-1)
    torch.testing.assert_close(ls_predict(Z), (x_q.unsqueeze(1) @ w_hat).reshape(-1))
    assert least_squares_error(2, 4, trials=256) > 0.5   # two examples cannot pin down w in R^4


def test_gd_with_the_papers_preconditioner_has_the_predicted_error():
    # Lambda = I: E (y^ - y_q)^2 = d (1 - 1/c), c = 1 + (d+1)/n, with Gamma^-1 = I / c
    d, n = 3, 12
    G = optimal_preconditioner(n, d)
    c = 1 + (d + 1) / n
    torch.testing.assert_close(G, torch.eye(d) / c)
    err = gd_error(n, d, G, trials=20000)
    assert abs(err / (d * (1 - 1 / c)) - 1) < 0.1, err
    assert gd_error(n, d, torch.eye(d), trials=20000) > err   # plain GD step overshoots


# ------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def trained():
    d, n = 4, 20
    model = LinearSelfAttention(d, generator=_gen())
    before = icl_error(model, n, d, trials=2048)
    history = train_icl(model, 200, n, d, batch=256, lr=1e-2, seed=0)
    return model, d, n, before, history


def test_training_learns_the_papers_global_minimum(trained):
    model, d, n, before, history = trained
    after = icl_error(model, n, d, trials=2048)
    assert len(history["loss"]) == 200 and after < 0.3 * before, (before, after)
    G = optimal_preconditioner(n, d)
    A = model.effective_preconditioner()
    assert torch.linalg.matrix_norm(A - G) < 0.15 * torch.linalg.matrix_norm(G)
    assert after < 1.15 * gd_error(n, d, G, trials=2048)


def test_error_falls_with_n_towards_least_squares(trained):
    model, d, _, _, _ = trained
    errors = [icl_error(model, n, d, trials=2048) for n in (10, 40, 160)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 * d                   # under a tenth of Var(y_q) = d; least squares: 0


def test_covariate_shift_breaks_the_model_not_least_squares(trained):
    model, d, n, _, _ = trained
    plain = icl_error(model, n, d, trials=2048)
    shifted = icl_error(model, n, d, cov_scale=3.0, trials=2048)
    assert shifted > 10 * plain, (plain, shifted)
    noisy = dict(noise=0.5, trials=2048)
    ls_plain, ls_shift = least_squares_error(n, d, **noisy), least_squares_error(n, d, 3.0, **noisy)
    assert abs(ls_shift / ls_plain - 1) < 0.1      # least squares does not see the scale


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_errors():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        regression_prompts(2, 0, 3)
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        regression_prompts(2, 4, 2.0)
    with pytest.raises(ValueError, match="noise"):
        regression_prompts(2, 4, 3, noise=-1.0)
    with pytest.raises(ValueError, match=r"cov_scale: expected shape \(d,\) = \(3,\)"):
        regression_prompts(2, 4, 3, cov_scale=torch.ones(4))
    with pytest.raises(ValueError, match="symmetric"):
        regression_prompts(2, 4, 2, cov_scale=torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        regression_prompts(2, 4, 2, cov_scale=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="variances must be >= 0"):
        regression_prompts(2, 4, 2, cov_scale=torch.tensor([1.0, -1.0]))
    with pytest.raises(TypeError, match="cov_scale"):
        regression_prompts(2, 4, 2, cov_scale="wide")
    model = LinearSelfAttention(3)
    with pytest.raises(ValueError, match=r"Z: expected shape \(B, d\+1, n\+1\) = .*4.*"
                                         r"got \(2, 3, 5\)"):
        model(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="at least one example"):
        model.predict(torch.zeros(2, 4, 1))
    with pytest.raises(TypeError, match="Z: expected a torch.Tensor"):
        model([[0.0]])
    with pytest.raises(ValueError, match="init must be"):
        LinearSelfAttention(3, init="xavier")
    with pytest.raises(ValueError, match="d must be a positive integer"):
        LinearSelfAttention(0)
    with pytest.raises(ValueError, match=r"preconditioner: expected shape \(d, d\)"):
        gd_predict(regression_prompts(2, 4, 3)[0], torch.eye(2))
    with pytest.raises(TypeError, match="predict"):
        train_icl(torch.nn.Linear(3, 1), 1, 4, 3)
