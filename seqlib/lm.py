"""Character-level language models on a recurrent layer, trained and scored the same way in every chapter.

Shapes (book/notation.md):
    V  vocabulary size      D  embedding width      N  hidden (state) size
    T  window length        B  batch (parallel text streams)

    x, y   : (T, B) int64 character ids, y[t] = x[t + 1]
    logits : (T, B, V)

``CharLM`` is embedding -> recurrent layer (``seqlib.RNN``, ``seqlib.LSTM`` or ``seqlib.GRU``) ->
linear read-out. ``train_char_lm`` runs truncated BPTT over parallel streams of the training text
(the state is carried from one window to the next and detached at its edge), and
``bits_per_char`` reads held-out text the same way and averages -log2 p over every character.
Chapter 1's character RNN is trained and scored with exactly these settings, so the numbers of
the chapters compare.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import seqlib
from seqlib.data.text import batchify, text_chunks
from seqlib.train import train

__all__ = ["CharLM", "bits_per_char", "train_char_lm", "CELLS"]

CELLS = {"rnn": seqlib.RNN, "lstm": seqlib.LSTM, "gru": seqlib.GRU}


class CharLM(nn.Module):
    """Embedding (V, D) -> recurrent layer of kind ``cell`` with N units -> linear (N, V)."""

    def __init__(self, V: int, cell: str = "rnn", D: int = 32, N: int = 256, **layer_kwargs):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {tuple(CELLS)}, got {cell!r}")
        self.cell = cell
        self.embed = nn.Embedding(V, D)
        self.rnn = CELLS[cell](D, N, **layer_kwargs)
        self.head = nn.Linear(N, V)

    def forward(self, x, state=None):
        """x: (T, B) ids, state as the layer takes it (None: zeros) -> (logits (T, B, V), state)."""
        out, state = self.rnn(self.embed(x), state)
        return self.head(out), state


def detach_state(state):
    """Cut the gradient at a window's edge; the state's values carry on. Works for h and (h, c)."""
    if state is None or isinstance(state, torch.Tensor):
        return None if state is None else state.detach()
    return tuple(s.detach() for s in state)


def train_char_lm(model: CharLM, train_ids: torch.Tensor, steps: int, batch_size: int = 32,
                  window: int = 64, lr: float = 3e-3, clip_norm: float = 1.0, **train_kwargs) -> dict:
    """Truncated BPTT on ``batch_size`` parallel streams of ``train_ids``, windows of ``window``.

    The loss is in bits per character. Returns seqlib.train.train's history.
    """
    windows = [c for c in text_chunks(batchify(train_ids, batch_size), window) if len(c[0]) == window]
    carry = {"state": None}

    def batch(step):
        if step % len(windows) == 0:
            carry["state"] = None  # a new pass over the streams starts from a zero state
        return windows[step % len(windows)]

    def loss_fn(m, b):
        x, y = b
        logits, state = m(x, carry["state"])
        carry["state"] = detach_state(state)  # truncated BPTT: the state goes on, the gradient stops
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()) / math.log(2)

    train_kwargs.setdefault("desc", f"char LM, {model.cell}")
    return train(model, loss_fn, batch, steps=steps, lr=lr, clip_norm=clip_norm, **train_kwargs)


@torch.no_grad()
def bits_per_char(model: nn.Module, ids: torch.Tensor, streams: int = 16, window: int = 256) -> float:
    """Average -log2 p(next character) over ``ids`` (n,), read as ``streams`` parallel streams.

    model(x (T, B), state) -> (logits (T, B, V), state); the state is carried across windows.
    """
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in text_chunks(batchify(ids, streams), window):
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / math.log(2)
