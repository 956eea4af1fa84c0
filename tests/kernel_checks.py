"""What every kernel test uses: NaN-padded inputs and outputs, and error measures.

Triton's interpreter returns whatever memory holds for an unmasked out-of-bounds load, and a
kernel that forgets to write an element leaves it as it was. So inputs sit in buffers with NaN
after them (reading past the end makes NaN) and outputs start as NaN (an unwritten element stays
NaN), with a check that the NaN tail after each output is untouched.
"""
import torch

NAN = float("nan")
PAD = 64  # NaN elements placed after every input and output buffer


def rel_rms(out, ref):
    """Relative RMS error ||out - ref|| / ||ref||, for real or complex tensors."""
    return ((out - ref).abs().pow(2).mean().sqrt() / ref.abs().pow(2).mean().sqrt().clamp_min(1e-30)).item()


def assert_close(out, ref, name, rtol=1e-5):
    """No NaN (nothing unwritten or read out of bounds), relative RMS below rtol, and allclose."""
    ref = ref.to(out.dtype)
    assert not torch.isnan(out).any(), f"{name}: NaN, so the kernel left an element unwritten or read out of bounds"
    err = rel_rms(out, ref)
    assert err < rtol, f"{name}: relative RMS error {err:.2e} >= {rtol:.0e}"
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


def nan_of(dtype):
    return complex(NAN, NAN) if dtype.is_complex else NAN


def in_nan_buffer(t):
    """A contiguous copy of t with NaN after it in memory: reading past its end gives NaN."""
    buf = torch.full((t.numel() + PAD,), nan_of(t.dtype), dtype=t.dtype)
    buf[: t.numel()] = t.reshape(-1)
    return buf[: t.numel()].view(t.shape)


def nan_outs(*shapes, dtype=torch.float32):
    """NaN-filled outputs, and a check that nothing was written into the NaN tail after each."""
    bufs = [torch.full((torch.Size(s).numel() + PAD,), nan_of(dtype), dtype=dtype) for s in shapes]
    outs = tuple(b[: torch.Size(s).numel()].view(s) for b, s in zip(bufs, shapes))

    def tails_untouched():
        return all(b[torch.Size(s).numel():].isnan().all() for b, s in zip(bufs, shapes))
    return outs, tails_untouched
