"""Small helpers so every figure in the book has labelled axes, units, a title and tab10 colours.

    fig, ax = figure()
    ax.plot(steps, loss, color=COLORS[0], label="train")
    label(ax, "Loss falls fast, then slowly", "optimiser step", "loss (bits per character)")
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler

__all__ = ["COLORS", "use_book_style", "figure", "label", "smooth"]

#: matplotlib's tab10 palette: distinguishable under the common kinds of colour blindness.
COLORS = plt.get_cmap("tab10").colors


def use_book_style():
    """tab10 colour cycle, light grid, readable font sizes, a resolution fit for the web book."""
    plt.rcParams.update({
        "axes.prop_cycle": cycler(color=COLORS),
        "axes.grid": True,
        "grid.alpha": 0.3,
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "font.size": 10,
        "axes.titlesize": 11,
        "legend.fontsize": 9,
        "figure.constrained_layout.use": True,
    })


def figure(ncols: int = 1, nrows: int = 1, width: float = 6.4, height: float = 3.6, **kwargs):
    """A figure of ``nrows x ncols`` axes at a size that reads well in the book's column."""
    return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def label(ax, title: str, xlabel: str, ylabel: str, legend: bool | None = None):
    """Title (what to see), axis labels (with units), and a legend when lines are labelled."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    has_labels = any(not h.get_label().startswith("_") for h in ax.get_lines() + ax.collections)
    if legend or (legend is None and has_labels):
        ax.legend()
    return ax


def smooth(values, window: int = 20) -> np.ndarray:
    """Trailing moving average (same length as ``values``; the first points average fewer)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)
