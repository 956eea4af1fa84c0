"""seqlib.data.translation: number words and dates, deterministic, split apart, padded right."""
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
    assert len(a.train) + len(a.heldout) == 499 and len(a.test) == 500
    assert (split_words("ninety-seven"), split_words("quatre-vingt-dix-sept")) in a.train + a.heldout
    back = number_words("fr", "en")
    assert back.train[0] == (a.train[0][1], a.train[0][0])


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
    assert sum(got) == 500 and max(got) == 64
    first = next(batches(p.test, p.src_vocab, p.tgt_vocab, 64, seed=3))
    assert torch.equal(first.src, next(batches(p.test, p.src_vocab, p.tgt_vocab, 64, seed=3)).src)
