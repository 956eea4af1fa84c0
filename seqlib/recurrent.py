"""What every multi-layer recurrent network in seqlib shares with torch.nn.RNN/LSTM/GRU.

Shapes (book/notation.md):
    T  length      B  batch      D  input width      N  hidden (state) size
    L  layers      K  directions (1, or 2 when bidirectional)
    G  gates per cell (1 for the Elman RNN, 3 for the GRU, 4 for the LSTM)

``RecurrentBase`` owns the parts that are the same for all of them, so that each model file holds
only its cell: the constructor arguments and their checks, parameters named and shaped as PyTorch
names and shapes them (``weight_ih_l{k}`` of shape (G*N, D), ...), the walk over layers and
directions, ``batch_first``, unbatched input, dropout between layers, and variable-length batches
(a ``lengths`` argument, or a ``PackedSequence``) with the state frozen after each sequence ends.

A subclass sets ``gates`` and ``state_arity`` (1 for h, 2 for (h, c)) and implements
``_layer(x, state, weights, lengths) -> (out (T, B, N), final_state)`` for one layer and one
direction, and ``_cell(x_t, state, weights) -> state`` for its step face.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

BACKENDS = ("auto", "torch", "triton")


def resolve_backend(backend, x):
    """'auto' means the Triton kernel on CUDA float32 tensors and the PyTorch reference elsewhere
    (the kernels compute in float32; float64 and CPU tensors take the reference)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if x.is_cuda and x.dtype == torch.float32 else "torch"
    return backend


def reverse_padded(x, lengths):
    """Reverse each sequence of x (T, B, ...) within its own length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)          # (T, 1)
    n = lengths.to(x.device).unsqueeze(0)                      # (1, B)
    idx = torch.where(t < n, n - 1 - t, t)                     # (T, B)
    idx = idx.reshape(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


def check_tensor(name, t, shape, letters):
    """Raise a clear error unless t has len(shape) dims matching shape (None = any size)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {letters}, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != g for s, g in zip(shape, t.shape)):
        want = tuple("*" if s is None else s for s in shape)
        raise ValueError(f"{name}: expected shape {letters} = {want}, got {tuple(t.shape)}")


