"""seqlib.transformer: positions (rotary scores depend only on relative position), multi-head
attention against torch.nn.MultiheadAttention, the KV cache, and the language model's two faces
held equal (step by step against the parallel forward, for every position kind and both norms;
generation with and without the cache), decoding with seqlib.decode, training with seqlib.lm,
and bad input."""
import math
import re

import pytest
import torch
from torch import nn

import seqlib
from seqlib.decode import beam_search, greedy_decode, sequence_lengths
from seqlib.lm import bits_per_char, train_char_lm
from seqlib.transformer import (POSITIONS, KVCache, LearnedPositions, MultiHeadAttention,
                                RotaryEmbedding, TransformerBlock, TransformerLM, TransformerState,
                                count_parameters, sinusoidal_positions)

V = 11


def _lm(positions="rotary", norm="pre", seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"D": 16, "H": 2, "L": 2, "max_len": 12, **kw}
    return TransformerLM(V, positions=positions, norm=norm, **kw).double().eval()


def _ids(T, B, seed=1):
    return torch.randint(0, V, (T, B), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- positions

def test_sinusoidal_table():
    P = sinusoidal_positions(50, 6)
    assert P.shape == (50, 6)
    t = torch.arange(50.0)
    for i in range(3):
        freq = 10000 ** (-2 * i / 6)
        torch.testing.assert_close(P[:, 2 * i], torch.sin(t * freq))
        torch.testing.assert_close(P[:, 2 * i + 1], torch.cos(t * freq))
    assert sinusoidal_positions(4, 5).shape == (4, 5)  # odd D: the last sine has no cosine


def test_learned_positions():
    pos = LearnedPositions(8, 4)
    assert pos(torch.arange(3)).shape == (3, 4)
    with pytest.raises(ValueError, match="max_len=8 rows, got position 8"):
        pos(torch.arange(9))


def test_rotary_scores_depend_only_on_relative_position():
    rot = RotaryEmbedding(8).double()
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g,
                                                                         dtype=torch.float64)

    def score(m, n):
        return (rot.rotate(q[None], torch.tensor([m])) @ rot.rotate(k[None], torch.tensor([n])).T).item()

    for offset in (-5, 0, 1, 7):
        ref = score(20, 20 + offset)
        for m in (0, 3, 100, 1234):
            assert math.isclose(score(m, m + offset), ref, rel_tol=1e-9, abs_tol=1e-12)
    assert not math.isclose(score(0, 1), score(0, 2))  # but it does depend on the offset


def test_rotary_preserves_norms_and_position_zero():
    rot = RotaryEmbedding(6)
    x = torch.randn(2, 3, 5, 6)
    y = rot.rotate(x)  # positions 0..4
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(y[..., 0, :], x[..., 0, :])


def test_rotary_errors():
    with pytest.raises(ValueError, match="Dh must be even .* got Dh=7"):
        RotaryEmbedding(7)
    with pytest.raises(ValueError, match=re.escape("x: expected shape (..., T, Dh) = (..., T, 8), got (3, 6)")):
        RotaryEmbedding(8).rotate(torch.randn(3, 6))
    with pytest.raises(ValueError, match=re.escape("positions: expected shape (T,) = (3,), got (4,)")):
        RotaryEmbedding(8).rotate(torch.randn(3, 8), torch.arange(4))


# ------------------------------------------------------------------------ multi-head attention

@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("masking", ["none", "causal", "padding"])
def test_mha_equals_torch_multihead_attention(bias, masking):
    torch.manual_seed(0)
    D, H, B, T = 12, 3, 2, 5
    ours = MultiHeadAttention(D, H, bias=bias).double()
    ref = nn.MultiheadAttention(D, H, bias=bias, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        if bias:
            ours.in_proj.bias.normal_()
            ours.out_proj.bias.normal_()
            ref.in_proj_bias.copy_(ours.in_proj.bias)
            ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(B, T, D, dtype=torch.float64, requires_grad=True)
    if masking == "causal":
        y = ours(x, causal=True)
        y_ref, _ = ref(x, x, x, attn_mask=~torch.ones(T, T, dtype=torch.bool).tril(),
                       need_weights=False)
    elif masking == "padding":
        keep = torch.tensor([[True] * T, [True] * 3 + [False] * (T - 3)])   # (B, Tk)
        y = ours(x, mask=keep[:, None, None, :])
        y_ref, _ = ref(x, x, x, key_padding_mask=~keep, need_weights=False)
    else:
        y = ours(x)
        y_ref, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(y, y_ref)
    up = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, x, up)[0], torch.autograd.grad(y_ref, x, up)[0])


