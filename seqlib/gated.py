"""Gated recurrence: the LSTM and the GRU, written to be read, as drop-ins for torch.nn.LSTM/GRU.

Shapes (book/notation.md):
    T  length      B  batch      D  input width      N  hidden (state) size
    x : (T, B, D)      h, c : (B, N)
    LSTM: W_ih (4N, D), W_hh (4N, N), gates stacked in PyTorch's order  i, f, g, o
    GRU : W_ih (3N, D), W_hh (3N, N), gates stacked in PyTorch's order  r, z, n

The LSTM (Hochreiter & Schmidhuber, 1997, with the forget gate of Gers et al., 2000):
    i, f, o = sigmoid(.),  g = tanh(.)        (each: x_t W_i?^T + b_i? + h_{t-1} W_h?^T + b_h?)
    c_t = f * c_{t-1} + i * g                 the constant error carousel, gated
    h_t = o * tanh(c_t)

The GRU (Cho et al., 2014):
    r, z = sigmoid(x_t W_i{r,z}^T + b_i{r,z} + h_{t-1} W_h{r,z}^T + b_h{r,z})
    n    = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))
    h_t  = (1 - z) * n + z * h_{t-1}

As for the Elman RNN (seqlib.rnn), each layer splits into the input projection, parallel over
time, and a recurrence over it (``lstm_recurrence``, ``gru_recurrence``), which the Triton kernels
of ``seqlib.kernels.lstm`` / ``seqlib.kernels.gru`` replace.
"""
from __future__ import annotations

import torch

from seqlib.recurrent import RecurrentBase, resolve_backend

__all__ = ["LSTM", "GRU", "lstm_cell", "gru_cell", "lstm_recurrence", "gru_recurrence"]


def lstm_cell(x_t, state, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step: x_t (B, D), state (h, c) each (B, N) -> (h, c)."""
    h, c = state
    pre = x_t @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    return _lstm_update(pre, c)


def _lstm_update(pre, c):
    i, f, g, o = pre.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_cell(x_t, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """One GRU step: x_t (B, D), h (B, N) -> h (B, N)."""
    xw = x_t @ w_ih.T
    if b_ih is not None:
        xw = xw + b_ih
    return _gru_update(xw, h, w_hh, b_hh)


def _gru_update(xw_t, h, w_hh, b_hh):
    hw = h @ w_hh.T
    if b_hh is not None:
        hw = hw + b_hh
    x_r, x_z, x_n = xw_t.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)  # the reset gate scales the recurrent term only
    return (1 - z) * n + z * h


def lstm_recurrence(xw, state, w_hh, lengths=None):
    """The sequential part of the LSTM.

    xw: (T, B, 4N), the input projections with both biases added; state: (h0, c0) each (B, N);
    w_hh: (4N, N); lengths: optional (B,), the state stops changing after step lengths[b].
    Returns (hs (T, B, N), (h_T, c_T)) with (h_T, c_T) taken at each sequence's last real step.
    """
    h, c = state
    hs = []
    for t, xw_t in enumerate(xw.unbind(0)):  # split once; per-step indexing is quadratic in backward
        h_new, c_new = _lstm_update(xw_t + h @ w_hh.T, c)
        if lengths is not None:
            live = (t < lengths).unsqueeze(-1)
            h_new, c_new = torch.where(live, h_new, h), torch.where(live, c_new, c)
        h, c = h_new, c_new
        hs.append(h)
    return _stack(hs, xw, h), (h, c)


def gru_recurrence(xw, h0, w_hh, b_hh=None, lengths=None):
    """The sequential part of the GRU.

    xw: (T, B, 3N), input projections with b_ih added (b_hh cannot be folded in: the reset gate
    multiplies its n-part); h0: (B, N); w_hh: (3N, N); b_hh: (3N,) or None; lengths as for LSTM.
    Returns (hs (T, B, N), h_T (B, N)).
    """
    h, hs = h0, []
    for t, xw_t in enumerate(xw.unbind(0)):
        h_new = _gru_update(xw_t, h, w_hh, b_hh)
        if lengths is not None:
            h_new = torch.where((t < lengths).unsqueeze(-1), h_new, h)
        h = h_new
        hs.append(h)
    return _stack(hs, xw, h), h


def _stack(hs, xw, h):
    return torch.stack(hs) if hs else xw.new_zeros(0, *h.shape)


class LSTM(RecurrentBase):
    """LSTM with the constructor, parameters and outputs of ``torch.nn.LSTM`` (no proj_size).

    forward(x, hx=None, lengths=None) -> (output, (h_n, c_n)); x may be a PackedSequence.
    step((h, c) or None, x_t) -> (y_t, (h, c)), each state (L, B, N).
    """
    gates, state_arity = 4, 2

    def _layer(self, x, state, weights, lengths):
        w_ih, w_hh, b_ih, b_hh = weights
        xw = x @ w_ih.T
        if b_ih is not None:
            xw = xw + (b_ih + b_hh)
        if resolve_backend(self.backend, x) == "triton":
            from seqlib.kernels.lstm import lstm_recurrence_triton
            return lstm_recurrence_triton(xw, state, w_hh, lengths)
        return lstm_recurrence(xw, state, w_hh, _on(lengths, x))

    def _cell(self, x_t, state, weights):
        return lstm_cell(x_t, state, *weights)


class GRU(RecurrentBase):
    """GRU with the constructor, parameters and outputs of ``torch.nn.GRU``.

    forward(x, hx=None, lengths=None) -> (output, h_n); x may be a PackedSequence.
    step(h or None, x_t) -> (y_t, h), the state (L, B, N).
    """
    gates, state_arity = 3, 1

    def _layer(self, x, h0, weights, lengths):
        w_ih, w_hh, b_ih, b_hh = weights
        xw = x @ w_ih.T
        if b_ih is not None:
            xw = xw + b_ih
        if resolve_backend(self.backend, x) == "triton":
            from seqlib.kernels.gru import gru_recurrence_triton
            return gru_recurrence_triton(xw, h0, w_hh, b_hh, lengths)
        return gru_recurrence(xw, h0, w_hh, b_hh, _on(lengths, x))

    def _cell(self, x_t, h, weights):
        return gru_cell(x_t, h, *weights)


def _on(lengths, x):
    return None if lengths is None else lengths.to(x.device)
