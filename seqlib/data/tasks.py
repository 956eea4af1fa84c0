"""Synthetic sequence tasks that test memory: the adding problem and the copy task.

Shapes (book/notation.md):
    T  length      B  batch      K  alphabet size (copy task)      S  symbols to copy

Both generators take a ``torch.Generator`` so that a chapter or a test gets the same batch every
time it asks with the same seed, and both return time-major tensors, ``(T, B, ...)``, the layout
``seqlib.RNN`` and ``torch.nn.RNN`` read by default (``batch_first=True`` returns ``(B, T, ...)``).
"""
from __future__ import annotations

import torch

__all__ = ["adding_problem", "copy_task", "ADDING_BASELINE_MSE"]

#: Mean squared error of always answering 1, the best constant guess: the target is the sum of
#: two independent U(0, 1) numbers, whose variance is 2 * (1/12) = 1/6.
ADDING_BASELINE_MSE = 1.0 / 6.0


def adding_problem(batch_size: int, length: int, generator: torch.Generator | None = None,
                   batch_first: bool = False):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le et al. 2015).

    Each sequence has two channels: a value drawn from U(0, 1) at every step, and a marker that is
    1 at exactly two steps, one in the first half of the sequence and one in the second half, and
    0 elsewhere. The target is the sum of the two marked values, so a model must carry the first
    one for up to ``length`` steps.

    Returns x: (T, B, 2) (or (B, T, 2) with batch_first) float32 and y: (B,) float32.
    """
    if length < 2:
        raise ValueError(f"length must be >= 2 (one marker in each half), got {length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    B, T = batch_size, length
    values = torch.rand(B, T, generator=generator)
    half = T // 2
    first = torch.randint(0, half, (B,), generator=generator)
    second = torch.randint(half, T, (B,), generator=generator)
    markers = torch.zeros(B, T)
    rows = torch.arange(B)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
    return (x if batch_first else x.transpose(0, 1).contiguous()), y


def copy_task(batch_size: int, n_symbols: int = 8, n_copy: int = 10, lag: int = 20,
              generator: torch.Generator | None = None, batch_first: bool = False):
    """The copy (memory) task of Hochreiter & Schmidhuber (1997) in the form of Arjovsky et al. (2016).

    Token 0 is the blank, tokens 1..K are symbols (K = n_symbols) and token K + 1 is the
    delimiter. The input is S = n_copy random symbols, then ``lag - 1`` blanks, then the
    delimiter, then S blanks; the target is blank for the first S + lag steps and then the S
    symbols in their original order. Total length T = 2 * S + lag. A model that outputs blanks
    and then guesses uniformly scores a cross-entropy of S * log(K) / T nats per step.

    Returns x: (T, B) int64 and y: (T, B) int64 (or (B, T) each with batch_first).
    """
    if n_symbols < 1 or n_copy < 1 or lag < 1 or batch_size < 1:
        raise ValueError("batch_size, n_symbols, n_copy and lag must all be >= 1, got "
                         f"{batch_size}, {n_symbols}, {n_copy}, {lag}")
    B, S, K = batch_size, n_copy, n_symbols
    T = 2 * S + lag
    symbols = torch.randint(1, K + 1, (B, S), generator=generator)
    x = torch.zeros(B, T, dtype=torch.long)
    y = torch.zeros(B, T, dtype=torch.long)
    x[:, :S] = symbols
    x[:, S + lag - 1] = K + 1  # the delimiter: "now write them back"
    y[:, S + lag:] = symbols
    if batch_first:
        return x, y
    return x.t().contiguous(), y.t().contiguous()