def test_mha_with_cache_equals_full_causal_pass():
    """Feeding a sequence in pieces (3, then 1, then 2 positions) through a KV cache gives the
    causal pass over the whole: the new queries see the cache and their own past."""
    torch.manual_seed(0)
    mha, rot = MultiHeadAttention(8, 2).double(), RotaryEmbedding(4)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    full = mha(x, causal=True, rotary=rot)
    cache = KVCache(2, 2, 6, 4, dtype=torch.float64)
    pieces = [mha(x[:, a:b], causal=True, rotary=rot, cache=cache) for a, b in ((0, 3), (3, 4), (4, 6))]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == 6


def test_mha_errors():
    with pytest.raises(ValueError, match="D must be divisible by H .* got D=10, H=3"):
        MultiHeadAttention(10, 3)
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=re.escape("x: expected shape (B, T, D) = ('*', '*', 8), got (2, 5, 6)")):
        mha(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"mask: shape \(5, 4\) does not broadcast"):
        mha(torch.randn(2, 5, 8), mask=torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="rotary: built for Dh=8, but the heads have Dh = D / H = 4"):
        mha(torch.randn(2, 5, 8), rotary=RotaryEmbedding(8))


# ----------------------------------------------------------------------------------- KV cache

def test_kv_cache_append_view_and_overflow():
    cache = KVCache(2, 3, 5, 4)
    k, v = torch.randn(2, 3, 3, 4), torch.randn(2, 3, 3, 4)
    k_all, v_all = cache.append(k, v)
    assert torch.equal(k_all, k) and torch.equal(v_all, v) and cache.length == 3
    k2, v2 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    cache.append(k2, v2)
    k_all, v_all = cache.view()
    assert torch.equal(k_all, torch.cat([k, k2], 2)) and torch.equal(v_all, torch.cat([v, v2], 2))
    with pytest.raises(ValueError, match="KVCache overflow: 5 positions cached, appending 1 more "
                                         "would exceed max_len=5"):
        cache.append(torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4))
    with pytest.raises(ValueError, match=re.escape("k: expected shape (B, H, T, Dh) = (2, 3, '*', 4)")):
        KVCache(2, 3, 5, 4).append(torch.randn(2, 3, 1, 5), torch.randn(2, 3, 1, 5))


# ------------------------------------------------------------------------------- the block

@pytest.mark.parametrize("norm", ["pre", "post"])
def test_block_is_causal(norm):
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, norm=norm).double()
    assert block.ff[0].out_features == 32  # d_ff defaults to 4 D
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(1, 2, 8, dtype=torch.float64)  # change the future only
    torch.testing.assert_close(block(x, causal=True)[:, :4], block(x2, causal=True)[:, :4])
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerBlock(8, 2, norm="sandwich")


# -------------------------------------------------------------------------- the language model

@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("positions", POSITIONS)
def test_step_equals_parallel_forward(positions, norm):
    model = _lm(positions, norm)
    x = _ids(9, 3)
    logits, state = model(x)
    assert logits.shape == (9, 3, V) and state is None
    parallel = torch.log_softmax(logits, dim=-1)
    state, steps = None, []
    for t in range(9):
        log_probs, state = model.step(state, x[t])
        steps.append(log_probs)
    torch.testing.assert_close(torch.stack(steps), parallel)
    assert isinstance(state, TransformerState) and state.position == 9


@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_generate_with_and_without_cache_agree(positions):
    model = _lm(positions, max_len=16)
    prompt = _ids(4, 3, seed=2)
    cached = model.generate(prompt, 10)
    assert cached.shape == (10, 3)
    assert torch.equal(cached, model.generate(prompt, 10, use_cache=False))
    assert torch.equal(model.generate(prompt, 1), cached[:1])
    # and the greedy choice is what the parallel forward predicts at every position
    seq = torch.cat([prompt, cached[:-1]])
    assert torch.equal(model(seq)[0][3:].argmax(-1), cached)


def test_generate_float32_and_training_mode_restored():
    torch.manual_seed(0)
    model = TransformerLM(V, D=16, H=2, L=1, max_len=20, dropout=0.1)
    prompt = _ids(3, 2)
    assert torch.equal(model.generate(prompt, 8), model.generate(prompt, 8, use_cache=False))
    assert model.training


