"""In-context linear regression and the linear self-attention model of Zhang, Frei and Bartlett
(2023, "Trained Transformers Learn Linear Models In-Context").

Shapes:
    B  batch (prompts)      n  in-context examples per prompt      d  input dimension
    Z : (B, d+1, n+1)   the prompt, one column per example, the query last (the paper's layout)
    y_q, prediction : (B,)      w : (B, d)      Lambda (covariance of x) : (d, d)

A prompt holds n labelled examples of one linear task and one unlabelled query:

    w ~ N(0, I_d),   x_i ~ N(0, Lambda),   y_i = <w, x_i> (+ noise),   i = 1 .. n, q

    Z = [[x_1 ... x_n  x_q],      (d rows)
         [y_1 ... y_n   0 ]]      (1 row: the label the model must fill in)

A new w for every prompt: the model cannot memorise a task, it has to read it from the prompt.

The paper's model is one layer of linear self-attention (no softmax, no mask):

    f(Z) = Z + W^PV Z (Z^T W^KQ Z) / n,      prediction = f(Z)[d, n]  (bottom right)

with W^PV (value times projection) and W^KQ (key times query) both (d+1, d+1). Writing out the
bottom-right entry, only the last row v of W^PV and the first d columns K of W^KQ matter:

    y^ = v^T (Z Z^T / n) K x_q

From the paper's initialisation (v = (0, .., 0, sigma), K = [sigma Theta Theta^T; 0]) gradient flow
keeps the zero blocks zero, so y^ = x_q^T A (1/n) sum_i y_i x_i with A = v_d K_top: one step of
preconditioned gradient descent on the prompt's least-squares loss, from w = 0. The paper proves
training converges to A = Gamma^-1, Gamma = (1 + 1/n) Lambda + tr(Lambda)/n I_d (the training
Lambda and n); ``gd_predict`` with ``optimal_preconditioner`` is that limit, and
``LinearSelfAttention.effective_preconditioner`` reads A off a trained model.

Two consequences the tests and the chapter check:
  * the trained model's error falls like 1/n towards the least-squares error (``ls_predict``,
    the min-norm solution, exact for n >= d without noise), but one gradient step is not a solve:
    at finite n it stays above least squares;
  * A is tuned to the training Lambda. Scale the test covariates by s and y^ grows like s^2 times
    the (s^1/2-sized) target: the error explodes, where least squares does not care.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seqlib.recurrent import check_tensor
from seqlib.train import train

__all__ = ["regression_prompts", "LinearSelfAttention", "train_icl", "prompt_error",
           "icl_error", "least_squares_error", "gd_error", "ls_predict", "gd_predict",
           "optimal_preconditioner", "split_prompt"]


def regression_prompts(B, n, d, generator=None, cov_scale=None, noise=0.0,
                       dtype=torch.float32):
    """B prompts of in-context linear regression, each with its own task w ~ N(0, I_d).

    n: labelled examples per prompt (>= 1); d: input dimension (>= 1).
    generator: a torch.Generator for reproducible prompts (None: the global RNG).
    cov_scale: the covariance Lambda of x: None (I_d), a number s (s I_d), a (d,) vector
        (diag(v)) or a symmetric positive semi-definite (d, d) matrix.
    noise: standard deviation of Gaussian label noise, added to y_1 .. y_n and to y_q.
    Returns (Z (B, d+1, n+1), y_q (B,)); Z's last column is (x_q, 0).
    """
    for name, val, low in (("B", B, 1), ("n", n, 1), ("d", d, 1)):
        if not isinstance(val, int) or isinstance(val, bool) or val < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {val!r}")
    if not float(noise) >= 0:
        raise ValueError(f"noise must be a standard deviation >= 0, got {noise!r}")
    root = _covariance_root(cov_scale, d, dtype)
    w = torch.randn(B, d, generator=generator, dtype=dtype)
    x = torch.randn(B, n + 1, d, generator=generator, dtype=dtype)
    if root is not None:
        x = x @ root.T                                   # rows x_i ~ N(0, root root^T = Lambda)
    y = torch.einsum("bid,bd->bi", x, w)
    if noise:
        y = y + noise * torch.randn(B, n + 1, generator=generator, dtype=dtype)
    Z = torch.cat([x, y.unsqueeze(-1)], -1).transpose(1, 2).clone()   # (B, d+1, n+1)
    Z[:, d, n] = 0.0                                     # the query's label is what is asked
    return Z, y[:, n]


def split_prompt(Z):
    """Z (B, d+1, n+1) -> (X (B, n, d), y (B, n), x_q (B, d)): the examples, labels and query."""
    check_tensor("Z", Z, (None, None, None), "(B, d+1, n+1)")
    if Z.shape[1] < 2 or Z.shape[2] < 2:
        raise ValueError(f"Z: expected shape (B, d+1, n+1) with d >= 1 and n >= 1, "
                         f"got {tuple(Z.shape)}")
    d, n = Z.shape[1] - 1, Z.shape[2] - 1
    return Z[:, :d, :n].transpose(1, 2), Z[:, d, :n], Z[:, :d, n]


class LinearSelfAttention(nn.Module):
    """One layer of linear self-attention, the paper's model: f(Z) = Z + W^PV Z (Z^T W^KQ Z) / n.

    LinearSelfAttention(d, init="paper", sigma=0.1, generator=None)
    init="paper": W^PV = sigma [[0, 0], [0, 1]], W^KQ = sigma [[Theta Theta^T, 0], [0, 0]] with
        Theta a random (d, d) Gaussian matrix scaled so that ||Theta Theta^T||_F = 1 (the paper's
        Assumption 3.3 with Lambda = I, up to the factor Gamma). The blocks that start at zero
        receive gradients that are zero on average, so they stay near zero.
    init="random": every entry N(0, sigma^2 / (d+1)); trains too, more slowly and less cleanly.
    forward(Z (B, d+1, n+1)) -> f(Z) (B, d+1, n+1)
    predict(Z) -> f(Z)[:, d, n] (B,), the model's guess for y_q
    Parameters: W_pv, W_kq, each (d+1, d+1).
    """

    def __init__(self, d, init="paper", sigma=0.1, generator=None, dtype=torch.float32):
        super().__init__()
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            raise ValueError(f"d must be a positive integer, got {d!r}")
        if init not in ("paper", "random"):
            raise ValueError(f"init must be 'paper' or 'random', got {init!r}")
        if not float(sigma) > 0:
            raise ValueError(f"sigma must be positive, got {sigma!r}")
        self.d, self.init, self.sigma = d, init, float(sigma)
        W_pv, W_kq = torch.zeros(d + 1, d + 1, dtype=dtype), torch.zeros(d + 1, d + 1, dtype=dtype)
        if init == "paper":
            theta = torch.randn(d, d, generator=generator, dtype=dtype)
            tt = theta @ theta.T
            W_pv[d, d] = sigma
            W_kq[:d, :d] = sigma * tt / torch.linalg.matrix_norm(tt)
        else:
            scale = sigma / math.sqrt(d + 1)
            W_pv = scale * torch.randn(d + 1, d + 1, generator=generator, dtype=dtype)
            W_kq = scale * torch.randn(d + 1, d + 1, generator=generator, dtype=dtype)
        self.W_pv, self.W_kq = nn.Parameter(W_pv), nn.Parameter(W_kq)

    def extra_repr(self):
        return f"d={self.d}, init={self.init!r}, sigma={self.sigma}"

    def forward(self, Z):
        """Z (B, d+1, n+1) -> f(Z) = Z + W^PV Z (Z^T W^KQ Z) / n, same shape."""
        check_tensor("Z", Z, (None, self.d + 1, None), "(B, d+1, n+1)")
        n = Z.shape[-1] - 1
        if n < 1:
            raise ValueError(f"Z: expected at least one example (n+1 >= 2 columns), got "
                             f"{tuple(Z.shape)}")
        scores = Z.transpose(1, 2) @ self.W_kq @ Z        # (B, n+1, n+1), no softmax, no mask
        return Z + self.W_pv @ Z @ scores / n

    def predict(self, Z):
        """The prediction for the query, f(Z)[:, d, n] (B,), computed for the query's column only:
        the query attends to every column (scores z_j^T W^KQ z_q), the one row of the output
        that is read is taken with the last row of W^PV. Equal to forward(Z)[:, d, -1] (tested)
        at O(B d n) instead of O(B d n^2)."""
        check_tensor("Z", Z, (None, self.d + 1, None), "(B, d+1, n+1)")
        n = Z.shape[-1] - 1
        if n < 1:
            raise ValueError(f"Z: expected at least one example (n+1 >= 2 columns), got "
                             f"{tuple(Z.shape)}")
        scores = (Z * (self.W_kq @ Z[:, :, -1:])).sum(1)           # (B, n+1): z_j^T W^KQ z_q
        values = self.W_pv[self.d] @ Z                              # (B, n+1): last row of W^PV z_j
        return Z[:, self.d, -1] + (values * scores).sum(-1) / n

    def effective_preconditioner(self):
        """A = W^PV[d, d] W^KQ[:d, :d] (d, d): with the other blocks of the last row of W^PV and
        the last row of W^KQ at zero, predict(Z) = x_q^T A^T (1/n) sum_i y_i x_i, i.e.
        gd_predict(Z, A^T). Training from the paper's init drives A towards Gamma^-1."""
        return (self.W_pv[self.d, self.d] * self.W_kq[:self.d, :self.d]).detach()


