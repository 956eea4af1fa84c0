"""Every chapter and exercise notebook runs top to bottom under nbval within its 90-second budget.

Each Jupytext source (chapters/*.md, exercises/*.md) is converted to .ipynb at test time, beside
its source as a hidden, git-ignored file (so the kernel's working directory is the notebook's own
folder, as in the book build and in JupyterLab), and run by `pytest --nbval-lax` in a fresh
process with a fresh kernel of this environment. The wall time of that process (kernel start
included) is the notebook's time. A table of notebook and seconds is printed at the end and
written to tests/artifacts/notebook_times.md.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import jupytext
import pytest

from helpers import artifacts_dir, notebook_sources

BUDGET_SECONDS = 90
TIMES: dict[str, tuple[float, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def times_table(request):
    yield
    if not TIMES:
        return
    rows = [f"| {name} | {seconds:.1f} | {status} |" for name, (seconds, status) in sorted(TIMES.items())]
    table = "\n".join(
        ["| notebook | seconds | result |", "| --- | --- | --- |", *rows,
         "", f"Budget: {BUDGET_SECONDS} s per notebook, on {os.cpu_count()} CPU cores "
             "(wall time of `pytest --nbval-lax`, kernel start included)."]
    )
    (artifacts_dir() / "notebook_times.md").write_text(table + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(table)
        return
    with capture.global_and_fixture_disabled():  # shown even though pytest captures output
        reporter.write_line("")
        for line in table.splitlines():
            reporter.write_line(line)


def to_ipynb(source, target):
    """Jupytext MyST Markdown -> .ipynb, with the python3 kernelspec nbval and otter expect."""
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.setdefault("language_info", {"name": "python"})
    jupytext.write(nb, target, fmt="ipynb")


def kernel_environment() -> dict[str, str]:
    """The environment a student's kernel would have: nothing the test suite set for itself."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTEST_CURRENT_TEST")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.parametrize(
    "source", notebook_sources(), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_notebook_runs_within_budget(source):
    name = f"{source.parent.name}/{source.name}"
    target = source.with_name(f".nbval_{source.stem}_{os.getpid()}.ipynb")
    to_ipynb(source, target)
    cmd = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
        "--nbval-cell-timeout", "300", "-p", "no:cacheprovider", "-q", "--no-header",
        "-o", "addopts=", "--rootdir", str(source.parent), str(target),
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=source.parent, env=kernel_environment(), capture_output=True, text=True,
            timeout=10 * BUDGET_SECONDS,
        )
    except subprocess.TimeoutExpired:
        TIMES[name] = (time.perf_counter() - start, "timed out")
        pytest.fail(f"{name} did not finish within {10 * BUDGET_SECONDS} s")
    finally:
        target.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    passed = proc.returncode == 0
    TIMES[name] = (seconds, "passed" if passed else "FAILED")
    output = (proc.stdout + proc.stderr)[-6000:]
    assert passed, f"{name} failed under nbval (exit {proc.returncode}):\n{output}"
    assert seconds <= BUDGET_SECONDS, f"{name} took {seconds:.1f} s; its budget is {BUDGET_SECONDS} s"