def test_greedy_decode_and_beam_search_run_on_step():
    model = _lm("rotary", max_len=12)
    bos = torch.tensor([0, 3, 5])
    eos = V - 1
    tokens, scores = greedy_decode(model.step, None, bos, eos, max_len=8)
    gen = model.generate(bos[None], 8).T
    for b in range(3):
        n = int(sequence_lengths(tokens[b], eos))
        assert torch.equal(tokens[b, :n], gen[b, :n])
    beams = beam_search(model.step, None, bos, eos, beam_size=3, max_len=8)
    assert beams.tokens.shape[:2] == (3, 3)
    # every hypothesis's summed log-prob is what the parallel forward gives its tokens: the
    # default reorder carried the right KV caches along with each beam
    for b in range(3):
        for j in range(3):
            n = int(beams.lengths[b, j])
            toks = beams.tokens[b, j, :n]
            inp = torch.cat([bos[b:b + 1], toks[:-1]])[:, None]
            lp = torch.log_softmax(model(inp)[0][:, 0], -1).gather(1, toks[:, None]).sum()
            torch.testing.assert_close(beams.log_probs[b, j], lp)
    one = beam_search(model.step, None, bos, eos, beam_size=1, max_len=8)
    for b in range(3):
        n = int(one.lengths[b, 0])
        assert torch.equal(one.tokens[b, 0, :n], tokens[b, :n])


def test_trains_with_seqlib_lm():
    text = "the quick brown fox jumps over the lazy dog. " * 40
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(c) for c in text])
    torch.manual_seed(0)
    model = TransformerLM(len(chars), D=32, H=4, L=2, max_len=32)
    before = bits_per_char(model, ids[:400], streams=4, window=32)
    history = train_char_lm(model, ids, steps=20, batch_size=8, window=32, lr=3e-3, progress=False)
    loss = history["loss"]
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.5
    after = bits_per_char(model, ids[:400], streams=4, window=32)
    assert after < before
    assert model.cell == "transformer"


def test_count_parameters():
    model = TransformerLM(V, D=16, H=2, L=1, max_len=8, positions="learned")
    D, F = 16, 64
    block = 4 * D * D + 4 * D + 2 * D * F + F + D + 4 * D   # attention, ff, two LayerNorms
    expected = V * D + 8 * D + block + 2 * D + D * V + V    # embed, positions, block, ln_f, head
    assert count_parameters(model) == expected
    model.embed.weight.requires_grad_(False)
    assert count_parameters(model) == expected - V * D
    assert count_parameters(model, trainable_only=False) == expected


def test_lm_errors():
    model = _lm(max_len=12)
    with pytest.raises(ValueError, match="length T=13 exceeds the model's max_len=12"):
        model(_ids(13, 2))
    with pytest.raises(TypeError, match="x: expected integer token ids"):
        model(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="D must be divisible by H"):
        TransformerLM(V, D=10, H=3)
    with pytest.raises(ValueError, match="positions must be one of"):
        TransformerLM(V, positions="alibi")
    state = model.init_state(2, max_len=2)
    for t in range(2):
        _, state = model.step(state, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="KV cache full: 2 positions read .* max_len=2"):
        model.step(state, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="max_len=13 exceeds the model's max_len=12"):
        model.init_state(2, max_len=13)
    with pytest.raises(ValueError, match="T0 \\+ n - 1 = 13 positions, the model's max_len=12"):
        model.generate(_ids(4, 1), 10)
    with pytest.raises(ValueError, match="batch B=3 does not match the state's B=2"):
        model.step(model.init_state(2), torch.tensor([1, 2, 3]))


def test_exported_from_seqlib():
    assert seqlib.TransformerLM is TransformerLM and seqlib.MultiHeadAttention is MultiHeadAttention
    assert "TransformerBlock" in seqlib.__all__


def test_lm_with_triton_backend_equals_torch():
    """Tiny: the flash kernel runs in Triton's interpreter; the step face (one query, no mask)
    goes through it too."""
    torch.manual_seed(0)
    model = TransformerLM(V, D=16, H=2, L=1, max_len=8, backend="torch").eval()
    flash = TransformerLM(V, D=16, H=2, L=1, max_len=8, backend="triton").eval()
    flash.load_state_dict(model.state_dict())
    x = _ids(5, 1)
    torch.testing.assert_close(flash(x)[0], model(x)[0], rtol=1e-4, atol=1e-5)
    lp, _ = flash.step(None, x[0])
    torch.testing.assert_close(lp, torch.log_softmax(model(x[:1])[0][0], -1), rtol=1e-4, atol=1e-5)
