"""seqlib.seq2seq: the step face equals teacher-forced forward; errors; a tiny copy task learns.

The attention used here is a tiny local dot-product stand-in (``DotAttention``) so these tests do
not depend on seqlib.attention; one test also runs seqlib.attention's modules when present.
"""
import pytest
import torch
from torch import nn

from seqlib.seq2seq import Seq2Seq, token_accuracy


class DotAttention(nn.Module):
    """Stand-in: query (B, N), keys (B, S, N), lengths (B,) -> (context (B, N), weights (B, S))."""

    def forward(self, query, keys, values=None, mask=None, lengths=None):
        scores = torch.einsum("bn,bsn->bs", query, keys)
        if lengths is not None:
            real = torch.arange(keys.shape[1])[None, :] < lengths[:, None]
            scores = scores.masked_fill(~real, float("-inf"))
        w = scores.softmax(-1)
        return torch.einsum("bs,bsn->bn", w, keys if values is None else values), w


def _batch(B=4, S=6, T=5, V=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S
    src = torch.randint(4, V, (B, S), generator=g)
    src[torch.arange(S)[None, :] >= lengths[:, None]] = 0
    tgt_in = torch.randint(4, V, (B, T), generator=g)
    tgt_in[:, 0] = 1
    return src, lengths, tgt_in


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attn, bidir", [(False, False), (True, False), (False, True)])
def test_forward_equals_stepping(cell, attn, bidir):
    torch.manual_seed(0)
    m = Seq2Seq(9, 11, 8, 12, cell=cell, bidirectional=bidir, reverse_source=bidir,
                attention=DotAttention() if attn else None)
    src, lengths, tgt_in = _batch(V=9)
    logits = m(src, lengths, tgt_in)
    assert logits.shape == (4, 5, 11)
    state, steps = m.init_state(src, lengths), []
    for t in range(tgt_in.shape[1]):
        for v in state.values():
            assert v.shape[0] == 4  # dim 0 is the batch, for beam search
        lp, state = m.step(state, tgt_in[:, t])
        steps.append(lp)
    torch.testing.assert_close(torch.stack(steps, 1), logits.log_softmax(-1))


def test_padding_does_not_leak_and_reverse_source():
    torch.manual_seed(0)
    for rev in (False, True):
        m = Seq2Seq(9, 11, 8, 12, attention=DotAttention(), reverse_source=rev)
        src, lengths, tgt_in = _batch()
        a, w = m(src, lengths, tgt_in, return_attention=True)
        assert w.shape == (4, 5, 6)
        for b in range(4):
            assert (w[b, :, lengths[b]:] == 0).all()
        longer = torch.cat([src, torch.zeros(4, 3, dtype=torch.long)], 1)
        torch.testing.assert_close(m(longer, lengths, tgt_in), a)


def test_scheduled_sampling_runs_and_differs():
    torch.manual_seed(0)
    m = Seq2Seq(9, 11, 8, 12, cell="lstm", attention=DotAttention())
    src, lengths, tgt_in = _batch()
    full = m(src, lengths, tgt_in)
    free = m(src, lengths, tgt_in, teacher_forcing=0.0)
    torch.testing.assert_close(free[:, 0], full[:, 0])
    assert not torch.allclose(free, full)
    g = torch.Generator().manual_seed(1)
    assert m(src, lengths, tgt_in, teacher_forcing=0.5, sample=True, generator=g).shape == full.shape


def test_errors_name_the_argument():
    m = Seq2Seq(9, 11, 8, 12)
    src, lengths, tgt_in = _batch()
    with pytest.raises(ValueError, match="src_lengths: expected shape"):
        m(src, lengths[:3], tgt_in)
    with pytest.raises(ValueError, match="1..S"):
        m(src, lengths + 10, tgt_in)
    bad = lengths.clone()
    bad[0] = 2  # row 0 holds 6 real tokens
    with pytest.raises(ValueError, match="do not match the padding"):
        m(src, bad, tgt_in)
    with pytest.raises(ValueError, match="tgt_in"):
        m(src, lengths, tgt_in[:2])
    with pytest.raises(ValueError, match="teacher_forcing"):
        m(src, lengths, tgt_in, teacher_forcing=1.5)
    with pytest.raises(ValueError, match="cell"):
        Seq2Seq(9, 11, 8, 12, cell="rnn")
    with pytest.raises(ValueError, match="tokens"):
        m.step(m.init_state(src, lengths), tgt_in[:2, 0])


def test_seqlib_attention_modules_plug_in():
    att = pytest.importorskip("seqlib.attention")
    torch.manual_seed(0)
    for a in (att.AdditiveAttention(12, 24, 10), att.MultiplicativeAttention(12, 24, score="general")):
        m = Seq2Seq(9, 11, 8, 12, attention=a, bidirectional=True)
        src, lengths, tgt_in = _batch()
        logits = m(src, lengths, tgt_in)
        state, steps = m.init_state(src, lengths), []
        for t in range(5):
            lp, state = m.step(state, tgt_in[:, t])
            steps.append(lp)
        torch.testing.assert_close(torch.stack(steps, 1), logits.log_softmax(-1))


def test_dot_attention_through_the_fused_kernel_equals_torch():
    """MultiplicativeAttention(backend="triton") inside Seq2Seq: the decoder-step face with the
    source lengths runs the fused attention-step kernel (Triton's interpreter on a CPU)."""
    from seqlib.attention import MultiplicativeAttention
    src, lengths, tgt_in = _batch(B=3, S=5, T=3)
    out = {}
    for backend in ("torch", "triton"):
        torch.manual_seed(0)
        m = Seq2Seq(9, 11, 8, 12, attention=MultiplicativeAttention(12, 12, backend=backend))
        logits = m(src, lengths, tgt_in)
        logits.square().sum().backward()
        out[backend] = (logits.detach(), [p.grad.clone() for p in m.parameters()])
    torch.testing.assert_close(out["triton"][0], out["torch"][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(out["triton"][1], out["torch"][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_copy_task_learns_fast():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and immune to a busy machine
    try:
        _copy_task()
    finally:
        torch.set_num_threads(threads)


def _copy_task():
    torch.manual_seed(0)
    V, L, B = 12, 5, 64
    m = Seq2Seq(V, V, 16, 64, attention=DotAttention())
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)

    def batch():
        src = torch.randint(4, V, (B, L), generator=g)
        tgt_in = torch.cat([torch.ones(B, 1, dtype=torch.long), src], 1)
        tgt_out = torch.cat([src, torch.full((B, 1), 2)], 1)
        return src, torch.full((B,), L), tgt_in, tgt_out

    for _ in range(150):
        src, lengths, tgt_in, tgt_out = batch()
        opt.zero_grad()
        m.loss(src, lengths, tgt_in, tgt_out).backward()
        opt.step()
    src, lengths, tgt_in, tgt_out = batch()
    with torch.no_grad():
        acc = token_accuracy(m(src, lengths, tgt_in), tgt_out)
    assert acc > 0.9, acc
