"""seqlib.data.digits: scikit-learn's digits as sequences, shapes, split, determinism, errors."""
import pytest
import torch

from seqlib.data.digits import MODES, NUM_CLASSES, digit_sequences


@pytest.mark.parametrize("mode", list(MODES))
def test_shapes_and_range(mode):
    T, D = MODES[mode]
    data = digit_sequences(mode)
    assert data.x_train.shape == (T, len(data.y_train), D) and data.x_test.shape == (T, len(data.y_test), D)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.long
    assert len(data.y_train) + len(data.y_test) == 1797
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) == 1.0
    assert data.seq_len == T and data.input_size == D and str(T) in data.describe()


def test_rows_and_pixels_are_the_same_images_in_raster_order():
    rows, pixels = digit_sequences("rows"), digit_sequences("pixels")
    assert torch.equal(rows.y_train, pixels.y_train)
    # image b: row r, column c is pixel 8 r + c
    assert torch.equal(rows.x_train.permute(1, 0, 2).reshape(-1, 64), pixels.x_train[..., 0].T)


def test_split_is_fixed_stratified_and_disjoint():
    a, b = digit_sequences("rows"), digit_sequences("rows")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    other = digit_sequences("rows", seed=1)
    assert not torch.equal(a.y_test, other.y_test)
    counts = torch.bincount(a.y_test, minlength=NUM_CLASSES)
    assert counts.min() >= 40 and counts.max() <= 50  # about 45 per class in 450 test images
    train = {tuple(v.tolist()) for v in a.x_train.permute(1, 0, 2).reshape(-1, 64)}
    test = [tuple(v.tolist()) for v in a.x_test.permute(1, 0, 2).reshape(-1, 64)]
    assert sum(t in train for t in test) < 5  # a handful of duplicate images exist in the data itself


def test_batch_first_and_batches():
    data = digit_sequences("pixels", batch_first=True)
    assert data.x_train.shape == (len(data.y_train), 64, 1)
    seen = 0
    for x, y in data.batches(500, generator=torch.Generator().manual_seed(0)):
        assert x.shape[0] == len(y) and x.shape[1:] == (64, 1)
        seen += len(y)
    assert seen == len(data.y_train)
    x, y = next(digit_sequences("rows").batches(32, torch.Generator().manual_seed(0)))
    assert x.shape == (8, 32, 8) and y.shape == (32,)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="mode"):
        digit_sequences("columns")
    with pytest.raises(ValueError, match="test_fraction"):
        digit_sequences("rows", test_fraction=1.5)
    with pytest.raises(ValueError, match="batch_size"):
        next(digit_sequences("rows").batches(0))
