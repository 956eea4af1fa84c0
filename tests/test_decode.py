"""seqlib.decode on toy language models whose best sequences are known: a lookup table of
next-token probabilities (a Markov chain) per batch element. Greedy against beam search, EOS
handling, length normalisation, diverse beam search, batching, custom state layouts, bad input."""
import math
import re

import pytest
import torch

from seqlib.decode import (Beams, beam_search, distinct_ngrams, diverse_beam_search,
                           gnmt_length_penalty, greedy_decode, reorder_along, reorder_state,
                           sequence_lengths)

EOS, A, Bt, BOS = 0, 1, 2, 3  # the hand-made tables use tokens: eos, A, B, and bos


def chain_step(tables):
    """step for a Markov chain: tables (C, V, V) log-probs; state {"id": (B,)} picks the table."""
    def step(state, tokens):
        return tables[state["id"], tokens], state
    return step


def hand_table(rows):
    """One (4, 4) log-prob table from {previous token: [p(eos), p(A), p(B), p(bos)]}."""
    t = torch.full((4, 4), 0.25, dtype=torch.float64)
    for prev, probs in rows.items():
        t[prev] = torch.tensor(probs, dtype=torch.float64)
    return torch.log(t)[None]


def random_tables(C, V, seed, peak=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(peak * torch.randn(C, V, V, generator=g, dtype=torch.float64), -1)


def log_prob_of(table, seq, bos=BOS):
    prev, total = bos, 0.0
    for tok in seq:
        total += float(table[prev, tok])
        prev = tok
    return total


def hyps(tokens, lengths):
    return [tokens[i, :int(lengths[i])].tolist() for i in range(tokens.shape[0])]


# BOS -> A (0.6) or B (0.4); after A the mass is spread (eos 0.34); after B, eos is certain.
# Greedy takes A then eos: 0.6 * 0.34 = 0.204. The best sequence is B eos: 0.4.
TRAP = hand_table({BOS: [0.0, 0.6, 0.4, 0.0], A: [0.34, 0.33, 0.33, 0.0], Bt: [1.0, 0, 0, 0]})


def test_beam_search_finds_the_best_sequence_greedy_misses():
    step, state = chain_step(TRAP), {"id": torch.zeros(1, dtype=torch.long)}
    tokens, scores = greedy_decode(step, state, BOS, EOS, max_len=5)
    assert tokens.tolist() == [[A, EOS]]
    assert math.isclose(float(scores[0]), math.log(0.6 * 0.34), rel_tol=1e-12)
    out = beam_search(step, state, BOS, EOS, beam_size=2, max_len=5)
    assert isinstance(out, Beams) and out.tokens.shape[:2] == (1, 2)
    assert hyps(out.tokens[0], out.lengths[0]) == [[Bt, EOS], [A, EOS]]
    torch.testing.assert_close(out.log_probs[0], torch.tensor([math.log(0.4), math.log(0.204)],
                                                              dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_beam_size_one(seed):
    tables = random_tables(4, 6, seed)
    state = {"id": torch.arange(4)}
    tokens, scores = greedy_decode(chain_step(tables), state, BOS, EOS, max_len=8)
    out = beam_search(chain_step(tables), state, BOS, EOS, beam_size=1, max_len=8)
    assert torch.equal(out.tokens[:, 0], tokens)
    torch.testing.assert_close(out.log_probs[:, 0], scores)
    assert torch.equal(out.lengths[:, 0], sequence_lengths(tokens, EOS))


def test_eos_handling_keeps_finished_hypotheses():
    step, state = chain_step(TRAP), {"id": torch.zeros(1, dtype=torch.long)}
    out = beam_search(step, state, BOS, EOS, beam_size=3, max_len=6)
    # both two-token hypotheses end at step 2 and are still there at the end, not extended
    top = hyps(out.tokens[0], out.lengths[0])
    assert top[:2] == [[Bt, EOS], [A, EOS]] and out.lengths[0, :2].tolist() == [2, 2]
    assert (out.tokens[0, :2, 2:] == EOS).all()            # padding after eos is eos
    # the third runs A (A|B) ... and is cut at max_len or ends with eos; its score is its log-prob
    assert out.lengths[0, 2] >= 3


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_scores_lengths_and_padding_are_consistent(alpha):
    tables = random_tables(3, 7, seed=5, peak=1.5)
    out = beam_search(chain_step(tables), {"id": torch.arange(3)}, BOS, EOS, beam_size=4,
                      max_len=6, length_penalty=alpha)
    L = out.tokens.shape[2]
    for b in range(3):
        for k in range(4):
            n, seq = int(out.lengths[b, k]), out.tokens[b, k].tolist()
            assert (EOS not in seq[:n - 1]) and (seq[n - 1] == EOS or n == 6 == L)
            assert all(t == EOS for t in seq[n:])
            assert math.isclose(float(out.log_probs[b, k]), log_prob_of(tables[b], seq[:n]),
                                rel_tol=1e-9)
            assert math.isclose(float(out.scores[b, k]),
                                float(out.log_probs[b, k]) / gnmt_length_penalty(n, alpha),
                                rel_tol=1e-9)
        assert (out.scores[b, :-1] >= out.scores[b, 1:]).all()   # sorted best first
        assert len({tuple(s) for s in hyps(out.tokens[b], out.lengths[b])}) == 4  # no duplicates


def test_length_normalisation_changes_the_ranking():
    # eos at once: 0.55; A B eos: 0.45 * 0.95 = 0.4275. Raw scores prefer the short one; with
    # the GNMT penalty at alpha = 2 the long one wins (-0.850 / (8/6)^2 = -0.478 > -0.598).
    table = hand_table({BOS: [0.55, 0.45, 0, 0], A: [0.05, 0, 0.95, 0], Bt: [1.0, 0, 0, 0]})
    step, state = chain_step(table), {"id": torch.zeros(1, dtype=torch.long)}
    plain = beam_search(step, state, BOS, EOS, beam_size=2, max_len=5)
    normed = beam_search(step, state, BOS, EOS, beam_size=2, max_len=5, length_penalty=2.0)
    assert hyps(plain.tokens[0], plain.lengths[0])[0] == [EOS]
    assert hyps(normed.tokens[0], normed.lengths[0])[0] == [A, Bt, EOS]
    assert math.isclose(float(normed.scores[0, 0]), math.log(0.4275) / (8 / 6) ** 2, rel_tol=1e-9)


def test_diverse_beam_search_reduces_to_beam_search():
    tables = random_tables(3, 6, seed=3)
    step, state = chain_step(tables), {"id": torch.arange(3)}
    ref = beam_search(step, state, BOS, EOS, beam_size=4, max_len=7, length_penalty=0.5)
    for strength in (0.0, 2.0):  # with one group there is no earlier group to penalise
        out = diverse_beam_search(step, state, BOS, EOS, beam_size=4, groups=1,
                                  diversity_strength=strength, max_len=7, length_penalty=0.5)
        for a, b in zip(out, ref):
            assert torch.equal(a, b)
    # groups of one beam without penalty: every group is a greedy decoder
    tokens, _ = greedy_decode(step, state, BOS, EOS, max_len=7)
    out = diverse_beam_search(step, state, BOS, EOS, beam_size=3, groups=3, diversity_strength=0.0,
                              max_len=7)
    for k in range(3):
        assert torch.equal(out.tokens[:, k, :tokens.shape[1]], tokens)


def test_diverse_beam_search_is_more_diverse():
    tables = random_tables(8, 10, seed=11, peak=2.0)
    step, state = chain_step(tables), {"id": torch.arange(8)}
    beam = beam_search(step, state, BOS, EOS, beam_size=6, max_len=8)
    diverse = diverse_beam_search(step, state, BOS, EOS, beam_size=6, groups=3,
                                  diversity_strength=2.0, max_len=8)

    def diversity(out, n):
        return sum(distinct_ngrams(hyps(out.tokens[b], out.lengths[b]), n) for b in range(8)) / 8

    for n in (1, 2):
        assert diversity(diverse, n) > diversity(beam, n)
    # the price: the best hypothesis of plain beam search is at least as probable
    assert (beam.log_probs.max(1).values >= diverse.log_probs.max(1).values - 1e-12).all()


@pytest.mark.parametrize("search", ["greedy", "beam", "diverse"])
def test_batched_equals_one_at_a_time(search):
    tables = random_tables(3, 7, seed=7, peak=1.5)
    step = chain_step(tables)

    def run(ids):
        state = {"id": ids}
        if search == "greedy":
            return greedy_decode(step, state, BOS, EOS, max_len=9)
        if search == "beam":
            return beam_search(step, state, BOS, EOS, beam_size=3, max_len=9, length_penalty=0.6)
        return diverse_beam_search(step, state, BOS, EOS, beam_size=4, groups=2,
                                   diversity_strength=0.8, max_len=9, length_penalty=0.6)

    together = run(torch.arange(3))
    for b in range(3):
        alone = run(torch.tensor([b]))
        for x, y in zip(together, alone):
            if x.dim() == y.dim() and x.dim() >= 2 and x.dtype == torch.long and x.shape[-1] != y.shape[-1]:
                pad = x.shape[-1] - y.shape[-1]      # the batch ran longer: eos padding
                y = torch.cat([y, torch.full((*y.shape[:-1], pad), EOS)], -1)
            torch.testing.assert_close(x[b], y[0])


def test_state_layouts_and_reorder():
    tables = random_tables(2, 6, seed=4)
    ref = beam_search(chain_step(tables), {"id": torch.arange(2)}, BOS, EOS, beam_size=3, max_len=6)

    def step_dim1(state, tokens):  # the batch on dim 1, like seqlib.RNN's (L, B, N) state
        return tables[state[0], tokens], state
    # B cannot be read from dim 0 of this state: bos is given as a (B,) tensor
    out = beam_search(step_dim1, torch.arange(2)[None], torch.full((2,), BOS), EOS, beam_size=3,
                      max_len=6, reorder=reorder_along(1))
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    nested = (torch.arange(3), [torch.zeros(3, 2), None], {"h": torch.ones(3)}, 7)
    got = reorder_state(nested, torch.tensor([2, 2, 0]))
    assert got[0].tolist() == [2, 2, 0] and got[1][0].shape == (3, 2) and got[1][1] is None
    assert got[2]["h"].shape == (3,) and got[3] == 7


def test_bad_input():
    tables = random_tables(2, 5, seed=0)
    step, state = chain_step(tables), {"id": torch.arange(2)}
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1, got 0"):
        beam_search(step, state, BOS, EOS, beam_size=0, max_len=4)
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1"):
        diverse_beam_search(step, state, BOS, EOS, beam_size=-2, groups=1, diversity_strength=1,
                            max_len=4)
    with pytest.raises(ValueError, match="groups must divide beam_size, got beam_size=6, groups=4"):
        diverse_beam_search(step, state, BOS, EOS, beam_size=6, groups=4, diversity_strength=1,
                            max_len=4)
    with pytest.raises(ValueError, match="max_len must be an integer >= 1"):
        greedy_decode(step, state, BOS, EOS, max_len=0)

    def unexpanded(state, tokens):  # forgets the beams: always (B, V)
        return tables[torch.arange(2), torch.zeros(2, dtype=torch.long)], state
    with pytest.raises(ValueError, match=re.escape("step returned log_probs of shape (2, 5), "
                                                   "expected (B*beams, V) = (6, V)")):
        beam_search(unexpanded, state, BOS, EOS, beam_size=3, max_len=4)
    calls = []

    def shrinking(state, tokens):  # changes V between calls
        calls.append(1)
        return tables[state["id"], tokens][:, :6 - len(calls)], state
    with pytest.raises(ValueError, match=re.escape("shape (2, 4), expected (B, V) = (2, 5)")):
        greedy_decode(shrinking, state, BOS, EOS, max_len=4)
    with pytest.raises(TypeError, match=r"step must return \(log_probs, new_state\)"):
        greedy_decode(lambda s, t: tables[0, t], state, BOS, EOS, max_len=4)
    with pytest.raises(ValueError, match="bos: pass a"):
        greedy_decode(lambda s, t: (tables[0, t], s), None, BOS, EOS, max_len=4)


def test_a_real_attention_decoder_through_its_step_face():
    """A GRU decoder with additive attention over padded encoder states, decoded with a custom
    reorder (seqlib.GRU's state is (L, B, N): batch on dim 1): batching and beam_size=1 checks."""
    from torch import nn

    from seqlib.attention import AdditiveAttention
    from seqlib.gated import GRU

    torch.manual_seed(0)
    V, N, S = 7, 8, 5
    emb, gru = nn.Embedding(V, N).double(), GRU(N, N, backend="torch").double()
    attn, out = AdditiveAttention(N, N, 6).double(), nn.Linear(2 * N, V).double()

    def step(state, tokens):
        y, h = gru.step(state["h"], emb(tokens))
        ctx, _ = attn(y, state["keys"], lengths=state["lengths"])   # the decoder-step face
        return torch.log_softmax(3 * out(torch.cat([y, ctx], -1)), -1), dict(state, h=h)

    def reorder(state, index):
        return {"h": state["h"].index_select(1, index), "keys": state["keys"][index],
                "lengths": state["lengths"][index]}

    keys = torch.randn(3, S, N, dtype=torch.float64)
    lengths = torch.tensor([5, 3, 2])
    h0 = torch.zeros(1, 3, N, dtype=torch.float64)

    def state_of(rows):
        return {"h": h0[:, rows], "keys": keys[rows], "lengths": lengths[rows]}

    bos = torch.full((3,), 1)
    with torch.no_grad():
        together = beam_search(step, state_of([0, 1, 2]), bos, EOS, beam_size=3, max_len=6,
                               reorder=reorder)
        tokens, scores = greedy_decode(step, state_of([0, 1, 2]), bos, EOS, max_len=6)
        one = beam_search(step, state_of([0, 1, 2]), bos, EOS, beam_size=1, max_len=6,
                          reorder=reorder)
        assert torch.equal(one.tokens[:, 0], tokens)
        torch.testing.assert_close(one.log_probs[:, 0], scores)
        for b in range(3):
            alone = beam_search(step, state_of([b]), bos[:1], EOS, beam_size=3, max_len=6,
                                reorder=reorder)
            L = alone.tokens.shape[2]
            assert torch.equal(together.tokens[b, :, :L], alone.tokens[0])
            torch.testing.assert_close(together.log_probs[b], alone.log_probs[0])
