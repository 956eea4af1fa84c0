"""seqlib.data (text corpus, sunspots, tasks) and seqlib.ar: determinism, splits, shapes, targets."""
import numpy as np
import pytest
import torch

from seqlib.ar import ar_predict, fit_ar, lag_matrix, simulate_ar
from seqlib.data.tasks import ADDING_BASELINE_MSE, adding_problem, copy_task
from seqlib.data.text import (UNK, Vocabulary, batchify, stdlib_corpus, stdlib_source_files,
                              text_chunks, unigram_bits_per_char)
from seqlib.data.timeseries import load_sunspots, sliding_windows, sunspot_split


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus()


def test_corpus_is_deterministic(corpus):
    again = stdlib_corpus()
    assert again.train_files == corpus.train_files and again.heldout_files == corpus.heldout_files
    assert again.train_text == corpus.train_text and again.vocab.itos == corpus.vocab.itos
    assert stdlib_source_files() == sorted(corpus.train_files + corpus.heldout_files,
                                           key=lambda p: p.name)


def test_corpus_split_by_file_without_overlap(corpus):
    train, held = set(corpus.train_files), set(corpus.heldout_files)
    assert train and held and not train & held
    assert all(p.suffix == ".py" and not p.name.startswith("_") for p in train | held)
    assert 250_000 < len(corpus.train_text) < 400_000
    assert len(corpus.heldout_text) > 20_000
    # no held-out file's text appears in the training text
    for p in corpus.heldout_files:
        assert p.read_text(encoding="utf-8", errors="replace")[:2000] not in corpus.train_text


def test_vocab_round_trip(corpus):
    v = corpus.vocab
    assert v.decode(v.encode(corpus.train_text[:5000])) == corpus.train_text[:5000]
    assert corpus.train_ids.dtype == torch.long and int(corpus.train_ids.max()) < len(v)
    assert v.itos[0] == UNK and v.encode("\u00e9")[0] == 0  # an unseen character maps to UNK
    small = Vocabulary("abca")
    assert small.itos == [UNK, "a", "b", "c"] and small.decode(small.encode("cab")) == "cab"


def test_batchify_and_chunks_shift_by_one():
    ids = torch.arange(103)
    streams = batchify(ids, 4)  # (25, 4): column b is ids[25 b : 25 (b + 1)]
    assert streams.shape == (25, 4) and streams[0].tolist() == [0, 25, 50, 75]
    chunks = list(text_chunks(streams, 10))
    assert [x.shape[0] for x, _ in chunks] == [10, 10, 4]
    for x, y in chunks:
        assert torch.equal(y, x + 1)
    with pytest.raises(ValueError, match="ids"):
        batchify(streams, 2)


def test_unigram_bits_per_char():
    ids = torch.tensor([0, 1, 2, 3] * 10)
    assert abs(unigram_bits_per_char(ids, ids, 4) - 2.0) < 1e-9  # uniform over 4: 2 bits


def test_sunspots_shapes_and_split():
    years, values = load_sunspots()
    assert years.shape == values.shape == (309,) and years[0] == 1700 and years[-1] == 2008
    s = sunspot_split(n_test=50)
    assert s.n_train == 259 and s.years[s.n_train] == 1959
    assert abs(s.scaled[: s.n_train].mean()) < 1e-12 and abs(s.scaled[: s.n_train].std() - 1) < 1e-12
    np.testing.assert_allclose(s.unscale(s.scaled), values, atol=1e-9)
    w = sliding_windows(values, 21)
    assert w.shape == (289, 21) and np.array_equal(w[3], values[3:24])


def test_lag_matrix_layout():
    X, y = lag_matrix(np.arange(10.0), 3)
    assert X.shape == (7, 3) and X[0].tolist() == [2, 1, 0] and y[0] == 3


def test_ar_fit_recovers_ar2_coefficients():
    true = np.array([0.75, -0.5])
    series = simulate_ar(true, n=20_000, noise_std=1.0, intercept=0.3, seed=0)
    model = fit_ar(series, 2)
    np.testing.assert_allclose(model.coef, true, atol=0.02)
    assert abs(model.intercept - 0.3) < 0.05
    pred = ar_predict(model, series)  # one-step forecasts: residuals are the noise, variance ~1
    assert pred.shape == (len(series) - 2,)
    assert 0.95 < np.var(series[2:] - pred) < 1.05


def test_adding_problem_targets():
    g = torch.Generator().manual_seed(0)
    x, y = adding_problem(64, 30, g)
    assert x.shape == (30, 64, 2) and y.shape == (64,)
    marks = x[..., 1]
    assert torch.equal(marks.sum(0), torch.full((64,), 2.0))
    assert (marks[:15].sum(0) == 1).all() and (marks[15:].sum(0) == 1).all()
    torch.testing.assert_close(y, (x[..., 0] * marks).sum(0))
    xb, yb = adding_problem(64, 30, torch.Generator().manual_seed(0), batch_first=True)
    assert torch.equal(xb, x.transpose(0, 1)) and torch.equal(yb, y)
    assert abs(ADDING_BASELINE_MSE - float(((adding_problem(20000, 10)[1] - 1) ** 2).mean())) < 0.01


def test_copy_task_targets():
    S, lag, K = 5, 7, 6
    x, y = copy_task(8, n_symbols=K, n_copy=S, lag=lag, generator=torch.Generator().manual_seed(0))
    T = 2 * S + lag
    assert x.shape == y.shape == (T, 8)
    assert ((x[:S] >= 1) & (x[:S] <= K)).all()
    assert (x[S + lag - 1] == K + 1).all()          # the delimiter
    assert (x[S:S + lag - 1] == 0).all() and (x[S + lag:] == 0).all()
    assert (y[:S + lag] == 0).all() and torch.equal(y[S + lag:], x[:S])
