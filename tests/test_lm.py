"""seqlib.lm: character models on RNN/LSTM/GRU, truncated-BPTT training and bits per character."""
import math

import pytest
import torch

from seqlib.lm import CharLM, bits_per_char, train_char_lm


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_char_lm_shapes_and_state_carry(cell):
    torch.manual_seed(0)
    m = CharLM(11, cell, D=4, N=6)
    x = torch.randint(0, 11, (7, 3))
    logits, state = m(x)
    assert logits.shape == (7, 3, 11)
    full, _ = m(torch.cat([x, x]))
    second, _ = m(x, state)  # carrying the state continues the sequence
    assert torch.allclose(full[7:], second, atol=1e-5)


def test_untrained_model_scores_about_log2_v_and_training_helps():
    torch.manual_seed(0)
    V = 5
    ids = torch.tensor([0, 1, 2, 3, 4] * 400)  # a text a model can learn perfectly
    m = CharLM(V, "gru", D=4, N=16)
    with torch.no_grad():
        for p in m.head.parameters():
            p.zero_()  # uniform prediction: exactly log2(V) bits
    assert bits_per_char(m, ids, streams=4, window=16) == pytest.approx(math.log2(V), abs=1e-5)
    hist = train_char_lm(m, ids, steps=60, batch_size=4, window=16, lr=3e-2, progress=False)
    assert len(hist["loss"]) == 60 and bits_per_char(m, ids, streams=4, window=16) < 0.5
    assert m.training  # bits_per_char restores the mode


def test_bad_cell():
    with pytest.raises(ValueError, match="cell"):
        CharLM(5, "transformer")
