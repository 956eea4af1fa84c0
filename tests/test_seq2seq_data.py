"""seqlib.data.translation: number words and dates, deterministic, split apart, padded right."""
import pytest
import torch

from seqlib.data.translation import (Vocab, batches, collate, dates, join_words, number_words,
                                     split_words)


def test_split_join_round_trip():
    from num2words import num2words
    assert split_words("quatre-vingt-dix-sept") == ["quatre", "-vingt", "-dix", "-sept"]
    for n in (1, 71, 97, 180, 481, 999):
        for lang in ("en", "fr"):
            text = num2words(n, lang=lang)
            assert join_words(split_words(text)) == text


def test_number_words_deterministic_and_disjoint():
    a, b = number_words(seed=0), number_words(seed=0)
    assert a.train == b.train and a.heldout == b.heldout and a.test == b.test
    src = lambda ps: {tuple(s) for s, _ in ps}
    assert not (src(a.train) & src(a.heldout) or src(a.train) & src(a.test)
                or src(a.heldout) & src(a.test))
    assert (len(a.train), len(a.heldout), len(a.test)) == (799, 100, 100)
    everything = a.train + a.heldout + a.test
    assert len(src(everything)) == 999
    assert (split_words("ninety-seven"), split_words("quatre-vingt-dix-sept")) in everything
    back = number_words("fr", "en")
    assert back.train[0] == (a.train[0][1], a.train[0][0])
    assert number_words(seed=1).test != a.test


def test_number_words_test_values_can_be_generalised_to():
    """split="values": unseen values drawn across 1..999, every source token seen in training
    (the old split 500..999 held hundreds words that training never had)."""
    from num2words import num2words
    p = number_words()
    value = {tuple(s): n for n in range(1, 1000) for s in [split_words(num2words(n))]}
    test = [value[tuple(s)] for s, _ in p.test]
    assert min(test) < 100 and max(test) >= 900 and sum(n >= 500 for n in test) > 20
    for split in (p.heldout, p.test):
        assert all(p.src_vocab.unk not in p.src_vocab.encode(s) for s, _ in split)
        assert all(p.tgt_vocab.unk not in p.tgt_vocab.encode(t) for _, t in split)
    assert "drawn across 1..999" in p.description


def test_number_words_split_by_length_tests_the_longest_sources():
    p = number_words(split="length")
    longest = max(len(s) for s, _ in p.train + p.heldout + p.test)
    assert len(p.test) == 100 and all(len(s) == longest for s, _ in p.test)
    assert any(len(s) == longest for s, _ in p.train)  # the longest kind is seen in training
    assert "longest sources (5 tokens or more)" in p.description


def test_number_words_digits_and_larger_values():
    p = number_words("digits", "en", max_value=99_999, n_values=1000, seed=2)
    pairs = p.train + p.heldout + p.test
    assert len(pairs) == 1000 and len({tuple(s) for s, _ in pairs}) == 1000
    digits = [len(s) for s, _ in pairs]
    assert [digits.count(d) for d in range(1, 6)] == [9, 90, 300, 300, 301]
    from num2words import num2words
    assert all(t == split_words(num2words(int("".join(s)))) for s, t in pairs[::50])
    assert all(int("".join(s)) <= 99_999 for s, _ in pairs)
    assert number_words("en", "digits").train[0][1] == list(
        str(int("".join(number_words("digits", "en").train[0][0]))))


def test_number_words_bad_arguments():
    for kw, msg in (({"split": "year"}, "split: expected 'values' or 'length'"),
                    ({"test_fraction": 1.0}, "test_fraction: expected a number in \\[0, 1\\)"),
                    ({"heldout_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
                    ({"max_value": 1}, "max_value: expected an integer >= 2"),
                    ({"n_values": 5000}, "n_values: expected an integer in 1..max_value")):
        with pytest.raises(ValueError, match=msg):
            number_words(**kw)


def test_vocab_round_trip_and_unk():
    v = Vocab(["b", "a", "a"])
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and len(v) == 6
    assert v.decode(v.encode(["a", "b"]) + [v.eos, 4]) == ["a", "b"]
    assert v.encode(["zzz"]) == [v.unk]


def test_dates_deterministic_iso_and_split_by_year():
    a, b = dates(200, 50, 100, seed=1), dates(200, 50, 100, seed=1)
    assert a.train == b.train and a.test == b.test
    train_src = {"".join(s) for s, _ in a.train}
    assert not train_src & {"".join(s) for s, _ in a.heldout + a.test}
    assert all("".join(t)[:4] < "2030" for _, t in a.train + a.heldout)
    assert all("".join(t)[:4] >= "2030" for _, t in a.test)
    import datetime
    for _, t in a.train[:20]:
        datetime.date.fromisoformat("".join(t))


def test_dates_split_by_format():
    p = dates(100, 20, 50, split="format", n_test_formats=2)
    assert "format" in p.description and len(p.test) == 50


def test_collate_lengths_padding_and_reverse():
    p = number_words()
    pairs = p.train[:7]
    bt = collate(pairs, p.src_vocab, p.tgt_vocab)
    assert bt.src.shape == (7, max(len(s) for s, _ in pairs))
    assert bt.src_lengths.tolist() == [len(s) for s, _ in pairs]
    assert bt.tgt_lengths.tolist() == [len(t) + 1 for _, t in pairs]
    for b, (s, t) in enumerate(pairs):
        n = len(s)
        assert p.src_vocab.decode(bt.src[b]) == s and (bt.src[b, n:] == 0).all()
        assert bt.tgt_in[b, 0] == p.tgt_vocab.bos and bt.tgt_out[b, len(t)] == p.tgt_vocab.eos
        assert torch.equal(bt.tgt_in[b, 1:len(t) + 1], bt.tgt_out[b, :len(t)])
    rev = collate(pairs, p.src_vocab, p.tgt_vocab, reverse_source=True)
    assert p.src_vocab.decode(rev.src[0]) == pairs[0][0][::-1]
    assert torch.equal(rev.src_lengths, bt.src_lengths)


def test_batches_cover_everything_once():
    p = number_words()
    got = [b.src.shape[0] for b in batches(p.test, p.src_vocab, p.tgt_vocab, 64, seed=3)]
    assert sum(got) == 100 and max(got) == 64
    first = next(batches(p.test, p.src_vocab, p.tgt_vocab, 64, seed=3))
    assert torch.equal(first.src, next(batches(p.test, p.src_vocab, p.tgt_vocab, 64, seed=3)).src)
