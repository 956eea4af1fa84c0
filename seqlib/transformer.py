"""The Transformer (Vaswani et al. 2017) as the book builds it: positions, multi-head attention, the
block (pre-LN or post-LN), and a decoder-only language model with a KV cache and a ``step`` face.

Shapes (book/notation.md):
    B  batch      T  length (queries)      Tk  keys (cached positions + new ones)
    D  model width      H  heads      Dh = D / H  width of one head      L  layers
    V  vocabulary       F  feed-forward width (d_ff, default 4 D)

    x       (B, T, D)        inside the model (batch first)
    q, k, v (B, H, T, Dh)    per head
    ids     (T, B)           the language model's input, time first like seqlib.lm.CharLM

Two faces, as every mixer in the book has:
* the parallel face, ``TransformerLM.forward(x)``: every position of a window at once, a causal
  mask keeping each position from seeing the future (training, scoring);
* the recurrent face, ``TransformerLM.step(state, tokens)``: one token at a time. Attention's
  "state" is every past key and value, the KV cache, so it grows by one position per token
  (an RNN's state has a fixed size; this is the price of attention's exact recall).
The tests hold the two equal.

Masks follow ``seqlib.attention.scaled_dot_product_attention`` (and PyTorch's SDPA): a bool mask
is True where a key takes part. (``torch.nn.MultiheadAttention``'s bool ``attn_mask`` means the
opposite, True = masked out.)
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from seqlib.attention import SDPA_BACKENDS, scaled_dot_product_attention
from seqlib.recurrent import check_tensor

__all__ = ["sinusoidal_positions", "LearnedPositions", "RotaryEmbedding", "KVCache",
           "MultiHeadAttention", "TransformerBlock", "TransformerLM", "TransformerState",
           "count_parameters", "POSITIONS", "NORMS"]

POSITIONS = ("rotary", "sinusoidal", "learned", "none")
NORMS = ("pre", "post")


def _positive_int(name, val):
    if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
        raise ValueError(f"{name} must be a positive integer, got {val!r}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """How many numbers the model learns (all parameters if trainable_only=False)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------- positions


