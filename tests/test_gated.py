"""seqlib.LSTM and seqlib.GRU against torch.nn.LSTM/GRU: layout, values, gradients, variable
lengths (lengths= and PackedSequence), the step face, and bad input."""
import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlib.gated import GRU, LSTM, gru_cell, gru_recurrence, lstm_cell, lstm_recurrence

PAIRS = {"lstm": (torch.nn.LSTM, LSTM), "gru": (torch.nn.GRU, GRU)}
GRID = list(itertools.product(["lstm", "gru"], [1, 2], [True, False], [False, True], [False, True]))
D, N = 5, 7


def _pair(kind, num_layers=2, bias=True, batch_first=False, bidirectional=False, seed=0, **kw):
    torch.manual_seed(seed)
    Ref, Ours = PAIRS[kind]
    ref = Ref(D, N, num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, **kw)
    ours = Ours(D, N, num_layers=num_layers, bias=bias, batch_first=batch_first,
                bidirectional=bidirectional, backend="torch", **kw)
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    return ref, ours


def _init_state(kind, LK, B, requires_grad=True):
    h = torch.randn(LK, B, N, requires_grad=requires_grad)
    return h if kind == "gru" else (h, torch.randn(LK, B, N, requires_grad=requires_grad))


def _flat(y, state):
    return [y, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("kind,num_layers,bias,batch_first,bidirectional", GRID)
def test_parity_with_torch(kind, num_layers, bias, batch_first, bidirectional):
    ref, ours = _pair(kind, num_layers, bias, batch_first, bidirectional)
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
           [(n, p.shape) for n, p in ours.named_parameters()]
    T, B, K = 6, 3, 2 if bidirectional else 1
    x = torch.randn((B, T, D) if batch_first else (T, B, D), requires_grad=True)
    hx = _init_state(kind, num_layers * K, B)
    for h in (None, hx):
        for a, b in zip(_flat(*ours(x, h)), _flat(*ref(x, h))):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    hx_leaves = list(hx) if isinstance(hx, tuple) else [hx]
    ups = [torch.randn_like(t) for t in _flat(*ref(x, hx))]

    def grads(net):
        outs = _flat(*net(x, hx))
        loss = sum((o * u).sum() for o, u in zip(outs, ups))
        return torch.autograd.grad(loss, [x, *hx_leaves, *net.parameters()])

    for a, b in zip(grads(ours), grads(ref)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind,batch_first,bidirectional",
                         list(itertools.product(["lstm", "gru"], [False, True], [False, True])))
def test_variable_lengths_match_packed_sequences(kind, batch_first, bidirectional):
    ref, ours = _pair(kind, 2, True, batch_first, bidirectional)
    T, B = 7, 4
    x = torch.randn((B, T, D) if batch_first else (T, B, D))
    lengths = torch.tensor([7, 3, 1, 5])
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    y_ref, s_ref = ref(packed)
    y, s = ours(packed)  # PackedSequence in, PackedSequence out
    torch.testing.assert_close(y.data, y_ref.data, atol=1e-5, rtol=1e-5)
    assert torch.equal(y.batch_sizes, y_ref.batch_sizes)
    for a, b in zip(_flat(y.data, s)[1:], _flat(y_ref.data, s_ref)[1:]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # lengths= on a padded tensor: padded outputs are zeros, final states at the last real step
    y_pad, s_len = ours(x, lengths=lengths)
    y_ref_pad, _ = pad_packed_sequence(y_ref, batch_first=batch_first, total_length=T)
    torch.testing.assert_close(y_pad, y_ref_pad, atol=1e-5, rtol=1e-5)
    for a, b in zip(_flat(y_pad, s_len)[1:], _flat(y_ref_pad, s_ref)[1:]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_padding_does_not_leak_into_gradients(kind):
    _, ours = _pair(kind, 1)
    x = torch.randn(6, 2, D, requires_grad=True)
    y, _ = ours(x, lengths=torch.tensor([6, 2]))
    (g,) = torch.autograd.grad(y.sum(), x)
    assert torch.all(g[2:, 1] == 0) and torch.all(g[:2, 1] != 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradcheck_float64(kind):
    torch.manual_seed(1)
    net = PAIRS[kind][1](3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    assert torch.autograd.gradcheck(lambda x: net(x, lengths=lengths)[0], (x,))
    w_hh = net.weight_hh_l0.detach().clone().requires_grad_()
    xw = torch.randn(4, 2, net.gates * 4, dtype=torch.float64, requires_grad=True)
    if kind == "lstm":
        h0 = (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64))
        assert torch.autograd.gradcheck(lambda a, w: lstm_recurrence(a, h0, w)[0], (xw, w_hh))
    else:
        h0, b = torch.randn(2, 4, dtype=torch.float64), net.bias_hh_l0.detach()
        assert torch.autograd.gradcheck(lambda a, w: gru_recurrence(a, h0, w, b)[0], (xw, w_hh))


@pytest.mark.parametrize("kind,num_layers", list(itertools.product(["lstm", "gru"], [1, 3])))
def test_step_face_equals_parallel_face(kind, num_layers):
    _, net = _pair(kind, num_layers, batch_first=True)
    x = torch.randn(3, 9, D)
    y, final = net(x)
    state, ys = None, []
    for x_t in x.unbind(1):
        y_t, state = net.step(state, x_t)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-6, rtol=1e-6)
    for a, b in zip(_flat(y, state)[1:], _flat(y, final)[1:]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_cells_match_torch_cells():
    torch.manual_seed(5)
    x, h, c = torch.randn(3, D), torch.randn(3, N), torch.randn(3, N)
    lc, gc = torch.nn.LSTMCell(D, N), torch.nn.GRUCell(D, N)
    h_ref, c_ref = lc(x, (h, c))
    h_ours, c_ours = lstm_cell(x, (h, c), lc.weight_ih, lc.weight_hh, lc.bias_ih, lc.bias_hh)
    torch.testing.assert_close(h_ours, h_ref)
    torch.testing.assert_close(c_ours, c_ref)
    torch.testing.assert_close(gru_cell(x, h, gc.weight_ih, gc.weight_hh, gc.bias_ih, gc.bias_hh),
                               gc(x, h))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dropout_between_layers(kind):
    ref, ours = _pair(kind, 2, dropout=0.5)
    x = torch.randn(5, 2, D)
    ours.eval()
    assert torch.equal(ours(x)[0], ours(x)[0])
    ours.train()
    assert not torch.equal(ours(x)[0], ours(x)[0])


# ---------------------------------------------------------------- bad input: clear messages
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_bad_lengths(kind):
    _, net = _pair(kind, 1)
    x = torch.randn(5, 3, D)
    with pytest.raises(ValueError, match=r"lengths: every length must be in 1..T = 1..5, got min 1, max 6"):
        net(x, lengths=torch.tensor([6, 1, 2]))
    with pytest.raises(ValueError, match=r"lengths: every length must be in 1..T = 1..5, got min 0"):
        net(x, lengths=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"lengths: expected shape \(B,\) = \(3,\), got \(2,\)"):
        net(x, lengths=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="lengths: expected integers"):
        net(x, lengths=torch.tensor([1.0, 2.0, 3.0]))


def test_lstm_state_must_be_a_pair_of_right_shape():
    _, net = _pair("lstm", 2)
    x = torch.randn(5, 3, D)
    with pytest.raises(TypeError, match=r"hx: expected a pair \(h0, c0\)"):
        net(x, torch.zeros(2, 3, N))
    with pytest.raises(ValueError, match=r"hx\[1\]: expected shape \(L\*K, B, N\) = \(2, 3, 7\), got \(2, 3, 6\)"):
        net(x, (torch.zeros(2, 3, N), torch.zeros(2, 3, 6)))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_wrong_rank_and_width(kind):
    _, net = _pair(kind, 1)
    with pytest.raises(ValueError, match=r"input: expected a 3-D tensor"):
        net(torch.randn(2, 3, 4, D))
    with pytest.raises(ValueError, match=r"input_size = 5, got shape \(4, 2, 3\)"):
        net(torch.randn(4, 2, 3))
