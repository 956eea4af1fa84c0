"""Yearly sunspot numbers (statsmodels' bundled copy) cut into windows for one-step forecasting.

Nothing is downloaded: statsmodels ships the series (Wolf's yearly sunspot numbers, 1700-2008)
inside its wheel. The split into training and test data is by time, never at random: the test
set is the last ``n_test`` years, and every statistic used to scale the data comes from the
training years alone, so a forecast never sees the future it is scored on.

Shapes:
    n  series length      W  window length      M  number of windows      p  AR order
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["load_sunspots", "SunspotSplit", "sunspot_split", "sliding_windows"]


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Years (n,) int64 and yearly sunspot numbers (n,) float64, n = 309 (1700-2008)."""
    import statsmodels.api as sm  # imported here: statsmodels is slow to import

    df = sm.datasets.sunspots.load_pandas().data
    return df["YEAR"].to_numpy().astype(np.int64), df["SUNACTIVITY"].to_numpy(dtype=np.float64)


@dataclass
class SunspotSplit:
    """A split by time: the last ``n_test`` years are the test set; scaling from training years."""

    years: np.ndarray     # (n,)
    values: np.ndarray    # (n,) raw sunspot numbers
    n_test: int
    mean: float           # of the training years
    std: float            # of the training years

    @property
    def n_train(self) -> int:
        return len(self.values) - self.n_test

    def scale(self, v):
        """Raw values -> standardised with the training mean and std."""
        return (v - self.mean) / self.std

    def unscale(self, z):
        """Standardised values -> raw sunspot numbers."""
        return z * self.std + self.mean

    @property
    def scaled(self) -> np.ndarray:
        """The whole series, standardised (n,)."""
        return self.scale(self.values)


def sunspot_split(n_test: int = 50) -> SunspotSplit:
    """Load the sunspots and hold out the last ``n_test`` years."""
    years, values = load_sunspots()
    if not 0 < n_test < len(values) - 10:
        raise ValueError(f"n_test must be between 1 and {len(values) - 11}, got {n_test}")
    train = values[:-n_test]
    return SunspotSplit(years, values, n_test, float(train.mean()), float(train.std()))


def sliding_windows(series: np.ndarray, length: int) -> np.ndarray:
    """All windows of a 1-D series: (M, W) with M = n - W + 1 and row i = series[i : i + W]."""
    series = np.asarray(series)
    if series.ndim != 1:
        raise ValueError(f"series: expected a 1-D array (n,), got shape {series.shape}")
    if not 1 <= length <= len(series):
        raise ValueError(f"length: expected 1 <= W <= n = {len(series)}, got {length}")
    return np.lib.stride_tricks.sliding_window_view(series, length).copy()
