"""Data for the book's chapters; nothing here downloads anything.

    seqlib.data.tasks       synthetic memory tasks: the adding problem, the copy task
    seqlib.data.text        a character corpus from the Python standard library's own source
    seqlib.data.timeseries  statsmodels' bundled yearly sunspot numbers, split by time
    seqlib.data.digits      scikit-learn's bundled digits, read as sequences

The submodules are imported on demand (``from seqlib.data.text import stdlib_corpus``, or
``seqlib.data.text`` after ``import seqlib.data``), so that ``import seqlib`` does not pay for
statsmodels or scikit-learn.
"""
import importlib


def __getattr__(name):
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the submodule exists but its import failed
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
