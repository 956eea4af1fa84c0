"""Sequence-to-sequence tasks, generated on the spot (no downloads): number words from one
language to another, and dates from human formats to ISO 8601.

Shapes (book/notation.md, batch first):
    B  batch      S  source length (tokens)      T  target length (tokens, with <bos> or <eos>)
    src (B, S)    src_lengths (B,)    tgt_in (B, T) = <bos> y_1 .. y_n    tgt_out (B, T) = y_1 .. y_n <eos>
    Padding is id 0 (<pad>); ids 1, 2, 3 are <bos>, <eos>, <unk> in every :class:`Vocab`.

Number words (``number_words``): ``num2words(n)`` in English and ``num2words(n, lang="fr")`` in
French, where word order and grouping differ ("ninety-seven" / "quatre-vingt-dix-sept",
"seventy-one" / "soixante et onze"). Tokens are **word level, hyphen pieces split off**: a hyphenated
word becomes its first piece and then the others with their hyphen kept in front
("quatre-vingt-dix-sept" -> ["quatre", "-vingt", "-dix", "-sept"]), so alignments are between
meaningful units and :func:`join_words` inverts :func:`split_words` exactly.
The pseudo-language ``"digits"`` writes n as its decimal digits, one token each (347 -> ["3", "4",
"7"]), so ``number_words("digits", "en", max_value=999_999, n_values=6000)`` writes numbers of up
to six digits in words ("347215" -> "three hundred and forty-seven thousand, two hundred and
fifteen"): a monotone alignment whose source length (the digit count) is the amount of
information the model must carry.
Values: all of 1..max_value (default 999), or with ``n_values`` that many distinct values with an
equal share per digit count (every value of a digit count that has fewer), shuffled with ``seed``.
Splits: ``split="values"``: ``test`` is a ``test_fraction`` of the values drawn across the whole
range (unseen values, made of words that training has seen inside other numbers, so a model
can generalise to them);
``split="length"``: ``test`` is a ``test_fraction`` of the values drawn from those whose source
has the most tokens (unseen values, all of the longest kind). ``heldout`` is a
``heldout_fraction`` of the rest (for validation) and ``train`` the remainder.

Dates (``dates``): random days between 1970-01-01 and 2059-12-31 written with one of
:data:`DATE_FORMATS` (strftime patterns; English month and day names are filled in by this module,
so the output does not depend on the locale) -> "YYYY-MM-DD"; character level. Two-digit years
("%y") are unambiguous in this range under the usual pivot (70..99 -> 19xx, 00..59 -> 20xx).
Splits: ``split="year"``: train/heldout on 1970..2029, test on 2030..2059 (unseen years);
``split="format"``: train/heldout on the first formats, test on the last ``n_test_formats`` formats.
"""
from __future__ import annotations

import datetime as _dt
import random
from dataclasses import dataclass

import torch

