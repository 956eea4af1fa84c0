"""Every Triton kernel compiled ahead of time for sm_80 (A100) and sm_90 (H100), with no GPU.

Compiles each ``AOT_CONFIGS`` entry of every module in ``seqlib.kernels`` (see ``seqlib/aot.py``),
prints the resource table (``pytest -s`` shows it) and writes it to
``tests/artifacts/aot_resources.md``. A config that spills fails unless ``SPILL_OK`` says why.
"""
import importlib
from pathlib import Path

import pytest

from seqlib import aot

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def rows():
    # A fresh compile of every module, which also refreshes the caches under _build/aot that the
    # chapters' resource tables read (so the notebooks that run after this test compile nothing).
    rows = aot.resource_table(aot.ARCHS, refresh=True)
    table = aot.format_table(rows, "markdown")
    print("\n\nAhead-of-time resource usage (per program; registers per thread)\n\n" + table)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "aot_resources.md").write_text(
        "# Ahead-of-time compile: registers, shared memory, spills\n\n" + table + "\n")
    return rows


def _configs():
    out = []
    for name in aot._kernel_modules():
        mod = importlib.import_module(f"seqlib.kernels.{name}")
        out += [(name, cfg["id"]) for cfg in mod.AOT_CONFIGS]
    return out


def test_every_config_compiled_for_every_arch(rows):
    got = {(r["module"], r["id"], r["cc"]) for r in rows}
    want = {(m, i, cc) for m, i in _configs() for cc in aot.ARCHS}
    assert got == want
    assert {r["arch"] for r in rows} == {"sm_80", "sm_90a"}
    for r in rows:
        cubin = Path(r["cubin"])
        assert cubin.exists() and cubin.stat().st_size > 0, f"no cubin for {r['id']} {r['arch']}"


def test_registers_and_shared_memory_fit(rows):
    for r in rows:
        assert 0 < r["registers"] <= 255, f"{r['id']} {r['arch']}: {r['registers']} registers"
        limit = aot.SHARED_LIMIT[r["cc"]]
        assert r["shared"] <= limit, f"{r['id']} {r['arch']}: {r['shared']} B shared > {limit} B"


def test_no_spills_unless_allowed_with_a_reason(rows):
    bad = [f"{r['id']} {r['arch']}: stack {r['stack']} B, spill stores {r['spill_stores']} B"
           for r in rows if (r["spill_stores"] or r["spill_loads"] or r["stack"] or r["local"])
           and not r["spill_ok"].strip()]
    assert not bad, "kernels spill without a SPILL_OK reason:\n" + "\n".join(bad)


def test_spill_ok_names_real_configs_that_spill(rows):
    for name in aot._kernel_modules():
        mod = importlib.import_module(f"seqlib.kernels.{name}")
        for key in getattr(mod, "SPILL_OK", {}):
            mine = [r for r in rows if r["module"] == name and key in (r["id"], r["kernel"])]
            assert mine, f"SPILL_OK entry {key!r} in {name} names no config"
            assert any(r["spill_stores"] or r["stack"] for r in mine), (
                f"SPILL_OK entry {key!r} in {name} no longer spills: remove it")


def test_tensor_cores_where_expected(rows):
    for r in rows:
        if r["expect_tensor_cores"] is not None:
            uses = r["tensor_cores"] != "no"
            assert uses == r["expect_tensor_cores"], f"{r['id']} {r['arch']}: tensor cores {r['tensor_cores']}"
