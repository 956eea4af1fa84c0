"""Autoregressive models AR(p), fitted by least squares: the classical baseline for forecasting.

    y_t = c + a_1 y_{t-1} + a_2 y_{t-2} + ... + a_p y_{t-p} + e_t

Shapes:
    n  series length      p  order      M = n - p  number of (lags, target) pairs

``lag_matrix`` turns a series into a regression problem, ``fit_ar`` solves it with
``numpy.linalg.lstsq``, and ``ar_predict`` makes one-step-ahead forecasts. AR-Net (Triebe et
al., 2019) fits the same p coefficients with a single linear layer trained by gradient descent;
the chapter checks that it finds the least-squares coefficients.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ARModel", "lag_matrix", "fit_ar", "ar_predict", "simulate_ar"]


@dataclass
class ARModel:
    """coef: (p,) with coef[k - 1] = a_k, the weight of y_{t-k}; intercept: c."""

    coef: np.ndarray
    intercept: float

    @property
    def order(self) -> int:
        return len(self.coef)


def lag_matrix(series: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Lags and targets of a series (n,): X (M, p) with X[i, k-1] = y[i + p - k], y (M,) = y[i + p].

    Column k - 1 holds lag k, so ``X @ coef`` is sum_k a_k y_{t-k}.
    """
    series = np.asarray(series, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"series: expected a 1-D array (n,), got shape {series.shape}")
    if not 1 <= p < len(series):
        raise ValueError(f"p: expected 1 <= p < n = {len(series)}, got {p}")
    M = len(series) - p
    X = np.stack([series[p - k: p - k + M] for k in range(1, p + 1)], axis=1)
    return X, series[p:]


def fit_ar(series: np.ndarray, p: int, intercept: bool = True) -> ARModel:
    """Least-squares AR(p): minimise sum_t (y_t - c - sum_k a_k y_{t-k})^2 over c and a."""
    X, y = lag_matrix(series, p)
    if intercept:
        X = np.concatenate([X, np.ones((len(X), 1))], axis=1)
    sol, *_ = np.linalg.lstsq(X, y, rcond=None)
    return ARModel(sol[:p], float(sol[p]) if intercept else 0.0)


def ar_predict(model: ARModel, series: np.ndarray, start: int | None = None) -> np.ndarray:
    """One-step-ahead forecasts of series[t] from the true series[t - p : t], for t >= start.

    start defaults to p (the first step with a full set of lags); returns (n - start,).
    """
    p = model.order
    start = p if start is None else start
    if start < p:
        raise ValueError(f"start: the first forecast needs p = {p} past values, got start={start}")
    X, _ = lag_matrix(series, p)
    return X[start - p:] @ model.coef + model.intercept


def simulate_ar(coef, n: int, noise_std: float = 1.0, intercept: float = 0.0, burn_in: int = 200,
                seed: int = 0) -> np.ndarray:
    """A sample path (n,) of an AR(p) process with Gaussian noise, after ``burn_in`` steps."""
    coef = np.asarray(coef, dtype=np.float64)
    rng = np.random.default_rng(seed)
    p = len(coef)
    y = np.zeros(n + burn_in + p)
    e = rng.normal(0.0, noise_std, size=len(y))
    for t in range(p, len(y)):
        y[t] = intercept + coef @ y[t - p:t][::-1] + e[t]
    return y[-n:]