def sinusoidal_positions(T, D, base=10000.0, device=None, dtype=None):
    """(T, D) table of Vaswani et al.: P[t, 2i] = sin(t / base^(2i/D)), P[t, 2i+1] = cos(same).

    Each pair of columns is a rotation at its own frequency, so P[t + s] is a fixed linear map
    (a rotation) of P[t] for every t: relative offsets are easy for a linear layer to read.
    D may be odd (the last sine column has no cosine partner)."""
    _positive_int("T", T)
    _positive_int("D", D)
    t = torch.arange(T, device=device, dtype=torch.float64)[:, None]                 # (T, 1)
    freq = base ** (-torch.arange(0, D, 2, device=device, dtype=torch.float64) / D)  # (ceil(D/2),)
    table = torch.zeros(T, D, device=device, dtype=torch.float64)
    table[:, 0::2] = torch.sin(t * freq)
    table[:, 1::2] = torch.cos(t * freq[: D // 2])
    return table.to(dtype or torch.get_default_dtype())


class LearnedPositions(nn.Module):
    """A learned (max_len, D) table, one vector per position (GPT's), ``weight`` ~ N(0, 0.02^2).

    forward(positions (T,) int) -> (T, D). Cannot say anything about positions >= max_len."""

    def __init__(self, max_len, D, device=None, dtype=None):
        super().__init__()
        _positive_int("max_len", max_len)
        _positive_int("D", D)
        self.max_len, self.D = max_len, D
        self.weight = nn.Parameter(torch.empty(max_len, D, device=device, dtype=dtype))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions):
        positions = torch.as_tensor(positions, device=self.weight.device)
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(f"positions: the learned table has max_len={self.max_len} rows, got "
                             f"position {int(positions.max())}")
        return self.weight[positions]

    def extra_repr(self):
        return f"max_len={self.max_len}, D={self.D}"


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) for heads of width Dh (even).

    Pair (x[2i], x[2i+1]) of a query or key at position p is rotated by the angle p * theta_i,
    theta_i = base^(-2i/Dh). A rotation by a then one by -b leaves a rotation by a - b, so
    <rotate(q, m), rotate(k, n)> depends on the positions only through m - n: attention scores
    see relative positions, with nothing added to the token vectors. No learned parameters.
    """

    def __init__(self, Dh, base=10000.0):
        super().__init__()
        _positive_int("Dh", Dh)
        if Dh % 2:
            raise ValueError(f"Dh must be even for rotary embeddings (pairs of coordinates are "
                             f"rotated), got Dh={Dh}")
        self.Dh, self.base = Dh, float(base)
        self.register_buffer("theta", self.base ** (-torch.arange(0, Dh, 2, dtype=torch.float64)
                                                    / Dh), persistent=False)   # (Dh/2,)

    def rotate(self, x, positions=None):
        """x (..., T, Dh), positions (T,) (default 0..T-1) -> x rotated, same shape and dtype."""
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[-1] != self.Dh:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected shape (..., T, Dh) = (..., T, {self.Dh}), got {got}")
        T = x.shape[-2]
        if positions is None:
            positions = torch.arange(T, device=x.device)
        positions = torch.as_tensor(positions, device=x.device)
        if positions.shape != (T,):
            raise ValueError(f"positions: expected shape (T,) = ({T},), got {tuple(positions.shape)}")
        angle = positions.to(torch.float64)[:, None] * self.theta.to(x.device)       # (T, Dh/2)
        cos, sin = torch.cos(angle).to(x.dtype), torch.sin(angle).to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    forward = rotate

    def extra_repr(self):
        return f"Dh={self.Dh}, base={self.base}"


# ---------------------------------------------------------------------------- the KV cache


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    KVCache(B, H, max_len, Dh) allocates k and v buffers (B, H, max_len, Dh); ``length``
    positions are filled. ``append(k, v)`` with k, v (B, H, T, Dh) writes them at positions
    length .. length+T-1 (in place) and returns the filled part, ``view()`` = (k, v) each
    (B, H, length, Dh). Appending past max_len is an error, never a silent reallocation.
    ``KVCache.from_buffers(k, v, length)`` wraps existing buffers without copying (this is how
    ``TransformerLM.step`` keeps its caches inside a state of plain tensors).
    """

    def __init__(self, B, H, max_len, Dh, device=None, dtype=None):
        for name, val in (("B", B), ("H", H), ("max_len", max_len), ("Dh", Dh)):
            _positive_int(name, val)
        self.k = torch.zeros(B, H, max_len, Dh, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    @classmethod
    def from_buffers(cls, k, v, length=0):
        check_tensor("k", k, (None, None, None, None), "(B, H, max_len, Dh)")
        check_tensor("v", v, tuple(k.shape), "(B, H, max_len, Dh)")
        if not 0 <= length <= k.shape[2]:
            raise ValueError(f"length must be in [0, max_len] = [0, {k.shape[2]}], got {length}")
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.length = k, v, int(length)
        return cache

    @property
    def max_len(self):
        return self.k.shape[2]

    def append(self, k, v):
        """k, v (B, H, T, Dh) -> all cached (k, v), each (B, H, length + T, Dh)."""
        B, H, max_len, Dh = self.k.shape
        check_tensor("k", k, (B, H, None, Dh), "(B, H, T, Dh)")
        check_tensor("v", v, tuple(k.shape), "(B, H, T, Dh)")
        T = k.shape[2]
        if self.length + T > max_len:
            raise ValueError(f"KVCache overflow: {self.length} positions cached, appending {T} "
                             f"more would exceed max_len={max_len}; allocate a larger cache")
        self.k[:, :, self.length:self.length + T] = k
        self.v[:, :, self.length:self.length + T] = v
        self.length += T
        return self.view()

    def view(self):
        """The filled part: (k, v), each (B, H, length, Dh) (views of the buffers)."""
        return self.k[:, :, :self.length], self.v[:, :, :self.length]

    def __repr__(self):
        B, H, max_len, Dh = self.k.shape
        return f"KVCache(B={B}, H={H}, max_len={max_len}, Dh={Dh}, length={self.length})"


# ------------------------------------------------------------------------- attention, block


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention, laid out as ``torch.nn.MultiheadAttention(D, H, batch_first=True)``.

    in_proj (Linear D -> 3D: rows [W_q; W_k; W_v], as torch's in_proj_weight) splits into H heads
    of width Dh = D / H; each head runs ``scaled_dot_product_attention``; the heads are
    concatenated and mixed by out_proj (Linear D -> D). Initialised as PyTorch initialises its
    module (xavier-uniform in_proj, zero biases), so copying torch's weights gives its outputs.

    forward(x (B, T, D), mask=None, causal=False, rotary=None, cache=None) -> (B, T, D).
    mask: bool (True = take part) or float, broadcastable to (B, H, T, Tk); for a key-padding
    mask (B, Tk) pass ``mask[:, None, None, :]``. rotary: a ``RotaryEmbedding(Dh)`` applied to
    q and k at their absolute positions. cache: a ``KVCache``; the new keys and values are
    appended to it and the queries attend over everything cached, with causal=True meaning
    "nothing after my own position" (the new queries sit at positions length .. length+T-1).
    """

    def __init__(self, D, H, bias=True, backend="auto", device=None, dtype=None):
        super().__init__()
        _positive_int("D", D)
        _positive_int("H", H)
        if D % H:
            raise ValueError(f"D must be divisible by H (each head gets Dh = D / H), got D={D}, H={H}")
        if backend not in SDPA_BACKENDS:
            raise ValueError(f"backend must be one of {SDPA_BACKENDS}, got {backend!r}")
        self.D, self.H, self.Dh, self.backend = D, H, D // H, backend
        f = {"device": device, "dtype": dtype}
        self.in_proj = nn.Linear(D, 3 * D, bias=bias, **f)
        self.out_proj = nn.Linear(D, D, bias=bias, **f)
        nn.init.xavier_uniform_(self.in_proj.weight)
        if bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)

    def split_heads(self, x):
        """(B, T, D) -> (B, H, T, Dh)."""
        B, T, _ = x.shape
        return x.view(B, T, self.H, self.Dh).transpose(1, 2)

    def forward(self, x, mask=None, causal=False, rotary=None, cache=None):
        check_tensor("x", x, (None, None, self.D), "(B, T, D)")
        B, T, _ = x.shape
        q, k, v = (self.split_heads(t) for t in self.in_proj(x).chunk(3, dim=-1))
        start = 0 if cache is None else cache.length
        if rotary is not None:
            if rotary.Dh != self.Dh:
                raise ValueError(f"rotary: built for Dh={rotary.Dh}, but the heads have "
                                 f"Dh = D / H = {self.Dh}")
            positions = torch.arange(start, start + T, device=x.device)
            q, k = rotary.rotate(q, positions), rotary.rotate(k, positions)
        if cache is not None:
            k, v = cache.append(k, v)                                   # (B, H, start + T, Dh)
        if causal and start > 0:
            if mask is not None:
                raise ValueError("mask and causal=True were both given; fold the causal pattern "
                                 "into your mask")
            causal = False  # the queries sit at start .. start+T-1: bottom-right alignment
            if T > 1:
                rows = torch.arange(start, start + T, device=x.device)[:, None]
                mask = torch.arange(start + T, device=x.device)[None, :] <= rows
        y = scaled_dot_product_attention(q, k, v, mask=mask, causal=causal, backend=self.backend)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, self.D))

    def extra_repr(self):
        return f"D={self.D}, H={self.H}, Dh={self.Dh}, backend={self.backend!r}"


class TransformerBlock(nn.Module):
    """Attention then a feed-forward network (D -> F -> D, GELU), each wrapped in a residual
    connection and a LayerNorm.

    norm="pre" (GPT-2's): x + Attn(LN(x)), then x + FF(LN(x)); the residual stream is never
    normalised, which keeps gradients well scaled in deep stacks (Xiong et al. 2020).
    norm="post" (the original Transformer's): LN(x + Attn(x)), then LN(x + FF(x)).
    forward(x (B, T, D), mask, causal, rotary, cache) -> (B, T, D) (see MultiHeadAttention).
    """

    def __init__(self, D, H, d_ff=None, norm="pre", dropout=0.0, bias=True, backend="auto",
                 device=None, dtype=None):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        d_ff = 4 * D if d_ff is None else d_ff
        _positive_int("d_ff", d_ff)
        f = {"device": device, "dtype": dtype}
        self.norm, self.d_ff = norm, d_ff
        self.attn = MultiHeadAttention(D, H, bias=bias, backend=backend, **f)
        self.ln1, self.ln2 = nn.LayerNorm(D, **f), nn.LayerNorm(D, **f)
        self.ff = nn.Sequential(nn.Linear(D, d_ff, bias=bias, **f), nn.GELU(),
                                nn.Linear(d_ff, D, bias=bias, **f))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None, causal=False, rotary=None, cache=None):
        kw = {"mask": mask, "causal": causal, "rotary": rotary, "cache": cache}
        if self.norm == "pre":
            x = x + self.drop(self.attn(self.ln1(x), **kw))
            return x + self.drop(self.ff(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x, **kw)))
        return self.ln2(x + self.drop(self.ff(x)))


# --------------------------------------------------------------------- the language model


class TransformerState(NamedTuple):
    """What ``TransformerLM.step`` carries: per layer the K and V cache buffers, each
    (B, H, max_len, Dh) with the first ``position`` positions filled, and ``position``, the
    number of tokens read so far (the next token's position). Every tensor has the batch in
    dim 0, so ``seqlib.decode``'s default reorder (index_select dim 0) reorders it for beam search.
    """
    k: tuple
    v: tuple
    position: int


class TransformerLM(nn.Module):
    """Decoder-only Transformer language model: embedding (+ positions) -> L blocks -> read-out.

    positions: "rotary" (q and k rotated in every layer), "sinusoidal" (a fixed table added to
    the embeddings), "learned" (a learned table added), or "none" (the causal mask alone tells
    positions apart, weakly). norm="pre" adds a final LayerNorm before the read-out.

    Faces (ids are time first, (T, B), like seqlib.lm.CharLM, so ``seqlib.lm.train_char_lm`` and
    ``seqlib.lm.bits_per_char`` take it unchanged):
    * forward(x (T, B), state=None) -> (logits (T, B, V), None). Causal. The state is ignored and
      None is returned: each window is read from scratch, with no memory of the previous window
      (an RNN carries its state across windows; this model sees at most max_len tokens).
    * step(state, tokens (B,)) -> (log_probs (B, V), new_state): the decoder protocol of
      ``seqlib.decode`` (greedy_decode, beam_search work on it with their default reorder); state
      None starts from ``init_state(B)``. step writes into the cache buffers in place: step from a
      given state once (beam search's reorder copies the buffers, so it is safe).
    * generate(prompt (T0, B), n, use_cache=True) -> (n, B) greedy continuation.
    """

    cell = "transformer"

    def __init__(self, V, D=64, H=4, L=2, max_len=256, d_ff=None, positions="rotary", norm="pre",
                 dropout=0.0, backend="auto", device=None, dtype=None):
        super().__init__()
        for name, val in (("V", V), ("D", D), ("H", H), ("L", L), ("max_len", max_len)):
            _positive_int(name, val)
        if positions not in POSITIONS:
            raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if D % H:
            raise ValueError(f"D must be divisible by H (each head gets Dh = D / H), got D={D}, H={H}")
        f = {"device": device, "dtype": dtype}
        self.V, self.D, self.H, self.L, self.max_len = V, D, H, L, max_len
        self.positions, self.norm = positions, norm
        self.embed = nn.Embedding(V, D, **f)
        self.rotary = RotaryEmbedding(D // H) if positions == "rotary" else None
        self.learned = LearnedPositions(max_len, D, **f) if positions == "learned" else None
        if positions == "sinusoidal":
            self.register_buffer("sinusoid", sinusoidal_positions(max_len, D, **f), persistent=False)
        else:
            self.sinusoid = None
        self.blocks = nn.ModuleList(TransformerBlock(D, H, d_ff, norm, dropout, backend=backend, **f)
                                    for _ in range(L))
        self.ln_f = nn.LayerNorm(D, **f) if norm == "pre" else nn.Identity()
        self.head = nn.Linear(D, V, **f)

    def extra_repr(self):
        return (f"V={self.V}, D={self.D}, H={self.H}, L={self.L}, max_len={self.max_len}, "
                f"positions={self.positions!r}, norm={self.norm!r}")

    # ------------------------------------------------------------------ shared by both faces
    def features(self, ids, start=0, caches=None):
        """ids (B, T) at positions start .. start+T-1 -> (B, T, D), causal; caches: one KVCache
        per layer (appended to) or None."""
        T = ids.shape[1]
        h = self.embed(ids)
        pos = torch.arange(start, start + T, device=ids.device)
        if self.learned is not None:
            h = h + self.learned(pos)
        elif self.sinusoid is not None:
            h = h + self.sinusoid[pos]
        for layer, block in enumerate(self.blocks):
            h = block(h, causal=True, rotary=self.rotary,
                      cache=None if caches is None else caches[layer])
        return self.ln_f(h)

    def _check_ids(self, name, ids, shape, letters):
        check_tensor(name, ids, shape, letters)
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
            raise TypeError(f"{name}: expected integer token ids, got {ids.dtype}")

    # ------------------------------------------------------------------ the parallel face
    def forward(self, x, state=None):
        """x (T, B) ids -> (logits (T, B, V), None); state is ignored (see the class docstring)."""
        self._check_ids("x", x, (None, None), "(T, B)")
        if x.shape[0] > self.max_len:
            raise ValueError(f"x: length T={x.shape[0]} exceeds the model's max_len={self.max_len} "
                             "(use shorter windows)")
        return self.head(self.features(x.t())).transpose(0, 1), None

    # ------------------------------------------------------------------ the recurrent face
    def init_state(self, B, max_len=None, device=None):
        """An empty TransformerState for B streams, with room for max_len (default the model's)
        positions; max_len may not exceed the model's."""
        max_len = self.max_len if max_len is None else max_len
        _positive_int("max_len", max_len)
        if max_len > self.max_len:
            raise ValueError(f"max_len={max_len} exceeds the model's max_len={self.max_len}")
        p = self.head.weight
        shape = (B, self.H, max_len, self.D // self.H)
        zeros = [torch.zeros(shape, device=device or p.device, dtype=p.dtype)
                 for _ in range(2 * self.L)]
        return TransformerState(tuple(zeros[:self.L]), tuple(zeros[self.L:]), 0)

    def _caches(self, state):
        return [KVCache.from_buffers(k, v, state.position) for k, v in zip(state.k, state.v)]

    def step(self, state, tokens):
        """state (TransformerState or None), tokens (B,) -> (log_probs (B, V), new_state)."""
        self._check_ids("tokens", tokens, (None,), "(B,)")
        B = tokens.shape[0]
        if state is None:
            state = self.init_state(B, device=tokens.device)
        if state.k[0].shape[0] != B:
            raise ValueError(f"tokens: batch B={B} does not match the state's B={state.k[0].shape[0]}")
        cache_len = state.k[0].shape[2]
        if state.position >= cache_len:
            raise ValueError(f"KV cache full: {state.position} positions read and the state holds "
                             f"max_len={cache_len}; start from init_state(B, max_len=...) with "
                             f"room for more (at most the model's max_len={self.max_len})")
        h = self.features(tokens[:, None], state.position, self._caches(state))   # (B, 1, D)
        log_probs = torch.log_softmax(self.head(h[:, 0]), dim=-1)
        return log_probs, TransformerState(state.k, state.v, state.position + 1)

    @torch.no_grad()
    def generate(self, prompt, n, use_cache=True):
        """Greedy continuation: prompt (T0, B) ids -> the n next tokens (n, B).

        use_cache=True reads the prompt once (in parallel, filling the KV caches) and then feeds
        one token per step; use_cache=False recomputes the whole prefix for every new token
        (T0 + i positions at step i). Both give the same tokens; T0 + n - 1 <= max_len.
        """
        self._check_ids("prompt", prompt, (None, None), "(T0, B)")
        _positive_int("n", n)
        T0, B = prompt.shape
        if T0 < 1 or T0 + n - 1 > self.max_len:
            raise ValueError(f"prompt: T0={T0} prompt tokens and n={n} new ones need T0 + n - 1 = "
                             f"{T0 + n - 1} positions, the model's max_len={self.max_len}")
        was_training = self.training
        self.eval()
        out = []
        if use_cache:
            state = self.init_state(B, max_len=T0 + n - 1, device=prompt.device)
            h = self.features(prompt.t(), 0, self._caches(state))               # prefill
            state = TransformerState(state.k, state.v, T0)
            token = self.head(h[:, -1]).argmax(-1)
            out.append(token)
            for _ in range(n - 1):
                log_probs, state = self.step(state, token)
                token = log_probs.argmax(-1)
                out.append(token)
        else:
            seq = prompt
            for _ in range(n):
                logits, _ = self(seq)
                token = logits[-1].argmax(-1)
                out.append(token)
                seq = torch.cat([seq, token[None]], dim=0)
        self.train(was_training)
        return torch.stack(out)
