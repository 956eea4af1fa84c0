"""seqlib.gated_variants: LSTM variants with one part switched off, the register task, forget bias."""
import pytest
import torch
from torch import nn

import seqlib
from seqlib.gated_variants import (VARIANTS, LSTMVariant, last_written_value, lstm_variant_update,
                                   set_forget_bias)


def test_vanilla_variant_is_seqlib_lstm_and_torch_lstm():
    torch.manual_seed(0)
    ref = nn.LSTM(3, 8, num_layers=2)
    variant = LSTMVariant(3, 8, "vanilla", num_layers=2)
    variant.load_state_dict(ref.state_dict())
    x = torch.randn(7, 4, 3)
    (out, (h, c)), (out_ref, (h_ref, c_ref)) = variant(x), ref(x)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(c, c_ref, atol=1e-6)
    lengths = torch.tensor([7, 2, 5, 1])
    lstm = seqlib.LSTM(3, 8, num_layers=2)
    lstm.load_state_dict(ref.state_dict())
    assert torch.allclose(variant(x, lengths=lengths)[0], lstm(x, lengths=lengths)[0], atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_step_face_equals_parallel_face(variant):
    torch.manual_seed(1)
    m = LSTMVariant(2, 5, variant)
    x = torch.randn(6, 3, 2)
    out, (h, c) = m(x)
    state, ys = None, []
    for x_t in x.unbind(0):
        y, state = m.step(state, x_t)
        ys.append(y)
    assert torch.allclose(torch.stack(ys), out, atol=1e-6) and torch.allclose(state[1], c, atol=1e-6)


def test_each_variant_switches_off_its_part():
    torch.manual_seed(2)
    B, N = 3, 4
    pre, c = torch.randn(B, 4 * N), torch.randn(B, N)
    i, f, g, o = pre.chunk(4, -1)
    si, sf, so, tg = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    expect = {
        "vanilla": (sf * c + si * tg, None),
        "no_input_gate": (sf * c + tg, None),
        "no_forget_gate": (c + si * tg, None),
        "no_output_gate": (sf * c + si * tg, "o=1"),
        "no_input_act": (sf * c + si * g, None),
        "no_output_act": (sf * c + si * tg, "linear"),
        "coupled_gates": ((1 - si) * c + si * tg, None),
    }
    for variant, (c_new, out_kind) in expect.items():
        h, c_got = lstm_variant_update(pre, c, variant)
        assert torch.allclose(c_got, c_new), variant
        h_want = {None: so * torch.tanh(c_new), "o=1": torch.tanh(c_new), "linear": so * c_new}[out_kind]
        assert torch.allclose(h, h_want), variant


def test_switched_off_gate_gets_no_gradient():
    torch.manual_seed(3)
    m = LSTMVariant(2, 4, "no_forget_gate")
    m(torch.randn(5, 2, 2))[0].sum().backward()
    N = 4
    assert m.weight_hh_l0.grad[N:2 * N].abs().max() == 0 and m.weight_hh_l0.grad[:N].abs().max() > 0


def test_set_forget_bias():
    lstm = set_forget_bias(seqlib.LSTM(3, 6, num_layers=2), 1.0)
    for layer in range(2):
        b = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
        assert torch.allclose(b[6:12], torch.ones(6))


def test_last_written_value():
    x, y = last_written_value(50, 30, 0.2, torch.Generator().manual_seed(0))
    assert x.shape == (30, 50, 2) and y.shape == (30, 50)
    writes = x[..., 1] == 1
    assert torch.equal(x[..., 0][~writes], torch.zeros_like(x[..., 0][~writes]))
    for b in range(50):  # the target is the last value written at or before t, else 0
        last = 0.0
        for t in range(30):
            if writes[t, b]:
                last = x[t, b, 0].item()
            assert y[t, b].item() == pytest.approx(last)
    again = last_written_value(50, 30, 0.2, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], x) and 0.1 < writes.float().mean() < 0.3


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="variant"):
        LSTMVariant(2, 4, "no_gates")
    with pytest.raises(ValueError, match="backend"):
        LSTMVariant(2, 4, "vanilla", backend="triton")
    with pytest.raises(ValueError, match="p_write"):
        last_written_value(2, 5, 0.0)
