"""seqlib.RNN against torch.nn.RNN: layout, values, gradients, the step face, and bad input."""
import itertools

import pytest
import torch

import seqlib
from seqlib.rnn import RNN, rnn_cell, rnn_layer, rnn_recurrence

GRID = list(itertools.product(
    [1, 2],            # num_layers
    ["tanh", "relu"],  # nonlinearity
    [True, False],     # bias
    [False, True],     # batch_first
    [False, True],     # bidirectional
))


def _pair(num_layers, nonlinearity, bias, batch_first, bidirectional, D=5, N=7, seed=0):
    torch.manual_seed(seed)
    ref = torch.nn.RNN(D, N, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
                       batch_first=batch_first, bidirectional=bidirectional)
    ours = RNN(D, N, num_layers=num_layers, nonlinearity=nonlinearity, bias=bias,
               batch_first=batch_first, bidirectional=bidirectional, backend="torch")
    ours.load_state_dict(ref.state_dict())  # strict: same names and shapes
    return ref, ours


def test_version():
    assert isinstance(seqlib.__version__, str) and seqlib.__version__[0].isdigit()


@pytest.mark.parametrize("num_layers,nonlinearity,bias,batch_first,bidirectional", GRID)
def test_parity_with_torch(num_layers, nonlinearity, bias, batch_first, bidirectional):
    ref, ours = _pair(num_layers, nonlinearity, bias, batch_first, bidirectional)
    assert [(n, p.shape) for n, p in ref.named_parameters()] == \
           [(n, p.shape) for n, p in ours.named_parameters()]
    T, B, K = 6, 3, 2 if bidirectional else 1
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), requires_grad=True)
    hx = torch.randn(num_layers * K, B, 7, requires_grad=True)
    for h in (None, hx):
        y_ref, hn_ref = ref(x, h)
        y, hn = ours(x, h)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hn, hn_ref, atol=1e-5, rtol=1e-5)
    # gradients of a random projection of both outputs, w.r.t. input, state and every parameter
    gy, gh = torch.randn_like(y), torch.randn_like(hn)
    def grads(net):
        y, hn = net(x, hx)
        return torch.autograd.grad((y * gy).sum() + (hn * gh).sum(), [x, hx, *net.parameters()])

    g, g_ref = grads(ours), grads(ref)
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch_first", [False, True])
def test_unbatched_input(batch_first):
    ref, ours = _pair(2, "tanh", True, batch_first, True)
    x = torch.randn(6, 5)  # (T, D) whatever batch_first says, as in torch
    hx = torch.randn(4, 7)
    for a, b in zip(ours(x, hx), ref(x, hx)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_zero_length_sequence():
    ours = RNN(3, 4)
    y, hn = ours(torch.randn(0, 2, 3))
    assert y.shape == (0, 2, 4) and torch.equal(hn, torch.zeros(1, 2, 4))


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradcheck_float64(nonlinearity):
    torch.manual_seed(1)
    net = RNN(3, 4, num_layers=2, nonlinearity=nonlinearity, bidirectional=True,
              dtype=torch.float64)
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)
    params = list(net.parameters())
    assert torch.autograd.gradcheck(lambda x, h0: net(x, h0), (x, h0))
    assert torch.autograd.gradcheck(
        lambda w, u: rnn_layer(x, h0[0], w, u, params[2], params[3], nonlinearity),
        (params[0].detach().clone().requires_grad_(), params[1].detach().clone().requires_grad_()))


@pytest.mark.parametrize("num_layers", [1, 3])
def test_step_face_equals_parallel_face(num_layers):
    torch.manual_seed(2)
    net = RNN(4, 6, num_layers=num_layers, batch_first=True)
    x = torch.randn(3, 9, 4)
    y, hn = net(x)
    state, ys = None, []
    for x_t in x.unbind(1):
        y_t, state = net.step(state, x_t)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, 1), y, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(state, hn, atol=1e-6, rtol=1e-6)


def test_cell_and_recurrence_agree():
    torch.manual_seed(3)
    T, B, D, N = 5, 2, 3, 4
    x, h0 = torch.randn(T, B, D), torch.randn(B, N)
    w_ih, w_hh, b_ih, b_hh = torch.randn(N, D), torch.randn(N, N) * 0.3, torch.randn(N), torch.randn(N)
    hs = rnn_recurrence(x @ w_ih.T + b_ih + b_hh, h0, w_hh)
    h = h0
    for t in range(T):
        h = rnn_cell(x[t], h, w_ih, w_hh, b_ih, b_hh)
        torch.testing.assert_close(hs[t], h)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(4)
    net = RNN(3, 5, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 3)
    net.eval()
    a, b = net(x)[0], net(x)[0]
    assert torch.equal(a, b)
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])


# ---------------------------------------------------------------- bad input: clear messages
@pytest.mark.parametrize("kwargs,match", [
    ({"nonlinearity": "sigmoid"}, "nonlinearity"),
    ({"backend": "cuda"}, "backend"),
    ({"num_layers": 0}, "num_layers"),
    ({"dropout": 1.5}, "dropout"),
])
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RNN(3, 4, **kwargs)


def test_wrong_input_rank():
    with pytest.raises(ValueError, match=r"input: expected a 3-D tensor .*got 4-D with shape \(2, 3, 4, 3\)"):
        RNN(3, 4)(torch.randn(2, 3, 4, 3))


def test_wrong_feature_size():
    with pytest.raises(ValueError, match=r"input_size = 3, got shape \(5, 2, 7\)"):
        RNN(3, 4)(torch.randn(5, 2, 7))


def test_mismatched_initial_state():
    with pytest.raises(ValueError, match=r"hx: expected shape \(L\*K, B, N\) = \(2, 2, 4\), got \(1, 2, 4\)"):
        RNN(3, 4, bidirectional=True)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))


def test_wrong_dtype():
    with pytest.raises(TypeError, match="dtype"):
        RNN(3, 4)(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        RNN(3, 4)(torch.ones(5, 2, 3, dtype=torch.long))


def test_step_bad_state_and_input():
    net = RNN(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"state: expected shape \(L, B, N\) = \(2, 5, 4\), got \(1, 5, 4\)"):
        net.step(torch.zeros(1, 5, 4), torch.randn(5, 3))
    with pytest.raises(ValueError, match=r"x_t: expected shape \(B, D\)"):
        net.step(None, torch.randn(5, 2))
    with pytest.raises(ValueError, match="bidirectional"):
        RNN(3, 4, bidirectional=True).step(None, torch.randn(5, 3))


@pytest.mark.parametrize("batch_first,bidirectional", [(False, False), (True, True)])
def test_variable_lengths_match_packed_sequences(batch_first, bidirectional):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    ref, ours = _pair(2, "tanh", True, batch_first, bidirectional)
    T, B = 7, 4
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5))
    lengths = torch.tensor([7, 3, 1, 5])
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    (y_ref, h_ref), (y, h) = ref(packed), ours(packed)
    torch.testing.assert_close(y.data, y_ref.data, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, h_ref, atol=1e-5, rtol=1e-5)
    y_pad, h_len = ours(x, lengths=lengths)
    y_ref_pad, _ = pad_packed_sequence(y_ref, batch_first=batch_first, total_length=T)
    torch.testing.assert_close(y_pad, y_ref_pad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h_len, h_ref, atol=1e-5, rtol=1e-5)
