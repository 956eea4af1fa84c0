"""Triton kernels of the book, importable as ``seqlib.kernels``; each one has a reference in seqlib.

    seqlib.kernels.rnn   fused Elman RNN recurrence (reference: ``seqlib.rnn.rnn_recurrence``)
    seqlib.kernels.lstm  fused LSTM recurrence (reference: ``seqlib.gated.lstm_recurrence``)
    seqlib.kernels.gru   fused GRU recurrence (reference: ``seqlib.gated.gru_recurrence``)
    seqlib.kernels.scan  chunked linear scan, real and complex (reference: ``seqlib.scan.linear_scan``)
    seqlib.kernels.attention_step  fused attention step, one query over variable-length keys
                         (reference: ``seqlib.attention`` "dot" score with ``masked_softmax``)
    seqlib.kernels.flash_attention  flash attention, forward and backward, causal or not
                         (reference: ``torch.nn.functional.scaled_dot_product_attention``)

``_common`` holds what they share (tiles, tanh, input checks, the interpreter guard).

Each kernel module also lists ``AOT_CONFIGS`` (and, where needed, ``SPILL_OK``) for the
ahead-of-time compile check, ``python -m seqlib.aot``.

On a machine without CUDA the kernels run in Triton's interpreter, which must be switched on
before triton is first imported. Importing this package does that when it still can: if CUDA is
unavailable and triton is not yet imported, it sets ``TRITON_INTERPRET=1`` (unless the variable
is already set). Submodules are imported lazily, so ``import seqlib`` never pulls in triton.
"""
import importlib
import os
import sys

# Every kernel module; seqlib.aot compiles each one's AOT_CONFIGS.
KERNEL_MODULES = ("rnn", "lstm", "gru", "scan", "attention_step", "flash_attention")


def _enable_interpreter_without_cuda():
    if "triton" in sys.modules:  # too late to change: triton decides when a kernel is decorated
        return
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


_enable_interpreter_without_cuda()


def __getattr__(name):
    if name in KERNEL_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(KERNEL_MODULES)