__all__ = ["PAD", "BOS", "EOS", "UNK", "Vocab", "Pairs", "Batch", "split_words", "join_words",
           "number_words", "DATE_FORMATS", "format_date", "dates", "collate", "batches"]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocab:
    """Tokens <-> ids. Ids 0..3 are <pad>, <bos>, <eos>, <unk>; the rest are the sorted tokens."""

    def __init__(self, tokens):
        self.itos = list(SPECIALS) + sorted(set(tokens) - set(SPECIALS))
        self.stoi = {t: i for i, t in enumerate(self.itos)}
        self.pad, self.bos, self.eos, self.unk = 0, 1, 2, 3

    def __len__(self):
        return len(self.itos)

    def __repr__(self):
        return f"Vocab({len(self)} tokens)"

    def encode(self, tokens) -> list[int]:
        return [self.stoi.get(t, self.unk) for t in tokens]

    def decode(self, ids, strip=True) -> list[str]:
        """ids -> tokens; with strip, stops at the first <eos> and drops <pad>/<bos>."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if strip and i == self.eos:
                break
            if strip and i in (self.pad, self.bos):
                continue
            out.append(self.itos[i])
        return out


@dataclass
class Pairs:
    """A task's splits: lists of (source tokens, target tokens), and the vocabularies (built from
    the training split only, so unseen tokens in held-out data read as <unk>)."""

    train: list
    heldout: list
    test: list
    src_vocab: Vocab
    tgt_vocab: Vocab
    description: str = ""


@dataclass
class Batch:
    src: torch.Tensor          # (B, S) int64, padded with 0
    src_lengths: torch.Tensor  # (B,) int64
    tgt_in: torch.Tensor       # (B, T) <bos> y_1 .. y_n, padded
    tgt_out: torch.Tensor      # (B, T) y_1 .. y_n <eos>, padded
    tgt_lengths: torch.Tensor  # (B,) n + 1


def split_words(text: str) -> list[str]:
    """'quatre-vingt-dix-sept' -> ['quatre', '-vingt', '-dix', '-sept']; spaces separate words."""
    out = []
    for word in text.split():
        first, *rest = word.split("-")
        out.append(first)
        out.extend("-" + p for p in rest)
    return out


def join_words(tokens) -> str:
    """The inverse of :func:`split_words`."""
    text = ""
    for t in tokens:
        text += t if (t.startswith("-") or not text) else " " + t
    return text


def _words(n, lang):
    if lang == "digits":
        return list(str(n))
    from num2words import num2words
    return split_words(num2words(n, lang=lang))


def number_words(source="en", target="fr", heldout_fraction=0.1, seed=0, test_fraction=0.1,
                 split="values", max_value=999, n_values=None) -> Pairs:
    """Number words 1..max_value from ``source`` to ``target`` language (any num2words language,
    or ``"digits"``; the book uses "en" -> "fr" and "digits" -> "en"). ``split`` is "values" or
    "length"; the splits are disjoint, as in the module docstring. ``n_values`` (default: all of
    1..max_value) draws that many distinct values, as many of each digit count as there are."""
    for name, f in (("heldout_fraction", heldout_fraction), ("test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise ValueError(f"{name}: expected a number in [0, 1), got {f}")
    if heldout_fraction + test_fraction >= 1:
        raise ValueError(f"heldout_fraction + test_fraction must be < 1, got "
                         f"{heldout_fraction} + {test_fraction}")
    if split not in ("values", "length"):
        raise ValueError(f"split: expected 'values' or 'length', got {split!r}")
    if not isinstance(max_value, int) or max_value < 2:
        raise ValueError(f"max_value: expected an integer >= 2, got {max_value!r}")
    rng = random.Random(seed)
    values = (list(range(1, max_value + 1)) if n_values is None
              else _spread_over_digits(n_values, max_value, rng))
    src = {n: _words(n, source) for n in values}
    tgt = {n: _words(n, target) for n in values}
    rng.shuffle(values)
    n_test = int(round(test_fraction * len(values)))
    if split == "length":  # the longest sources first; the shuffle breaks ties
        values.sort(key=lambda n: -len(src[n]))
    test = values[:n_test]
    rest = values[n_test:]
    rng.shuffle(rest)
    n_held = int(round(heldout_fraction * len(values)))
    held, train = rest[:n_held], rest[n_held:]

    def pairs(ns):
        return [(src[n], tgt[n]) for n in sorted(ns)]

    train_pairs = pairs(train)
    lo = min((len(src[n]) for n in test), default=0)
    what = (f"drawn across 1..{max_value}" if split == "values" else
            f"drawn from the longest sources ({lo} tokens or more)")
    return Pairs(train_pairs, pairs(held), pairs(test),
                 Vocab(t for s, _ in train_pairs for t in s),
                 Vocab(t for _, s in train_pairs for t in s),
                 f"number words {source}->{target}, {len(values)} values in 1..{max_value}; "
                 f"test: unseen values {what}")


def _spread_over_digits(n_values, max_value, rng):
    """n_values distinct values in 1..max_value, an equal share for each digit count (all the
    values of a digit count that has fewer; the rest shared among the longer counts)."""
    if not isinstance(n_values, int) or not 1 <= n_values <= max_value:
        raise ValueError(f"n_values: expected an integer in 1..max_value = 1..{max_value}, "
                         f"got {n_values!r}")
    ranges = [(10 ** (d - 1), min(10 ** d - 1, max_value)) for d in range(1, len(str(max_value)) + 1)]
    out, left = [], n_values
    for i, (lo, hi) in enumerate(ranges):
        share = min(hi - lo + 1, left // (len(ranges) - i))
        out += rng.sample(range(lo, hi + 1), share)
        left -= share
    return out


#: strftime patterns; %A %a %B %b are filled with English names by :func:`format_date`.
DATE_FORMATS = ("%d %B %Y", "%B %d, %Y", "%A, %b %d, %y", "%m/%d/%Y", "%d.%m.%Y", "%Y/%m/%d",
                "%a %d %b %Y", "%d %b %y", "%b %d %Y", "%A %d %B %Y", "%d-%m-%y", "%B %Y, day %d")
_MONTHS = ("January February March April May June July August September October November "
           "December").split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


def format_date(date: _dt.date, pattern: str) -> str:
    """strftime with English month/day names whatever the locale."""
    month, day = _MONTHS[date.month - 1], _DAYS[date.weekday()]
    pattern = (pattern.replace("%B", month).replace("%b", month[:3])
               .replace("%A", day).replace("%a", day[:3]))
    return date.strftime(pattern)


def dates(n_train=2000, n_heldout=200, n_test=500, split="year", n_test_formats=3, seed=0) -> Pairs:
    """Human-written dates -> ISO 8601, character level. Splits as in the module docstring;
    the splits never share a (source, target) pair."""
    if split not in ("year", "format"):
        raise ValueError(f"split: expected 'year' or 'format', got {split!r}")
    if split == "format" and not 1 <= n_test_formats < len(DATE_FORMATS):
        raise ValueError(f"n_test_formats: expected 1..{len(DATE_FORMATS) - 1}, got {n_test_formats}")
    rng = random.Random(seed)
    start, end = _dt.date(1970, 1, 1), _dt.date(2059, 12, 31)
    cut = _dt.date(2030, 1, 1)
    fmts = DATE_FORMATS
    seen = set()

    def draw(n, first, last, formats):
        out = []
        span = (last - first).days
        while len(out) < n:
            d = first + _dt.timedelta(days=rng.randrange(span + 1))
            src = format_date(d, rng.choice(formats))
            if src in seen:
                continue
            seen.add(src)
            out.append((list(src), list(d.isoformat())))
        return out

    if split == "year":
        early, late = cut - _dt.timedelta(days=1), cut
        train = draw(n_train, start, early, fmts)
        heldout = draw(n_heldout, start, early, fmts)
        test = draw(n_test, late, end, fmts)
        what = "train/heldout 1970..2029, test 2030..2059"
    else:
        k = len(fmts) - n_test_formats
        train = draw(n_train, start, end, fmts[:k])
        heldout = draw(n_heldout, start, end, fmts[:k])
        test = draw(n_test, start, end, fmts[k:])
        what = f"train/heldout formats {fmts[:k]}, test formats {fmts[k:]}"
    return Pairs(train, heldout, test, Vocab(t for s, _ in train for t in s),
                 Vocab(t for _, s in train for t in s), f"dates -> ISO 8601: {what}")


def collate(pairs, src_vocab: Vocab, tgt_vocab: Vocab, reverse_source=False) -> Batch:
    """Pad a list of (source tokens, target tokens) into a :class:`Batch`. With reverse_source,
    each source is reversed within its own length (Sutskever et al. 2014); padding stays at the end."""
    if not pairs:
        raise ValueError("pairs: expected at least one (source, target) pair, got none")
    srcs = [src_vocab.encode(s) for s, _ in pairs]
    if reverse_source:
        srcs = [s[::-1] for s in srcs]
    tgts = [tgt_vocab.encode(t) for _, t in pairs]
    if any(len(s) == 0 for s in srcs):
        raise ValueError("pairs: every source must have at least one token")
    B, S, T = len(pairs), max(map(len, srcs)), max(map(len, tgts)) + 1
    src = torch.zeros(B, S, dtype=torch.long)
    tgt_in = torch.zeros(B, T, dtype=torch.long)
    tgt_out = torch.zeros(B, T, dtype=torch.long)
    for b, (s, t) in enumerate(zip(srcs, tgts)):
        src[b, :len(s)] = torch.tensor(s, dtype=torch.long)
        tgt_in[b, :len(t) + 1] = torch.tensor([tgt_vocab.bos] + t, dtype=torch.long)
        tgt_out[b, :len(t) + 1] = torch.tensor(t + [tgt_vocab.eos], dtype=torch.long)
    return Batch(src, torch.tensor([len(s) for s in srcs]), tgt_in, tgt_out,
                 torch.tensor([len(t) + 1 for t in tgts]))


def batches(pairs, src_vocab, tgt_vocab, batch_size, shuffle=True, seed=0, reverse_source=False):
    """Yield :class:`Batch` es of ``batch_size`` pairs (the last may be smaller), shuffled with
    ``random.Random(seed)`` when ``shuffle``."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = list(range(len(pairs)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), batch_size):
        yield collate([pairs[j] for j in order[i:i + batch_size]], src_vocab, tgt_vocab,
                      reverse_source)
