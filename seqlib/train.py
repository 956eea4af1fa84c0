"""A small training loop: optimiser steps, optional gradient clipping, a progress bar, a history.

No framework: ``train`` is one ``for`` loop that the chapters can read in one screen. The model,
the batches and the loss are the caller's; the loop only does what every chapter repeats
(zero the gradients, backward, measure the gradient norm, clip, step, record).

    history = train(model, loss_fn, batches, steps=500, lr=2e-3, clip_norm=1.0)
    history["loss"]       # one float per step
    history["grad_norm"]  # the global gradient norm per step, measured *before* clipping
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from tqdm.std import tqdm  # the text bar: notebook widgets would need JavaScript in the book

__all__ = ["train", "grad_norm"]


def train(model: nn.Module, loss_fn: Callable, batches: Iterable | Callable, steps: int, *,
          lr: float = 1e-3, optimizer: torch.optim.Optimizer | None = None,
          clip_norm: float | None = None, progress: bool = True, desc: str = "train",
          every: int = 1) -> dict:
    """Train ``model`` for ``steps`` optimiser steps and return its history.

    loss_fn(model, batch) -> scalar loss tensor.
    batches: an iterable of batches (cycled if it runs out) or a function ``step -> batch``.
    optimizer: defaults to Adam(model.parameters(), lr).
    clip_norm: if given, rescale the gradient so its global 2-norm is at most clip_norm.
    progress: show a text progress bar (tqdm) with the running loss; False for silence.
    every: record loss and gradient norm every ``every`` steps (1 records all).

    Returns {"step": [...], "loss": [...], "grad_norm": [...], "seconds": float}; grad_norm is
    the norm before clipping, so a plot of it shows when clipping was active.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm}")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer or torch.optim.Adam(params, lr=lr)
    next_batch = _batch_source(batches)
    history = {"step": [], "loss": [], "grad_norm": [], "seconds": 0.0}
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, file=sys.stderr, mininterval=5.0,
               ncols=80, ascii=True)
    model.train()
    for step in bar:
        loss = loss_fn(model, next_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = grad_norm(params)
        if clip_norm is not None:
            nn.utils.clip_grad_norm_(params, clip_norm)
        optimizer.step()
        if step % every == 0 or step == steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(f"loss became {value} at step {step}")
            history["step"].append(step)
            history["loss"].append(value)
            history["grad_norm"].append(norm)
            bar.set_postfix(loss=f"{value:.3f}", refresh=False)
    bar.close()
    history["seconds"] = time.perf_counter() - start
    return history


def grad_norm(params) -> float:
    """Global 2-norm of the gradients of ``params`` (parameters without a gradient count as 0)."""
    norms = [p.grad.detach().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _batch_source(batches) -> Callable[[int], object]:
    if callable(batches):
        return batches
    state: dict[str, Iterator] = {"it": iter(batches)}
    one_shot = state["it"] is batches  # a generator or iterator cannot be read a second time

    def next_batch(step):
        try:
            return next(state["it"])
        except StopIteration:  # cycle: a finite data set is read again from the start
            if one_shot:
                raise ValueError(f"batches: the iterator ran out after {step} steps; pass a list "
                                 "(it is cycled) or a function step -> batch") from None
            state["it"] = iter(batches)
            return next(state["it"])

    return next_batch
