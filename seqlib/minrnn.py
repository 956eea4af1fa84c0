"""minGRU and minLSTM (Feng et al., 2024, "Were RNNs All We Needed?"): gates that read only x_t.

Shapes (book/notation.md):
    B  batch      T  length      D  input width      N  hidden (state) size
    x : (B, T, D)      h : (B, T, N)      h0, h_t : (B, N)      x_t : (B, D)

Take the GRU of chapter 2 and delete every h_{t-1} from inside its gates:

    minGRU:   z_t = sigmoid(Linear_z(x_t))          h~_t = g(Linear_h(x_t))
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

    minLSTM:  f_t = sigmoid(Linear_f(x_t))          i_t = sigmoid(Linear_i(x_t))
              f'_t = f_t / (f_t + i_t)              i'_t = i_t / (f_t + i_t)
              h_t = f'_t * h_{t-1} + i'_t * h~_t    h~_t = g(Linear_h(x_t))

Nothing inside the gates depends on the state any more, so every a_t (the 1 - z_t or f'_t) and
b_t (the z_t * h~_t or i'_t * h~_t) is known for all t at once, and h_t = a_t h_{t-1} + b_t is a
linear recurrence: one parallel scan (``seqlib.scan``) instead of T dependent steps.

Two parallel faces, chosen by ``mode``:
    "linear"  ``linear_scan`` on (a, b)
    "log"     ``log_linear_scan`` on (log a, log b), the paper's form: log a and log b come
              straight from softplus, so no product of gates underflows. It needs b_t > 0, which
              is why the candidate goes through  g(x) = x + 1/2 (x >= 0), sigmoid(x) (x < 0),
              a positive, continuous, monotone stand-in for the identity.
The state h0 enters as exp(sum log a) * h0 in both modes, so h0 may have any sign.
And one recurrent face, ``step(state, x_t)``, the loop a deployed model runs; tests hold the
three equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlib.recurrent import check_tensor
from seqlib.scan import linear_scan, log_linear_scan

__all__ = ["MinGRU", "MinLSTM", "g", "log_g"]

MODES = ("log", "linear")


def g(x):
    """The paper's positive activation: x + 1/2 for x >= 0, sigmoid(x) for x < 0 (continuous)."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x):
    """log g(x), computed without forming g: log(x + 1/2) or -softplus(-x)."""
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class _MinRNN(nn.Module):
    """What minGRU and minLSTM share: the checks, the two parallel faces and the step face.
    A subclass implements ``_log_coefficients(x) -> (log a, log b_gate)`` with b = b_gate * h~,
    and ``_coefficients(x) -> (a, b_gate)``."""

    gate_names: tuple = ()

    def __init__(self, input_size, hidden_size, bias=True, mode="log", positive=True,
                 device=None, dtype=None):
        super().__init__()
        for name, val in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        _check_mode(mode, positive)
        self.input_size, self.hidden_size, self.mode, self.positive = \
            input_size, hidden_size, mode, positive
        factory = {"device": device, "dtype": dtype}
        for name in self.gate_names + ("h",):
            setattr(self, f"linear_{name}", nn.Linear(input_size, hidden_size, bias, **factory))

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, mode={self.mode!r}, "
                f"positive={self.positive}")

    def candidate(self, x):
        """h~ = g(Linear_h(x)) (positive=True) or Linear_h(x)."""
        k = self.linear_h(x)
        return g(k) if self.positive else k

    def forward(self, x, h0=None, mode=None):
        """x: (B, T, D); h0: (B, N) or None (zeros); mode: overrides self.mode.
        Returns (h (B, T, N), h_T (B, N))."""
        mode = self.mode if mode is None else mode
        _check_mode(mode, self.positive)
        check_tensor("x", x, (None, None, self.input_size), "(B, T, D)")
        B, T, _ = x.shape
        if h0 is not None:
            check_tensor("h0", h0, (B, self.hidden_size), "(B, N)")
        if T == 0:
            h_T = x.new_zeros(B, self.hidden_size) if h0 is None else h0
            return x.new_zeros(B, 0, self.hidden_size), h_T
        if mode == "linear":
            a, b_gate = self._coefficients(x)
            h = linear_scan(a, b_gate * self.candidate(x), h0)
        else:
            log_a, log_b_gate = self._log_coefficients(x)
            h = log_linear_scan(log_a, log_b_gate + log_g(self.linear_h(x))).exp()
            if h0 is not None:  # h0 enters linearly, so it may be zero or negative
                h = h + torch.cumsum(log_a, 1).exp() * h0.unsqueeze(1)
        return h, h[:, -1]

    def step(self, state, x_t):
        """The recurrent face: state (B, N) or None, x_t (B, D) -> (h_t, h_t), h_t (B, N)."""
        check_tensor("x_t", x_t, (None, self.input_size), "(B, D)")
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.hidden_size)
        check_tensor("state", state, (x_t.shape[0], self.hidden_size), "(B, N)")
        a, b_gate = self._coefficients(x_t)
        h = a * state + b_gate * self.candidate(x_t)
        return h, h


class MinGRU(_MinRNN):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t h~_t with z_t = sigmoid(Linear_z(x_t)).

    MinGRU(input_size D, hidden_size N, bias=True, mode="log"|"linear", positive=True)
    positive=True puts the candidate through g (needed by mode="log"); positive=False keeps it
    linear, as the paper's sequential minGRU does, and allows mode="linear" only.
    forward(x (B, T, D), h0=None, mode=None) -> (h (B, T, N), h_T (B, N))
    step(state (B, N) or None, x_t (B, D)) -> (h_t, h_t)
    Parameters: linear_z, linear_h (each nn.Linear(D, N)): 2N(D + 1), a third of a GRU's.
    """
    gate_names = ("z",)

    def _coefficients(self, x):
        z = torch.sigmoid(self.linear_z(x))
        return 1 - z, z

    def _log_coefficients(self, x):
        k = self.linear_z(x)
        return -F.softplus(k), -F.softplus(-k)          # log(1 - z), log z


class MinLSTM(_MinRNN):
    """minLSTM: h_t = f'_t h_{t-1} + i'_t h~_t with f', i' the normalised forget and input gates.

    MinLSTM(input_size D, hidden_size N, bias=True, mode="log"|"linear", positive=True)
    forward(x (B, T, D), h0=None, mode=None) -> (h (B, T, N), h_T (B, N))
    step(state (B, N) or None, x_t (B, D)) -> (h_t, h_t)
    Parameters: linear_f, linear_i, linear_h (each nn.Linear(D, N)).
    """
    gate_names = ("f", "i")

    def _coefficients(self, x):
        f, i = torch.sigmoid(self.linear_f(x)), torch.sigmoid(self.linear_i(x))
        return f / (f + i), i / (f + i)

    def _log_coefficients(self, x):
        # log f' = log f - log(f + i) = -softplus(log i - log f), and log i - log f is
        # softplus(-k_f) - softplus(-k_i) (log sigmoid(k) = -softplus(-k)); likewise for i'.
        diff = F.softplus(-self.linear_f(x)) - F.softplus(-self.linear_i(x))
        return -F.softplus(diff), -F.softplus(-diff)


def _check_mode(mode, positive):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "log" and not positive:
        raise ValueError("mode='log' needs positive=True (the log-space scan needs h~ > 0)")
