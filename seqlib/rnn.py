"""The Elman recurrent network, written to be read, and a drop-in for ``torch.nn.RNN``.

Shapes (book/notation.md):
    T  length              B  batch
    D  input width         N  hidden (state) size
    L  layers              K  directions (1, or 2 when bidirectional)

    x    : (T, B, D)   or (B, T, D) with batch_first
    h    : (B, N)      one layer's state;  hx, h_n: (L*K, B, N)
    W_ih : (N, D)      W_hh : (N, N)      b_ih, b_hh : (N,)

The recurrence (Elman, 1990):

    h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),     f = tanh or relu

It splits into a part that is parallel over time (the input projection ``xw``, one big matrix
product) and a part that is not (the recurrence over ``xw``). ``rnn_recurrence`` is that second
part; it is the piece the Triton kernel in ``seqlib.kernels.rnn`` replaces.
"""
from __future__ import annotations

import torch

from seqlib.recurrent import RecurrentBase, resolve_backend

__all__ = ["RNN", "rnn_layer", "rnn_recurrence", "rnn_cell"]

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


def rnn_cell(x_t, h, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh"):
    """One step of the Elman RNN: x_t (B, D), h (B, N) -> h_next (B, N)."""
    pre = x_t @ w_ih.T + h @ w_hh.T
    if b_ih is not None:
        pre = pre + b_ih + b_hh
    return _NONLINEARITIES[nonlinearity](pre)


def rnn_recurrence(xw, h0, w_hh, nonlinearity="tanh"):
    """The sequential part of the RNN, in plain PyTorch.

    xw: (T, B, N) input projections with both biases added; h0: (B, N); w_hh: (N, N).
    Returns hs: (T, B, N), hs[t] = f(xw[t] + hs[t-1] @ w_hh.T) with hs[-1] = h0.
    """
    f = _NONLINEARITIES[nonlinearity]
    h, hs = h0, []
    for xw_t in xw.unbind(0):  # split once: per-step indexing would make backward quadratic in T
        h = f(xw_t + h @ w_hh.T)
        hs.append(h)
    if not hs:
        return xw.new_zeros(0, *h0.shape)
    return torch.stack(hs)


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, nonlinearity="tanh", backend="torch"):
    """One layer, one direction. x: (T, B, D), h0: (B, N) -> (out (T, B, N), h_T (B, N))."""
    xw = x @ w_ih.T  # (T, B, N): all time steps in one matrix product
    if b_ih is not None:
        xw = xw + (b_ih + b_hh)
    if resolve_backend(backend, x) == "triton":
        from seqlib.kernels.rnn import rnn_recurrence_triton

        out = rnn_recurrence_triton(xw, h0, w_hh, nonlinearity)
    else:
        out = rnn_recurrence(xw, h0, w_hh, nonlinearity)
    h_T = out[-1] if out.shape[0] > 0 else h0
    return out, h_T


class RNN(RecurrentBase):
    """Elman RNN with the constructor, parameters and outputs of ``torch.nn.RNN``.

    A ``torch.nn.RNN`` state_dict loads into it unchanged, and for the same parameters it
    returns the same ``(output, h_n)``. It adds a recurrent face, :meth:`step`, variable-length
    batches (``lengths=`` or a ``PackedSequence``), and a ``backend`` argument: ``"torch"`` (this
    file), ``"triton"`` (the fused kernel of ``seqlib.kernels.rnn``; on a CPU it runs in Triton's
    interpreter) or ``"auto"`` (Triton on CUDA tensors).

    forward(x, hx=None, lengths=None):
        x : (T, B, D), or (B, T, D) if batch_first, or (T, D) unbatched
        hx: (L*K, B, N), or (L*K, N) unbatched
        returns output (T, B, K*N) (batch_first: (B, T, K*N)) and h_n (L*K, B, N)
    step(state, x_t): state (L, B, N) or None, x_t (B, D) -> (y_t (B, N), state (L, B, N))
    """
    gates, state_arity = 1, 1

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, backend="auto",
                 device=None, dtype=None):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, backend, device, dtype)

    def extra_repr(self):
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"

    def _layer(self, x, h0, weights, lengths):
        out, h_T = rnn_layer(x, h0, *weights, self.nonlinearity, self.backend)
        if lengths is not None:
            # No need to freeze the state after a sequence ends: what comes after only reaches
            # padded positions (masked by the caller); the final state is read at the last real step.
            h_T = out[lengths.to(x.device) - 1, torch.arange(x.shape[1], device=x.device)]
        return out, h_T

    def _cell(self, x_t, h, weights):
        return rnn_cell(x_t, h, *weights, self.nonlinearity)
