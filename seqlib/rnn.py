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

import math

import torch
from torch import nn

__all__ = ["RNN", "rnn_layer", "rnn_recurrence", "rnn_cell"]

_NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}
_BACKENDS = ("auto", "torch", "triton")


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
    if _resolve_backend(backend, x) == "triton":
        from seqlib.kernels.rnn import rnn_recurrence_triton

        out = rnn_recurrence_triton(xw, h0, w_hh, nonlinearity)
    else:
        out = rnn_recurrence(xw, h0, w_hh, nonlinearity)
    h_T = out[-1] if out.shape[0] > 0 else h0
    return out, h_T


def _resolve_backend(backend, x):
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if x.is_cuda else "torch"
    return backend


class RNN(nn.Module):
    """Elman RNN with the constructor, parameters and outputs of ``torch.nn.RNN``.

    A ``torch.nn.RNN`` state_dict loads into it unchanged, and for the same parameters it
    returns the same ``(output, h_n)``. It adds a recurrent face, :meth:`step`, and a
    ``backend`` argument: ``"torch"`` (this file), ``"triton"`` (the fused kernel of
    ``seqlib.kernels.rnn``; on a CPU it runs in Triton's interpreter) or ``"auto"``.

    forward(x, hx=None):
        x : (T, B, D), or (B, T, D) if batch_first, or (T, D) unbatched
        hx: (L*K, B, N), or (L*K, N) unbatched
        returns output (T, B, K*N) (batch_first: (B, T, K*N)) and h_n (L*K, B, N)
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, backend="auto",
                 device=None, dtype=None):
        super().__init__()
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        for name, val in (("input_size", input_size), ("hidden_size", hidden_size),
                          ("num_layers", num_layers)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bias, batch_first
        self.dropout, self.bidirectional, self.backend = float(dropout), bidirectional, backend
        k = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else hidden_size * k
            for suffix in ("", "_reverse")[:k]:
                s = f"_l{layer}{suffix}"
                setattr(self, "weight_ih" + s, nn.Parameter(torch.empty(hidden_size, d_in, **factory)))
                setattr(self, "weight_hh" + s, nn.Parameter(torch.empty(hidden_size, hidden_size, **factory)))
                if bias:
                    setattr(self, "bias_ih" + s, nn.Parameter(torch.empty(hidden_size, **factory)))
                    setattr(self, "bias_hh" + s, nn.Parameter(torch.empty(hidden_size, **factory)))
        self.reset_parameters()

    def reset_parameters(self):
        """U(-1/sqrt(N), 1/sqrt(N)) for every parameter, as torch.nn.RNN does."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += f", nonlinearity={self.nonlinearity!r}, bias={self.bias}, batch_first={self.batch_first}"
        s += f", dropout={self.dropout}, bidirectional={self.bidirectional}, backend={self.backend!r}"
        return s

    def _weights(self, layer, direction):
        s = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(self, "weight_ih" + s), getattr(self, "weight_hh" + s)
        b_ih = getattr(self, "bias_ih" + s) if self.bias else None
        b_hh = getattr(self, "bias_hh" + s) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def forward(self, x, hx=None):
        x, hx, unbatched = self._check_inputs(x, hx)
        if self.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        K, N = self.num_directions, self.hidden_size
        if hx is None:
            hx = x.new_zeros(self.num_layers * K, B, N)
        h_n, layer_in = [], x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(K):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
                seq = layer_in.flip(0) if direction else layer_in
                out, h_T = rnn_layer(seq, hx[layer * K + direction], w_ih, w_hh, b_ih, b_hh,
                                     self.nonlinearity, self.backend)
                outs.append(out.flip(0) if direction else out)
                h_n.append(h_T)
            layer_in = outs[0] if K == 1 else torch.cat(outs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        output, h_n = layer_in, torch.stack(h_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if unbatched:
            output, h_n = output.squeeze(1 if not self.batch_first else 0), h_n.squeeze(1)
        return output, h_n

    def step(self, state, x_t):
        """The recurrent face: one time step for every layer.

        state: (L, B, N) or None (zeros); x_t: (B, D). Returns (y_t (B, N), new_state (L, B, N)).
        Running ``step`` over t = 0..T-1 gives the same outputs as ``forward`` (unidirectional only:
        a bidirectional network needs the future, so it has no step face).
        """
        if self.bidirectional:
            raise ValueError("step: a bidirectional RNN has no recurrent face (it reads the future)")
        _check_tensor("x_t", x_t, (None, self.input_size), "(B, D)")
        B = x_t.shape[0]
        expected = (self.num_layers, B, self.hidden_size)
        if state is None:
            state = x_t.new_zeros(expected)
        elif tuple(state.shape) != expected:
            raise ValueError(f"state: expected shape (L, B, N) = {expected}, got {tuple(state.shape)}")
        inp, new_state = x_t, []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer, 0)
            inp = rnn_cell(inp, state[layer], w_ih, w_hh, b_ih, b_hh, self.nonlinearity)
            new_state.append(inp)
        return inp, torch.stack(new_state)

    def _check_inputs(self, x, hx):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (2, 3):
            layout = "(B, T, D)" if self.batch_first else "(T, B, D)"
            raise ValueError(f"input: expected a 3-D tensor {layout} (or 2-D (T, D) unbatched), "
                             f"got {x.dim()}-D with shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input: expected last dimension D = input_size = {self.input_size}, "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"input: expected a floating-point tensor, got dtype {x.dtype}")
        p = self.weight_ih_l0
        if x.dtype != p.dtype or x.device != p.device:
            raise TypeError(f"input: dtype/device {x.dtype}/{x.device} does not match the "
                            f"parameters' {p.dtype}/{p.device}")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1 if not self.batch_first else 0)
        B = x.shape[0] if self.batch_first else x.shape[1]
        LK = self.num_layers * self.num_directions
        if hx is not None:
            want = (LK, self.hidden_size) if unbatched else (LK, B, self.hidden_size)
            if tuple(hx.shape) != want:
                raise ValueError(f"hx: expected shape (L*K, B, N) = {want}, got {tuple(hx.shape)}")
            if hx.dtype != x.dtype or hx.device != x.device:
                raise TypeError(f"hx: expected dtype/device {x.dtype}/{x.device}, "
                                f"got {hx.dtype}/{hx.device}")
            if unbatched:
                hx = hx.unsqueeze(1)
        return x, hx, unbatched


def _check_tensor(name, t, shape, letters):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {letters}, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != g for s, g in zip(shape, t.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape {letters} = {want}, got {tuple(t.shape)}")
