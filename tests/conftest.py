"""Shared pytest set-up.

Triton's interpreter: the kernel tests run Triton kernels on CPU tensors, which needs
TRITON_INTERPRET=1 set before anything imports triton (triton decides, when a kernel is decorated,
whether it is compiled or interpreted). conftest.py is imported before any test module, so set it
here. The ahead-of-time compile test (tests/test_aot.py) runs its compiler in a subprocess with
the variable removed.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"
