"""An encoder-decoder (Sutskever et al. 2014; Cho et al. 2014) with optional attention
(Bahdanau et al. 2015; Luong et al. 2015), teacher forcing and scheduled sampling (Bengio et al. 2015).

Shapes (book/notation.md, batch first):
    B  batch      S  source length      T  target length      V  target vocabulary
    E  embedding width (emb)            N  hidden size        Nk = N * (2 if bidirectional else 1)
    src (B, S) int64 padded with ``pad``       src_lengths (B,) in 1..S
    tgt_in (B, T) = <bos> y_1 .. y_{T-1}       logits (B, T, V)       memory (encoder outputs) (B, S, Nk)

The encoder is :class:`seqlib.GRU` / :class:`seqlib.LSTM` over the padded source with its lengths
(optionally bidirectional; then a tanh bridge maps the two final states to the decoder's N). With
``reverse_source`` each source is read back to front within its own length.

The decoder, one step t (x_t = embedding of the previous token y_{t-1}):
    without attention:  h_t = cell(x_t, h_{t-1});                     logits_t = W_o h_t
    with attention:     h_t = cell([x_t; c_{t-1}], h_{t-1})            (input feeding)
                        c_t, a_t = attention(h_t, memory, lengths=src_lengths)
                        logits_t = W_o tanh(W_c [h_t; c_t])
``attention`` is any module called as ``attention(query (B, N), keys (B, S, Nk), lengths=(B,))``
returning ``(context (B, Nk), weights (B, S))``, e.g. ``seqlib.attention.AdditiveAttention(N, Nk, ...)``.

The step face (for ``seqlib.decode``): ``state = model.init_state(src, src_lengths)`` and
``log_probs (B, V), state = model.step(state, tokens (B,))``. The state is a dict of tensors whose
dim 0 is the batch ("h", "c" for the LSTM, "ctx", "attn" (B, S) the last attention weights,
"memory", "lengths"), so beam search can index_select it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqlib.gated import GRU, LSTM
from seqlib.recurrent import check_tensor, reverse_padded

__all__ = ["Seq2Seq", "token_accuracy"]


def _size(vocab, name):
    if isinstance(vocab, int):
        return vocab, 0, 1, 2
    try:
        return len(vocab), vocab.pad, vocab.bos, vocab.eos
    except (TypeError, AttributeError):
        raise TypeError(f"{name}: expected an int size or a Vocab (len, .pad, .bos, .eos), got "
                        f"{type(vocab).__name__}") from None


class Seq2Seq(nn.Module):
    """Seq2Seq(src_vocab, tgt_vocab, emb, hidden, cell="gru"|"lstm", attention=None,
    reverse_source=False, bidirectional=False). Vocabularies are ints (then pad, bos, eos = 0, 1, 2)
    or :class:`seqlib.data.translation.Vocab` objects."""

    def __init__(self, src_vocab, tgt_vocab, emb, hidden, cell="gru", attention=None,
                 reverse_source=False, bidirectional=False):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell: expected 'gru' or 'lstm', got {cell!r}")
        if attention is not None and not isinstance(attention, nn.Module):
            raise TypeError(f"attention: expected None or an nn.Module, got {type(attention).__name__}")
        self.src_size, self.src_pad, _, _ = _size(src_vocab, "src_vocab")
        self.tgt_size, self.pad, self.bos, self.eos = _size(tgt_vocab, "tgt_vocab")
        self.cell, self.hidden, self.reverse_source = cell, hidden, reverse_source
        self.bidirectional = bidirectional
        self.key_size = hidden * (2 if bidirectional else 1)
        Rnn = GRU if cell == "gru" else LSTM
        self.src_embed = nn.Embedding(self.src_size, emb, padding_idx=self.src_pad)
        self.tgt_embed = nn.Embedding(self.tgt_size, emb, padding_idx=self.pad)
        self.encoder = Rnn(emb, hidden, batch_first=True, bidirectional=bidirectional)
        self.bridge = nn.Linear(2 * hidden, hidden) if bidirectional else None
        self.attention = attention
        self.decoder = Rnn(emb + (self.key_size if attention is not None else 0), hidden)
        self.combine = nn.Linear(hidden + self.key_size, hidden) if attention is not None else None
        self.out = nn.Linear(hidden, self.tgt_size)

    # ---- checks -------------------------------------------------------------------------------
    def _check_source(self, src, src_lengths):
        check_tensor("src", src, (None, None), "(B, S)")
        B, S = src.shape
        if src.is_floating_point():
            raise TypeError(f"src: expected integer token ids, got dtype {src.dtype}")
        src_lengths = torch.as_tensor(src_lengths)
        if src_lengths.dim() != 1 or src_lengths.shape[0] != B:
            raise ValueError(f"src_lengths: expected shape (B,) = ({B},), got "
                             f"{tuple(src_lengths.shape)}")
        if src_lengths.is_floating_point() or src_lengths.dtype == torch.bool:
            raise TypeError(f"src_lengths: expected integers, got dtype {src_lengths.dtype}")
        src_lengths = src_lengths.to(src.device, torch.long)
        if B and (src_lengths.min() < 1 or src_lengths.max() > S):
            raise ValueError(f"src_lengths: every length must be in 1..S = 1..{S}, got "
                             f"{src_lengths.tolist()}")
        beyond = torch.arange(S, device=src.device)[None, :] >= src_lengths[:, None]  # (B, S)
        bad = (beyond & (src != self.src_pad)).any(dim=1)
        if bad.any():
            rows = bad.nonzero().flatten().tolist()[:5]
            raise ValueError(f"src_lengths do not match the padding of src in rows {rows}: "
                             f"positions s >= src_lengths[b] must hold the pad id {self.src_pad}")
        return src_lengths

    # ---- the step face --------------------------------------------------------------------------
    def init_state(self, src, src_lengths):
        """Encode the source: src (B, S), src_lengths (B,) -> the decoder's initial state (a dict)."""
        src_lengths = self._check_source(src, src_lengths)
        x = self.src_embed(src)                                                   # (B, S, E)
        if self.reverse_source:
            x = reverse_padded(x.transpose(0, 1), src_lengths).transpose(0, 1)
        memory, final = self.encoder(x, lengths=src_lengths)                      # (B, S, Nk)
        finals = (final,) if self.cell == "gru" else final                        # each (dirs, B, N)
        finals = [self._bridge(f) for f in finals]                                # each (B, N)
        B, S = src.shape
        state = {"h": finals[0], "memory": memory, "lengths": src_lengths,
                 "ctx": memory.new_zeros(B, self.key_size), "attn": memory.new_zeros(B, S)}
        if self.cell == "lstm":
            state["c"] = finals[1]
        return state

    def _bridge(self, f):
        if self.bridge is None:
            return f[0]
        return torch.tanh(self.bridge(torch.cat([f[0], f[1]], dim=-1)))

    def _step_logits(self, state, tokens):
        x = self.tgt_embed(tokens)                                                # (B, E)
        if self.attention is not None:
            x = torch.cat([x, state["ctx"]], dim=-1)
        rec = state["h"][None] if self.cell == "gru" else (state["h"][None], state["c"][None])
        h, rec = self.decoder.step(rec, x)                                        # h (B, N)
        new = dict(state, h=h)
        if self.cell == "lstm":
            new["c"] = rec[1][0]
        if self.attention is None:
            return self.out(h), new
        ctx, weights = self.attention(h, state["memory"], lengths=state["lengths"])
        B, S = state["attn"].shape
        if tuple(ctx.shape) != (B, self.key_size) or tuple(weights.shape) != (B, S):
            raise ValueError(f"attention: expected (context (B, Nk) = ({B}, {self.key_size}), "
                             f"weights (B, S) = ({B}, {S})), got ({tuple(ctx.shape)}, "
                             f"{tuple(weights.shape)})")
        new["ctx"], new["attn"] = ctx, weights
        return self.out(torch.tanh(self.combine(torch.cat([h, ctx], dim=-1)))), new

    def step(self, state, tokens):
        """tokens (B,) the previous tokens -> (log_probs (B, V), new_state)."""
        B = state["h"].shape[0]
        check_tensor("tokens", tokens, (B,), "(B,)")
        logits, new = self._step_logits(state, tokens)
        return F.log_softmax(logits, dim=-1), new

    # ---- training ------------------------------------------------------------------------------
    def forward(self, src, src_lengths, tgt_in, teacher_forcing=1.0, sample=False,
                generator=None, return_attention=False):
        """src (B, S), src_lengths (B,), tgt_in (B, T) -> logits (B, T, V) [and attention (B, T, S)].

        teacher_forcing is the probability, per batch element and step, of feeding the gold token
        tgt_in[:, t]; otherwise the model's own previous prediction is fed (its argmax, or a sample
        from its distribution with ``sample=True``): scheduled sampling. tgt_in[:, 0] (<bos>) is
        always fed."""
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing: expected a probability in [0, 1], got {teacher_forcing}")
        state = self.init_state(src, src_lengths)
        B = src.shape[0]
        check_tensor("tgt_in", tgt_in, (B, None), "(B, T)")
        logits, attns, tokens = [], [], tgt_in[:, 0]
        for t in range(tgt_in.shape[1]):
            if t > 0 and teacher_forcing < 1.0:
                prev = logits[-1].detach()
                own = (torch.multinomial(F.softmax(prev, -1), 1, generator=generator).squeeze(1)
                       if sample else prev.argmax(-1))
                gold = torch.rand(B, generator=generator, device=src.device) < teacher_forcing
                tokens = torch.where(gold, tgt_in[:, t], own)
            elif t > 0:
                tokens = tgt_in[:, t]
            lg, state = self._step_logits(state, tokens)
            logits.append(lg)
            attns.append(state["attn"])
        out = torch.stack(logits, dim=1) if logits else src.new_zeros(B, 0, self.tgt_size).float()
        if return_attention:
            return out, (torch.stack(attns, dim=1) if attns else None)
        return out

    def loss(self, src, src_lengths, tgt_in, tgt_out, teacher_forcing=1.0, **kw):
        """Mean cross-entropy over the real (non-pad) target tokens of tgt_out (B, T)."""
        check_tensor("tgt_out", tgt_out, tuple(tgt_in.shape), "(B, T) like tgt_in")
        logits = self(src, src_lengths, tgt_in, teacher_forcing=teacher_forcing, **kw)
        return F.cross_entropy(logits.reshape(-1, self.tgt_size), tgt_out.reshape(-1),
                               ignore_index=self.pad)


def token_accuracy(logits, tgt_out, pad=0):
    """Fraction of non-pad positions of tgt_out (B, T) where logits (B, T, V) have the argmax."""
    real = tgt_out != pad
    return ((logits.argmax(-1) == tgt_out) & real).sum().item() / max(int(real.sum()), 1)
