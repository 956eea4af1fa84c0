"""seqlib: the library behind "Sequence Models, from RNNs to Mamba".

Readable PyTorch references of every model in the book, the data sets its chapters train on,
and Triton kernels (``seqlib.kernels``) checked against those references.

Shape letters used throughout (see ``book/notation.md``):
    B batch, T length, D model (input) width, H hidden width / heads, N state size, L layers.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("seqlib")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

from seqlib.rnn import RNN, rnn_layer  # noqa: E402
from seqlib.gated import GRU, LSTM  # noqa: E402

__all__ = ["RNN", "LSTM", "GRU", "rnn_layer", "__version__"]

from seqlib.minrnn import MinGRU, MinLSTM  # noqa: E402
from seqlib.lru import LRU  # noqa: E402
from seqlib.newton import DiagonalGRU  # noqa: E402

__all__ += ["MinGRU", "MinLSTM", "LRU", "DiagonalGRU"]

from seqlib.transformer import MultiHeadAttention, TransformerBlock, TransformerLM  # noqa: E402

__all__ += ["MultiHeadAttention", "TransformerBlock", "TransformerLM"]
