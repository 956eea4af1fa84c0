"""scikit-learn's bundled handwritten digits, read as sequences (nothing is downloaded).

``sklearn.datasets.load_digits`` ships 1797 images of 8 x 8 pixels, grey levels 0..16, ten
classes. A recurrent model reads an image one piece at a time and classifies it after the last:

    "rows"    T = 8 steps of D = 8 features: one image row per step, top to bottom
    "pixels"  T = 64 steps of D = 1 feature: pixel by pixel in raster order (a harder, longer task,
              the small cousin of "sequential MNIST")

Shapes (book/notation.md):
    T  length      B  batch (number of images)      D  features per step      C  classes (10)

    x : (T, B, D) float32 in [0, 1]   (or (B, T, D) with batch_first)      y : (B,) int64

Typical use::

    data = digit_sequences("rows")       # a fixed, stratified 75 / 25 train / test split
    data.x_train.shape                   # (8, 1347, 8)
    for x, y in data.batches(64, generator=torch.Generator().manual_seed(0)):
        ...
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["DigitSequences", "digit_sequences", "MODES", "NUM_CLASSES"]

MODES = {"rows": (8, 8), "pixels": (64, 1)}  # mode: (T, D)
NUM_CLASSES = 10
_MAX_GREY = 16.0  # load_digits' grey levels run 0..16


@dataclass
class DigitSequences:
    """A train/test split of the digits as sequences; tensors are time-major unless batch_first."""

    mode: str
    x_train: torch.Tensor = field(repr=False)  # (T, B_train, D) float32
    y_train: torch.Tensor = field(repr=False)  # (B_train,) int64
    x_test: torch.Tensor = field(repr=False)   # (T, B_test, D) float32
    y_test: torch.Tensor = field(repr=False)   # (B_test,) int64
    batch_first: bool = False

    @property
    def seq_len(self) -> int:
        return self.x_train.shape[1 if self.batch_first else 0]

    @property
    def input_size(self) -> int:
        return self.x_train.shape[-1]

    def describe(self) -> str:
        return (f"digits read by {self.mode}: T = {self.seq_len} steps of D = {self.input_size}, "
                f"{len(self.y_train)} training and {len(self.y_test)} test images, "
                f"{NUM_CLASSES} classes")

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """One epoch of shuffled training mini-batches (x (T, b, D), y (b,)); the last may be short."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.randperm(len(self.y_train), generator=generator)
        dim = 0 if self.batch_first else 1
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            yield self.x_train.index_select(dim, idx), self.y_train[idx]


def digit_sequences(mode: str = "rows", test_fraction: float = 0.25, seed: int = 0,
                    batch_first: bool = False) -> DigitSequences:
    """The digits as sequences, split into training and test images, stratified by class.

    mode: "rows" (T = 8, D = 8) or "pixels" (T = 64, D = 1). Pixel values are divided by 16,
    so they lie in [0, 1]. The split is fixed by ``seed``: every call with the same arguments
    returns the same tensors.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {tuple(MODES)}, got {mode!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    from sklearn.datasets import load_digits  # imported here: `import seqlib` should stay light
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    T, D = MODES[mode]
    images = torch.tensor(digits.images, dtype=torch.float32) / _MAX_GREY  # (n, 8, 8)
    x = images.reshape(len(images), T, D)                                  # (n, T, D), raster order
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=test_fraction,
                                           random_state=seed, stratify=digits.target)
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)

    def layout(t):
        return t.contiguous() if batch_first else t.transpose(0, 1).contiguous()

    return DigitSequences(mode, layout(x[idx_train]), y[idx_train], layout(x[idx_test]),
                          y[idx_test], batch_first)