def train_icl(model, steps, n, d, batch=256, lr=1e-2, seed=0, cov_scale=None, noise=0.0,
              progress=False):
    """Train ``model`` (anything with predict(Z) -> (B,)) on fresh prompts each step, with the
    squared error on the query, Adam(lr). Prompts come from a generator seeded with ``seed``.
    Returns the history of ``seqlib.train.train``: {"step", "loss", "grad_norm", "seconds"}."""
    if not isinstance(model, nn.Module) or not hasattr(model, "predict"):
        raise TypeError(f"model: expected an nn.Module with a predict(Z) method, got "
                        f"{type(model).__name__}")
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)

    def batches(step):
        return regression_prompts(batch, n, d, gen, cov_scale, noise, dtype)

    def loss_fn(model, prompts):
        Z, y_q = prompts
        return ((model.predict(Z) - y_q) ** 2).mean()

    return train(model, loss_fn, batches, steps, lr=lr, progress=progress, desc="icl")


def prompt_error(predict, n, d, cov_scale=None, noise=0.0, trials=4096, batch=1024, seed=1234,
                 dtype=torch.float32):
    """Mean squared error of ``predict(Z) -> (B,)`` on the query over ``trials`` prompts.
    The prompts depend only on (seed, n, d, cov_scale, noise, trials, batch, dtype), so two
    predictors called with the same arguments are judged on the same prompts."""
    if not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    with torch.no_grad():
        while count < trials:
            b = min(batch, trials - count)
            Z, y_q = regression_prompts(b, n, d, gen, cov_scale, noise, dtype)
            total += float(((predict(Z) - y_q) ** 2).sum())
            count += b
    return total / count


