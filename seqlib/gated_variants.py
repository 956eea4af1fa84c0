"""LSTM variants with one part switched off, for gate ablations in the spirit of Greff et al. (2017).

Shapes (book/notation.md):
    T  length      B  batch      D  input width      N  hidden (state) size
    pre : (B, 4N)  the pre-activations of the gates, stacked in PyTorch's order i, f, g, o

The standard LSTM step (``seqlib.gated``) is

    i, f, o = sigmoid(pre_i), sigmoid(pre_f), sigmoid(pre_o),   g = tanh(pre_g)
    c_t = f * c_{t-1} + i * g,        h_t = o * tanh(c_t)

and each variant changes exactly one thing (Greff et al.'s abbreviations in brackets):

    "vanilla"                the standard LSTM above (no peepholes)
    "no_input_gate"   (NIG)  i = 1
    "no_forget_gate"  (NFG)  f = 1: the original LSTM of 1997, whose cell can only add
    "no_output_gate"  (NOG)  o = 1
    "no_input_act"    (NIAF) g = pre_g, no tanh
    "no_output_act"   (NOAF) h_t = o * c_t, no tanh
    "coupled_gates"   (CIFG) f = 1 - i, one gate decides both what to write and what to keep

A variant keeps all four weight blocks, so parameters load from and into ``torch.nn.LSTM``; the
block of a switched-off gate simply receives no gradient.

The module also holds the task the chapter's ablation uses, ``last_written_value``: a register
that is written now and then and must be read at every step, which needs a cell that can be reset.
"""
from __future__ import annotations

import torch

from seqlib.gated import LSTM

__all__ = ["VARIANTS", "lstm_variant_update", "LSTMVariant", "last_written_value", "set_forget_bias"]

VARIANTS = ("vanilla", "no_input_gate", "no_forget_gate", "no_output_gate", "no_input_act",
            "no_output_act", "coupled_gates")


def lstm_variant_update(pre, c, variant="vanilla"):
    """One step's gates and state update. pre: (B, 4N), c: (B, N) -> (h, c), each (B, N)."""
    i, f, g, o = pre.chunk(4, dim=-1)
    i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
    g = g if variant == "no_input_act" else torch.tanh(g)
    if variant == "no_input_gate":
        i = torch.ones_like(i)
    if variant == "no_forget_gate":
        f = torch.ones_like(f)
    if variant == "no_output_gate":
        o = torch.ones_like(o)
    if variant == "coupled_gates":
        f = 1 - i
    c = f * c + i * g
    return o * (c if variant == "no_output_act" else torch.tanh(c)), c


class LSTMVariant(LSTM):
    """``seqlib.LSTM`` with one part switched off (``variant``, one of ``VARIANTS``).

    Same constructor as seqlib.LSTM plus ``variant``; runs the PyTorch reference only.
    variant="vanilla" computes exactly what seqlib.LSTM computes.
    """

    def __init__(self, input_size, hidden_size, variant="vanilla", **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if kwargs.get("backend", "torch") == "triton":
            raise ValueError("backend: the LSTM variants have no Triton kernel; use 'torch' or 'auto'")
        super().__init__(input_size, hidden_size, **{**kwargs, "backend": "torch"})
        self.variant = variant

    def extra_repr(self):
        return f"{super().extra_repr()}, variant={self.variant!r}"

    def _layer(self, x, state, weights, lengths):
        w_ih, w_hh, b_ih, b_hh = weights
        xw = x @ w_ih.T
        if b_ih is not None:
            xw = xw + (b_ih + b_hh)
        (h, c), hs = state, []
        for t, xw_t in enumerate(xw.unbind(0)):  # split once: indexing in the loop is slow backward
            h_new, c_new = lstm_variant_update(xw_t + h @ w_hh.T, c, self.variant)
            if lengths is not None:
                live = (t < lengths.to(x.device)).unsqueeze(-1)
                h_new, c_new = torch.where(live, h_new, h), torch.where(live, c_new, c)
            h, c = h_new, c_new
            hs.append(h)
        out = torch.stack(hs) if hs else xw.new_zeros(0, *h.shape)
        return out, (h, c)

    def _cell(self, x_t, state, weights):
        w_ih, w_hh, b_ih, b_hh = weights
        pre = x_t @ w_ih.T + state[0] @ w_hh.T
        if b_ih is not None:
            pre = pre + b_ih + b_hh
        return lstm_variant_update(pre, state[1], self.variant)


def set_forget_bias(lstm, value=1.0):
    """Set every layer's forget-gate bias (b_ih + b_hh) to ``value``, as Gers et al. (2000) and
    Jozefowicz et al. (2015) advise: the cell starts by keeping most of its state. Returns lstm."""
    N = lstm.hidden_size
    with torch.no_grad():
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):
                p[N:2 * N].fill_(value)
            elif name.startswith("bias_hh"):
                p[N:2 * N].zero_()
    return lstm


def last_written_value(batch_size: int, length: int, p_write: float = 0.1,
                       generator: torch.Generator | None = None):
    """A register task: values are written now and then; report the latest one at every step.

    At each step, with probability ``p_write``, a value v ~ U(0, 1) is written: the input is
    (v, 1); otherwise it is (0, 0). The target at step t is the last value written at or before
    t, and 0 before the first write. A model must overwrite its memory at every write, so a cell
    that can only add to its state (an LSTM without forget gate) has to subtract the old value
    exactly to keep up.

    Returns x: (T, B, 2) float32 and y: (T, B) float32, time-major.
    """
    if length < 1 or batch_size < 1:
        raise ValueError(f"batch_size and length must be >= 1, got {batch_size} and {length}")
    if not 0.0 < p_write <= 1.0:
        raise ValueError(f"p_write must be in (0, 1], got {p_write!r}")
    T, B = length, batch_size
    writes = torch.rand(T, B, generator=generator) < p_write
    values = torch.rand(T, B, generator=generator) * writes
    y, last = torch.empty(T, B), torch.zeros(B)
    for t in range(T):
        last = torch.where(writes[t], values[t], last)
        y[t] = last
    return torch.stack([values, writes.float()], dim=-1), y
