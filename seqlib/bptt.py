"""Backpropagation through time, written out by hand for the tanh Elman RNN.

Shapes (book/notation.md):
    T  length      B  batch      D  input width      N  hidden (state) size

The forward pass, with one bias b = b_ih + b_hh (the two only ever appear as a sum):

    a_t = x_t W_ih^T + h_{t-1} W_hh^T + b          (B, N)   pre-activation
    h_t = tanh(a_t)                                  (B, N)   t = 1..T, h_0 given

Given dL/dh_t from the loss at every step ("direct" gradients, ``dhs``), the backward pass walks
time in reverse and carries one (B, N) tensor, the gradient that reaches h_t from the future:

    g_t   = dhs_t + g_{t+1}-carry                  total gradient at h_t
    da_t  = g_t * (1 - h_t^2)                      through tanh
    carry = da_t W_hh                              to h_{t-1}
    dW_ih += da_t^T x_t,   dW_hh += da_t^T h_{t-1},   db += sum_B da_t,   dx_t = da_t W_ih

Truncated BPTT stops that walk: with ``truncate=k`` the loss at step t sends gradient back
through at most k steps (to a_t, ..., a_{t-k+1}) and no further.
"""
from __future__ import annotations

import torch

__all__ = ["rnn_forward", "rnn_backward", "state_jacobian_norms"]


def rnn_forward(x, h0, w_ih, w_hh, b):
    """The tanh RNN, keeping every state for the backward pass.

    x: (T, B, D), h0: (B, N), w_ih: (N, D), w_hh: (N, N), b: (N,).
    Returns hs: (T + 1, B, N) with hs[0] = h0 and hs[t] = h_t.
    """
    hs = [h0]
    for x_t in x.unbind(0):
        hs.append(torch.tanh(x_t @ w_ih.T + hs[-1] @ w_hh.T + b))
    return torch.stack(hs)


def rnn_backward(x, hs, w_ih, w_hh, dhs, truncate=None):
    """Gradients of a loss L through the tanh RNN, by hand.

    x: (T, B, D); hs: (T + 1, B, N) from :func:`rnn_forward`; dhs: (T, B, N) with
    dhs[t - 1] = dL/dh_t, the part of the gradient that comes straight from the loss at step t.
    truncate: None for full BPTT, or k >= 1 to let each step's loss reach back only k steps.

    Returns (dw_ih (N, D), dw_hh (N, N), db (N,), dh0 (B, N), dx (T, B, D)).
    """
    if truncate is not None and truncate < 1:
        raise ValueError(f"truncate must be None or >= 1, got {truncate}")
    T = x.shape[0]
    dw_ih, dw_hh = torch.zeros_like(w_ih), torch.zeros_like(w_hh)
    db, dx = torch.zeros_like(w_hh[0]), torch.zeros_like(x)
    dh0 = torch.zeros_like(hs[0])

    def one_step(t, g):  # g: total gradient at h_{t+1} (0-based t); returns the carry to h_t
        da = g * (1 - hs[t + 1] ** 2)
        dw_ih.add_(da.T @ x[t])
        dw_hh.add_(da.T @ hs[t])
        db.add_(da.sum(0))
        dx[t] += da @ w_ih
        return da @ w_hh

    if truncate is None:  # full BPTT: one reverse sweep, the carry sums all futures, O(T)
        g = torch.zeros_like(hs[0])
        for t in reversed(range(T)):
            g = one_step(t, dhs[t] + g)
        dh0 += g
    else:  # each loss term walks back on its own for at most k steps, O(T k)
        for t in range(T):
            g = dhs[t]
            for s in range(t, max(t - truncate, -1), -1):
                g = one_step(s, g)
            if t < truncate:  # the walk reached h_0 before it was cut
                dh0 += g
    return dw_ih, dw_hh, db, dh0, dx


def state_jacobian_norms(hs, w_hh, nonlinearity="tanh"):
    """Spectral norms of dh_T / dh_{T-k} for k = 0..T, for batch element 0.

    hs: (T + 1, B, N) states from :func:`rnn_forward` (hs[0] = h_0); w_hh: (N, N).
    Each step's Jacobian is dh_t / dh_{t-1} = diag(f'(a_t)) W_hh, with f'(a_t) = 1 - h_t^2 for
    tanh and 1 for the linearised network ("linear"). Returns (T + 1,) with entry k the 2-norm of
    the product of the last k Jacobians (entry 0 is 1, the identity).
    """
    if nonlinearity not in ("tanh", "linear"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'linear', got {nonlinearity!r}")
    T = hs.shape[0] - 1
    J = torch.eye(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device)
    norms = [1.0]
    for t in range(T, 0, -1):  # J <- J @ dh_t/dh_{t-1}, from t = T down to 1
        step = w_hh if nonlinearity == "linear" else (1 - hs[t, 0] ** 2)[:, None] * w_hh
        J = J @ step
        norms.append(float(torch.linalg.matrix_norm(J, ord=2)))
    return torch.tensor(norms, dtype=torch.float64)