def icl_error(model, n, d, cov_scale=None, noise=0.0, trials=4096, seed=1234):
    """The model's mean squared error on the query with n in-context examples."""
    dtype = next(model.parameters()).dtype
    return prompt_error(model.predict, n, d, cov_scale, noise, trials, seed=seed, dtype=dtype)


def least_squares_error(n, d, cov_scale=None, noise=0.0, trials=4096, seed=1234):
    """The error of min-norm least squares (``ls_predict``) on the same prompts as icl_error."""
    return prompt_error(ls_predict, n, d, cov_scale, noise, trials, seed=seed)


def gd_error(n, d, preconditioner, cov_scale=None, noise=0.0, trials=4096, seed=1234):
    """The error of one preconditioned gradient step (``gd_predict``) on the same prompts."""
    return prompt_error(lambda Z: gd_predict(Z, preconditioner), n, d, cov_scale, noise, trials,
                        seed=seed)


def ls_predict(Z):
    """Min-norm least squares fitted to the prompt's examples: w^ = pinv(X) y (B, d),
    y^ = <w^, x_q>.
    Exact (y^ = <w, x_q>) for n >= d without noise. Z (B, d+1, n+1) -> (B,)."""
    X, y, x_q = split_prompt(Z)
    # gelsd: an SVD-based solver, so n < d (rank-deficient) gets the minimum-norm solution
    w_hat = torch.linalg.lstsq(X.double(), y.double().unsqueeze(-1), driver="gelsd").solution
    return (x_q.double().unsqueeze(1) @ w_hat).reshape(-1).to(Z.dtype)


