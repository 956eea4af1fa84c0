"""The Triton linear scan (kernels/scan.py) against the sequential loop, in Triton's interpreter.

TRITON_INTERPRET=1 is set by tests/conftest.py before triton is imported. Inputs live inside
NaN-filled buffers and outputs are pre-filled with NaN, so an unmasked out-of-bounds load, an
element the kernel never writes, or a store past the end all show up as NaN. The reference is
``seqlib.scan.linear_scan_sequential`` in float64 / complex128, gradients by autograd through it.
Most cases use small tiles (BLOCK_T = 16, BLOCK_D = 8) so that short sequences cross several
chunk boundaries (the carry) and the interpreter, which runs a scan element by element, stays fast.
"""
import pytest
import torch

from seqlib.kernels import scan as K
from seqlib.perf import GPUS
from seqlib.scan import combine, linear_scan, linear_scan_sequential
from kernel_checks import assert_close, in_nan_buffer, nan_outs

WIDE = {torch.float32: torch.float64, torch.complex64: torch.complex128}


def make_inputs(B, T, D, dtype, seed):
    """|a| in [0.5, 1] (complex: any phase), so states stay of order 1 over any length."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(B, T, D, generator=g) * 0.5 + 0.5
    if dtype.is_complex:
        a = a * torch.exp(2j * torch.pi * torch.rand(B, T, D, generator=g))
    b = torch.randn(B, T, D, generator=g, dtype=dtype)
    h0 = torch.randn(B, D, generator=g, dtype=dtype)
    dh = torch.randn(B, T, D, generator=g, dtype=dtype)
    return [in_nan_buffer(t.to(dtype)) for t in (a, b, h0, dh)]


def reference(a, b, h0, dh, reverse):
    """h and (da, db, dh0) of the sequential loop in double precision, by autograd."""
    leaves = [None if t is None else t.to(WIDE[a.dtype]).requires_grad_() for t in (a, b, h0)]
    h = linear_scan_sequential(*leaves, reverse=reverse)
    grads = torch.autograd.grad(h, [t for t in leaves if t is not None], dh.to(h.dtype))
    return h.detach(), grads


# (B, T, D, dtype, h0 given, reverse, (block_t, block_d)). T = 1, 17, 63, 130 and D = 5, 20 are
# not multiples of the tiles; None tiles are the defaults (128 x 32 real, 64 x 32 complex).
F32, C64 = torch.float32, torch.complex64
SMALL = (16, 8)
GRID = [(2, 1, 5, F32, True, False, SMALL), (3, 17, 20, F32, False, False, SMALL),
        (2, 63, 5, F32, True, True, SMALL), (1, 130, 5, F32, True, False, SMALL),
        (2, 17, 20, F32, True, True, SMALL), (1, 130, 5, F32, False, True, (None, None)),
        (2, 1, 5, C64, False, True, SMALL), (2, 17, 20, C64, True, False, SMALL),
        (1, 63, 5, C64, False, False, SMALL), (1, 130, 5, C64, True, True, SMALL),
        (2, 17, 12, C64, True, True, SMALL), (1, 70, 5, C64, True, False, (None, None))]
IDS = [f"B{b}-T{t}-D{d}-{'c64' if dt.is_complex else 'f32'}-{'h0' if h else 'zero'}-"
       f"{'rev' if r else 'fwd'}-{'default' if tl[0] is None else 'small'}"
       for b, t, d, dt, h, r, tl in GRID]


@pytest.mark.parametrize("B,T,D,dtype,with_h0,reverse,tiles", GRID, ids=IDS)
def test_forward_and_backward_match_the_loop(B, T, D, dtype, with_h0, reverse, tiles):
    a, b, h0, dh = make_inputs(B, T, D, dtype, seed=T * 100 + D)
    h0 = h0 if with_h0 else None
    ref_h, ref_grads = reference(a, b, h0, dh, reverse)
    bt, bd = tiles

    # The kernels alone, into NaN-filled outputs.
    (h,), untouched = nan_outs((B, T, D), dtype=dtype)
    K.scan_forward(a, b, h0, reverse, out=h, block_t=bt, block_d=bd)
    assert untouched(), "the forward kernel wrote past the end of h"
    assert_close(h, ref_h, "h")
    (da, db), untouched = nan_outs((B, T, D), (B, T, D), dtype=dtype)
    _, _, dh0 = K.scan_backward(dh, a, h, h0, reverse, out=(da, db), block_t=bt, block_d=bd)
    assert untouched(), "the backward kernel wrote past the end of da or db"
    assert_close(da, ref_grads[0], "da (backward kernel)")
    assert_close(db, ref_grads[1], "db (backward kernel)")
    if with_h0:
        assert_close(dh0, ref_grads[2], "dh0")
    else:
        assert dh0 is None

    # The public, differentiable function.
    leaves = [None if t is None else t.clone().requires_grad_() for t in (a, b, h0)]
    out = K.linear_scan_triton(*leaves, reverse=reverse, block_t=bt, block_d=bd)
    assert out.dtype == dtype and out.shape == (B, T, D)
    assert_close(out.detach(), ref_h, "linear_scan_triton")
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], dh)
    for name, g, r in zip(("d a", "d b", "d h0"), grads, ref_grads):
        assert_close(g, r, name)


# --------------------------------------------------------------------------- the combine


def _triples(dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(64, generator=g, dtype=dtype), torch.randn(64, generator=g, dtype=dtype))
            for _ in range(3)]


def _kernel_combine(p, q):
    """The kernel's combine (its ``.fn``: the very function ``tl.associative_scan`` is given), on
    torch tensors; complex pairs go in as real and imaginary planes, as the kernel holds them."""
    if not p[0].is_complex():
        return K.combine_real.fn(*p, *q)
    planes = [x for z in (*p, *q) for x in (z.real, z.imag)]
    ar, ai, br, bi = K.combine_complex.fn(*planes)
    return torch.complex(ar, ai), torch.complex(br, bi)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_kernels_combine_is_associative(dtype, seed):
    # The interpreter folds a custom-combine tl.associative_scan left to right, so it would pass
    # a combine that is not associative; a GPU combines in a tree. Check associativity here.
    p, q, r = _triples(dtype, seed)
    left = _kernel_combine(_kernel_combine(p, q), r)
    right = _kernel_combine(p, _kernel_combine(q, r))
    for x, y in zip(left, right):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_the_kernels_combine_is_the_references(dtype):
    p, q, _ = _triples(dtype, 4)
    for x, y in zip(_kernel_combine(p, q), combine(p, q)):
        torch.testing.assert_close(x, y)


# --------------------------------------------------------------------------- the public face


@pytest.mark.parametrize("dtype", [F32, C64])
@pytest.mark.parametrize("reverse,with_h0", [(False, True), (True, False)])
def test_linear_scan_triton_backend_equals_torch_backend(dtype, reverse, with_h0):
    a, b, h0, dh = make_inputs(2, 40, 6, dtype, seed=7)
    results = []
    for backend in ("torch", "triton"):
        leaves = [t.clone().requires_grad_() for t in ((a, b, h0) if with_h0 else (a, b))]
        out = linear_scan(*leaves, reverse=reverse, backend=backend)
        results.append((out.detach(), *torch.autograd.grad(out, leaves, dh)))
    for name, mine, ref in zip(("h", "d a", "d b", "d h0"), results[1], results[0]):
        assert_close(mine, ref, f"backend='triton' {name}")


def test_empty_non_contiguous_and_conjugated_inputs():
    a, b, h0, _ = make_inputs(2, 9, 6, C64, seed=8)
    a_nc = a.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B, D, T) memory order
    out = K.linear_scan_triton(a_nc.conj(), b, h0.conj(), block_t=4, block_d=4)  # lazy conj bits
    assert_close(out, linear_scan_sequential(a.conj(), b, h0.conj()), "non-contiguous, conj")
    empty = K.linear_scan_triton(a[:, :0], b[:, :0], h0)
    assert empty.shape == (2, 0, 6) and empty.dtype == C64


# --------------------------------------------------------------------------- errors

R = torch.zeros(2, 3, 4)


@pytest.mark.parametrize("args,match", [
    ((R.double(), R.double()), r"a must have dtype torch.float32 or torch.complex64, got torch.float64"),
    ((R.long(), R.long()), r"a must have dtype .* got torch.int64"),
    ((R, R.double()), r"b must have dtype torch.float32, got torch.float64"),
    ((R.cfloat(), R), r"b must have dtype torch.complex64, got torch.float32"),
    ((R, R, torch.zeros(2, 4, dtype=torch.complex64)), r"h0 must have dtype torch.float32, got torch.complex64"),
    ((R, [[0.0]]), r"b must be a torch.Tensor, got list"),
])
def test_wrong_dtype_is_a_type_error_naming_the_argument(args, match):
    with pytest.raises(TypeError, match=match):
        K.linear_scan_triton(*args)


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.zeros(3, 4), torch.zeros(3, 4)), {}, r"a must have shape \(B, T, D\), got \(3, 4\)"),
    ((R, torch.zeros(2, 3, 5)), {}, r"b must have shape \(B, T, D\) = \(2, 3, 4\) to match a \(2, 3, 4\), got \(2, 3, 5\)"),
    ((R, R, torch.zeros(3, 4)), {}, r"h0 must have shape \(B, D\) = \(2, 4\) to match a \(2, 3, 4\), got \(3, 4\)"),
    ((R, R, torch.zeros(2, 4, device="meta")), {}, r"h0 is on meta but a is on cpu"),
    ((R.to("meta"), R.to("meta")), {}, r"a must be on a cpu or cuda device, got meta"),
    ((R, R), {"block_t": 24}, r"block_t must be a power of two"),
])
def test_wrong_shape_device_or_tile_is_a_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        K.linear_scan_triton(*args, **kwargs)


def test_linear_scan_triton_backend_reports_kernel_errors():
    with pytest.raises(TypeError, match="a must have dtype torch.float32 or torch.complex64"):
        linear_scan(R.double(), R.double(), backend="triton")


# --------------------------------------------------------------------------- the cost model


def test_traffic_model_numbers_in_the_docstring():
    B, T, D = 4, 4096, 256
    assert K.hbm_bytes(B, T, D) == 12 * B * T * D
    assert K.hbm_bytes(B, T, D, is_complex=True, backward=True) == 40 * B * T * D
    assert K.hbm_bytes(B, T, D, passes=2) == 20 * B * T * D
    assert K.bandwidth_fraction(B, D, "A100") == 1.0
    assert 0.62 < K.bandwidth_fraction(B, D, "H100 SXM") < 0.64
    assert K.bandwidth_fraction(4, 416, "H100 SXM") == 1.0  # 1664 channels: 52 programs
    assert round(K.roofline_seconds(B, T, D, "A100") * 1e6) == 25
    assert round(K.roofline_seconds(B, T, D, "H100 SXM") * 1e6) == 24
    assert round(K.hbm_bytes(B, T, D, passes=2) / GPUS["A100"]["hbm"] * 1e6) == 42