class RecurrentBase(nn.Module):
    gates = 1          # G: how many N-row blocks weight_ih and weight_hh stack
    state_arity = 1    # 1: state is h;  2: state is (h, c)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, backend="auto", device=None, dtype=None):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        for name, val in (("input_size", input_size), ("hidden_size", hidden_size),
                          ("num_layers", num_layers)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        if not 0.0 <= float(dropout) <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.backend = bidirectional, backend
        G, N, K = self.gates, hidden_size, self.num_directions
        factory = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            d_in = input_size if layer == 0 else N * K
            for suffix in ("", "_reverse")[:K]:
                s = f"_l{layer}{suffix}"
                setattr(self, "weight_ih" + s, nn.Parameter(torch.empty(G * N, d_in, **factory)))
                setattr(self, "weight_hh" + s, nn.Parameter(torch.empty(G * N, N, **factory)))
                if bias:
                    setattr(self, "bias_ih" + s, nn.Parameter(torch.empty(G * N, **factory)))
                    setattr(self, "bias_hh" + s, nn.Parameter(torch.empty(G * N, **factory)))
        self.reset_parameters()

    # ------------------------------------------------------------------ what subclasses provide
    def _layer(self, x, state, weights, lengths):
        raise NotImplementedError

    def _cell(self, x_t, state, weights):
        raise NotImplementedError

    # ------------------------------------------------------------------ shared machinery
    def reset_parameters(self):
        """U(-1/sqrt(N), 1/sqrt(N)) for every parameter, as PyTorch's recurrent layers do."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"bidirectional={self.bidirectional}, backend={self.backend!r}")

    def layer_weights(self, layer, direction=0):
        """(w_ih (G*N, D), w_hh (G*N, N), b_ih (G*N,) or None, b_hh (G*N,) or None)."""
        s = f"_l{layer}" + ("_reverse" if direction else "")
        w_ih, w_hh = getattr(self, "weight_ih" + s), getattr(self, "weight_hh" + s)
        b_ih = getattr(self, "bias_ih" + s) if self.bias else None
        b_hh = getattr(self, "bias_hh" + s) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def forward(self, x, hx=None, lengths=None):
        """x: (T, B, D) or (B, T, D) with batch_first, (T, D) unbatched, or a PackedSequence.

        hx: the initial state, (L*K, B, N) (a pair of them for the LSTM), or None for zeros.
        lengths: optional (B,) integers, each in 1..T: sequence b is x[:lengths[b], b].
        Returns (output, final_state) as the matching torch.nn module does.
        """
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("lengths: give either a PackedSequence or lengths, not both")
            sorted_idx = x.sorted_indices
            x, lengths = pad_packed_sequence(x, batch_first=False)
            batch_first = False
        else:
            batch_first = self.batch_first
        x, hx, lengths, unbatched = self._check_inputs(x, hx, lengths, batch_first)
        if batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        K, N = self.num_directions, self.hidden_size
        if hx is None:
            zeros = x.new_zeros(self.num_layers * K, B, N)
            hx = zeros if self.state_arity == 1 else (zeros, zeros)
        finals, layer_in = [], x
        for layer in range(self.num_layers):
            outs = []
            for direction in range(K):
                i = layer * K + direction
                state = hx[i] if self.state_arity == 1 else (hx[0][i], hx[1][i])
                seq = reverse_padded(layer_in, lengths) if direction else layer_in
                out, final = self._layer(seq, state, self.layer_weights(layer, direction), lengths)
                outs.append(reverse_padded(out, lengths) if direction else out)
                finals.append(final)
            layer_in = outs[0] if K == 1 else torch.cat(outs, dim=-1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        output = layer_in
        if self.state_arity == 1:
            final = torch.stack(finals)
        else:
            final = tuple(torch.stack(f) for f in zip(*finals))
        if packed:
            output = pack_padded_sequence(output, lengths, enforce_sorted=False)
            assert torch.equal(output.sorted_indices, sorted_idx)
            return output, final
        if lengths is not None:  # padded positions read as zeros, as pad_packed_sequence gives
            mask = torch.arange(T, device=x.device).unsqueeze(1) < lengths.to(x.device)
            output = output * mask.unsqueeze(-1)
        if batch_first:
            output = output.transpose(0, 1)
        if unbatched:
            output = output.squeeze(0 if batch_first else 1)
            final = final.squeeze(1) if self.state_arity == 1 else tuple(f.squeeze(1) for f in final)
        return output, final

    def step(self, state, x_t):
        """The recurrent face: one time step through every layer.

        state: (L, B, N) (a pair of them for the LSTM) or None for zeros; x_t: (B, D).
        Returns (y_t (B, N), new_state). Running step over t = 0..T-1 gives forward's outputs
        (unidirectional only: a bidirectional network reads the future, so has no step face).
        """
        if self.bidirectional:
            raise ValueError("step: a bidirectional network has no recurrent face (it reads the future)")
        check_tensor("x_t", x_t, (None, self.input_size), "(B, D)")
        B = x_t.shape[0]
        expected = (self.num_layers, B, self.hidden_size)
        if state is None:
            zeros = x_t.new_zeros(expected)
            state = zeros if self.state_arity == 1 else (zeros, zeros)
        parts = (state,) if self.state_arity == 1 else tuple(state)
        for name, s in zip(("state", "state[1]"), parts):
            if tuple(s.shape) != expected:
                raise ValueError(f"{name}: expected shape (L, B, N) = {expected}, got {tuple(s.shape)}")
        inp, new = x_t, []
        for layer in range(self.num_layers):
            s = parts[0][layer] if self.state_arity == 1 else (parts[0][layer], parts[1][layer])
            s = self._cell(inp, s, self.layer_weights(layer))
            inp = s if self.state_arity == 1 else s[0]
            new.append(s)
        if self.state_arity == 1:
            return inp, torch.stack(new)
        return inp, tuple(torch.stack(p) for p in zip(*new))

    def _check_inputs(self, x, hx, lengths, batch_first):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input: expected a torch.Tensor or PackedSequence, got {type(x).__name__}")
        layout = "(B, T, D)" if batch_first else "(T, B, D)"
        if x.dim() not in (2, 3):
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
            x = x.unsqueeze(0 if batch_first else 1)
        B = x.shape[0] if batch_first else x.shape[1]
        T = x.shape[1] if batch_first else x.shape[0]
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, T)
        LK = self.num_layers * self.num_directions
        if hx is not None:
            parts = (hx,) if self.state_arity == 1 else hx
            if self.state_arity == 2 and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
                raise TypeError("hx: expected a pair (h0, c0) of tensors (L*K, B, N)")
            want = (LK, self.hidden_size) if unbatched else (LK, B, self.hidden_size)
            for name, h in zip(("hx", "hx[1]") if self.state_arity == 2 else ("hx",), parts):
                if name == "hx" and self.state_arity == 2:
                    name = "hx[0]"
                if not isinstance(h, torch.Tensor):
                    raise TypeError(f"{name}: expected a torch.Tensor, got {type(h).__name__}")
                if tuple(h.shape) != want:
                    raise ValueError(f"{name}: expected shape (L*K, B, N) = {want}, got {tuple(h.shape)}")
                if h.dtype != x.dtype or h.device != x.device:
                    raise TypeError(f"{name}: expected dtype/device {x.dtype}/{x.device}, "
                                    f"got {h.dtype}/{h.device}")
            if unbatched:
                parts = tuple(h.unsqueeze(1) for h in parts)
            hx = parts[0] if self.state_arity == 1 else tuple(parts)
        return x, hx, lengths, unbatched

    @staticmethod
    def _check_lengths(lengths, B, T):
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"lengths: expected shape (B,) = ({B},), got {tuple(lengths.shape)}")
        if lengths.is_floating_point() or lengths.is_complex():
            raise TypeError(f"lengths: expected integers, got dtype {lengths.dtype}")
        lengths = lengths.to("cpu", torch.int64)
        if len(lengths) and (lengths.min() < 1 or lengths.max() > T):
            raise ValueError(f"lengths: every length must be in 1..T = 1..{T}, got "
                             f"min {int(lengths.min())}, max {int(lengths.max())}")
        return lengths