def gd_predict(Z, preconditioner=None):
    """One step of preconditioned gradient descent from w = 0 on (1/2n) sum_i (<w, x_i> - y_i)^2:
    w_1 = P (1/n) sum_i y_i x_i, y^ = <w_1, x_q>. P (d, d), None for I_d. Z -> (B,)."""
    X, y, x_q = split_prompt(Z)
    d, n = X.shape[-1], X.shape[-2]
    P = torch.eye(d, dtype=Z.dtype) if preconditioner is None else preconditioner.to(Z.dtype)
    check_tensor("preconditioner", P, (d, d), "(d, d)")
    w_1 = (y.unsqueeze(1) @ X).squeeze(1) / n @ P.T        # (B, d)
    return (w_1 * x_q).sum(-1)


def optimal_preconditioner(n, d, cov_scale=None, dtype=torch.float32):
    """Gamma^-1, Gamma = (1 + 1/n) Lambda + tr(Lambda)/n I_d: the paper's global minimum for
    training with n examples and covariance Lambda (cov_scale as in regression_prompts). (d, d)"""
    lam = _covariance(cov_scale, d, dtype)
    gamma = (1 + 1 / n) * lam + torch.trace(lam) / n * torch.eye(d, dtype=dtype)
    return torch.linalg.inv(gamma)


def _covariance(cov_scale, d, dtype):
    """Lambda (d, d) from None, a number, a (d,) vector of variances or a (d, d) matrix."""
    if cov_scale is None:
        return torch.eye(d, dtype=dtype)
    if isinstance(cov_scale, bool):
        raise TypeError("cov_scale: expected None, a number, a (d,) or a (d, d) tensor, got bool")
    if isinstance(cov_scale, (int, float)):
        if not cov_scale >= 0:
            raise ValueError(f"cov_scale: a scale must be >= 0, got {cov_scale!r}")
        return cov_scale * torch.eye(d, dtype=dtype)
    if not isinstance(cov_scale, torch.Tensor):
        raise TypeError(f"cov_scale: expected None, a number, a (d,) or a (d, d) tensor, got "
                        f"{type(cov_scale).__name__}")
    lam = cov_scale.to(dtype)
    if lam.dim() == 1 and lam.shape[0] == d:
        if (lam < 0).any():
            raise ValueError(f"cov_scale: variances must be >= 0, got {lam.tolist()}")
        return torch.diag(lam)
    if lam.shape != (d, d):
        raise ValueError(f"cov_scale: expected shape (d,) = ({d},) or (d, d) = ({d}, {d}), "
                         f"got {tuple(lam.shape)}")
    if not torch.allclose(lam, lam.T, atol=1e-6):
        raise ValueError("cov_scale: a covariance matrix must be symmetric")
    if torch.linalg.eigvalsh(lam.double()).min() < -1e-6:
        raise ValueError("cov_scale: a covariance matrix must be positive semi-definite")
    return lam


def _covariance_root(cov_scale, d, dtype):
    """R with R R^T = Lambda (None for the identity), from the eigendecomposition so that a
    singular Lambda works too."""
    if cov_scale is None:
        return None
    lam = _covariance(cov_scale, d, torch.float64)
    evals, evecs = torch.linalg.eigh(lam)
    return (evecs * evals.clamp_min(0).sqrt()).to(dtype)
