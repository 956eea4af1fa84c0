"""A character-level text corpus made from the Python standard library's own source files.

Nothing is downloaded: every Python installation carries its standard library as ``.py`` files,
so the corpus is on the reader's disk already. The selection is deterministic (sorted file names,
fixed rules), and the split into training and held-out text is *by file*, so a held-out score
measures how well a model reads code it has never seen, not how well it remembers the middle of a
file it trained on.

Shapes (book/notation.md):
    V  vocabulary size      T  length      B  batch (number of parallel streams)      L  stream length

Typical use::

    corpus = stdlib_corpus()                  # ~290 KB of training text, ~75 KB held out
    train = batchify(corpus.train_ids, 32)    # (L, B): 32 parallel streams
    for x, y in text_chunks(train, 64):      # x, y: (64, 32); y is x shifted by one character
        ...
"""
from __future__ import annotations

import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["stdlib_source_files", "Vocabulary", "CharCorpus", "stdlib_corpus", "batchify",
           "text_chunks", "unigram_bits_per_char", "UNK"]

#: Stand-in for every character the training text never showed (non-ASCII letters, mostly).
UNK = "\ufffd"


def stdlib_source_files(max_chars: int = 360_000, min_size: int = 2_000, max_size: int = 40_000,
                        root: str | Path | None = None) -> list[Path]:
    """Top-level ``.py`` files of the standard library, chosen by fixed rules.

    Files are taken in sorted order of their names, skipping private modules (a leading
    underscore) and files smaller than ``min_size`` or larger than ``max_size`` bytes (so no
    single file dominates), until their sizes add up to at least ``max_chars``. ``root`` defaults
    to the running interpreter's standard library (``sysconfig.get_paths()["stdlib"]``).
    """
    root = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise ValueError(f"root: expected the standard library directory, got {str(root)!r}")
    chosen, total = [], 0
    for path in sorted(root.glob("*.py"), key=lambda p: p.name):
        if path.name.startswith("_"):
            continue
        size = path.stat().st_size
        if not min_size <= size <= max_size:
            continue
        chosen.append(path)
        total += size
        if total >= max_chars:
            break
    return chosen


class Vocabulary:
    """A bijection between characters and integer ids, with one id for unseen characters.

    Built from training text: every character that occurs at least ``min_count`` times gets an
    id (in sorted order, so the same text always gives the same ids); id 0 is :data:`UNK`.
    """

    def __init__(self, text: str, min_count: int = 1):
        counts = Counter(text)
        chars = sorted(c for c, n in counts.items() if n >= min_count and c != UNK)
        self.itos: list[str] = [UNK] + chars
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> torch.Tensor:
        """str of length n -> (n,) int64 ids; unseen characters map to 0 (UNK)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point each
        distinct, inverse = np.unique(codes, return_inverse=True)  # look up each distinct char once
        ids = np.array([self.stoi.get(chr(c), 0) for c in distinct], dtype=np.int64)
        return torch.from_numpy(ids[inverse].reshape(-1))

    def decode(self, ids) -> str:
        """(n,) ids (tensor or list) -> str."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.itos[i] for i in ids)


@dataclass
class CharCorpus:
    """Training and held-out text, split by file, and the vocabulary of the training text."""

    train_files: list[Path]
    heldout_files: list[Path]
    train_text: str
    heldout_text: str
    vocab: Vocabulary
    train_ids: torch.Tensor = field(repr=False)    # (n_train,) int64
    heldout_ids: torch.Tensor = field(repr=False)  # (n_heldout,) int64

    def describe(self) -> str:
        return (f"{len(self.train_files)} training files ({len(self.train_text):,} characters), "
                f"{len(self.heldout_files)} held-out files ({len(self.heldout_text):,} characters), "
                f"vocabulary of {len(self.vocab)} characters")


def stdlib_corpus(max_chars: int = 360_000, heldout_every: int = 5, root=None) -> CharCorpus:
    """The standard-library corpus: every ``heldout_every``-th chosen file is held out.

    Files are joined with a blank line between them, so a model sees where one module ends and
    the next begins the way it sees the gap between two functions.
    """
    if heldout_every < 2:
        raise ValueError(f"heldout_every must be >= 2 (some files must be left to train on), "
                         f"got {heldout_every}")
    files = stdlib_source_files(max_chars=max_chars, root=root)
    heldout = [p for i, p in enumerate(files) if i % heldout_every == heldout_every - 1]
    train = [p for i, p in enumerate(files) if i % heldout_every != heldout_every - 1]
    train_text = _join(train)
    heldout_text = _join(heldout)
    vocab = Vocabulary(train_text)
    return CharCorpus(train, heldout, train_text, heldout_text, vocab,
                      vocab.encode(train_text), vocab.encode(heldout_text))


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Cut a stream of ids (n,) into B = batch_size parallel streams: returns (L, B), L = n // B.

    Column b is the b-th contiguous slice of the text, so consecutive chunks of rows continue
    each other: a model may carry its hidden state from one chunk to the next (truncated BPTT).
    """
    if ids.dim() != 1:
        raise ValueError(f"ids: expected a 1-D tensor (n,), got shape {tuple(ids.shape)}")
    L = ids.numel() // batch_size
    if L < 2:
        raise ValueError(f"batch_size: {batch_size} streams of a text of {ids.numel()} ids "
                         "leaves fewer than 2 ids per stream")
    return ids[: L * batch_size].view(batch_size, L).t().contiguous()


def text_chunks(streams: torch.Tensor, seq_len: int):
    """Consecutive (x, y) chunks of a (L, B) stream tensor: x, y: (T, B) with y[t] = x[t + 1].

    One pass over the streams; the last chunk is shorter when (L - 1) is not a multiple of T.
    """
    if streams.dim() != 2:
        raise ValueError(f"streams: expected (L, B), got shape {tuple(streams.shape)}")
    L = streams.shape[0]
    for start in range(0, L - 1, seq_len):
        end = min(start + seq_len, L - 1)
        yield streams[start:end], streams[start + 1:end + 1]


def unigram_bits_per_char(train_ids: torch.Tensor, test_ids: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy, in bits per character, of a unigram model of the training ids on test ids.

    The unigram model is the training frequency of each character with add-one smoothing (so an
    id never seen in training still has a finite cost). It is the baseline a sequence model must
    beat: it knows which characters are common but nothing about order.
    """
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    logp = torch.log2(counts / counts.sum())
    return float(-logp[test_ids].mean())


def _join(paths: list[Path]) -> str:
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    return "\n\n".join(t.replace("\r\n", "\n") for t in texts)

