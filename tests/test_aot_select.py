"""seqlib.aot.resource_table(configs=...): a chapter's few kernels, without compiling the family."""
import json

import pytest

from seqlib import aot

FWD = "flash_fwd fp16 Dh=64"


def _no_compile(*args, **kwargs):
    raise AssertionError("compile_kernels was called, but the rows should have come from a cache")


def test_selected_configs_compile_alone_and_then_come_from_their_cache(tmp_path, monkeypatch):
    cache = tmp_path / "r.json"
    rows = aot.resource_table(modules=["flash_attention"], configs=[FWD], cache=cache)
    assert sorted(r["arch"] for r in rows) == ["sm_80", "sm_90a"]
    assert {r["id"] for r in rows} == {FWD}
    for r in rows:
        assert r["tensor_cores"] != "no" and 0 < r["registers"] <= 255
    assert not (tmp_path / "r.flash_attention.json").exists()   # the full cache is not faked
    monkeypatch.setattr(aot, "compile_kernels", _no_compile)
    again = aot.resource_table(modules=["flash_attention"], configs=[FWD], cache=cache)
    assert again == rows


def test_selected_configs_are_read_from_a_current_full_cache(tmp_path, monkeypatch):
    cache = tmp_path / "r.json"
    fake = [{"id": FWD, "arch": "sm_80", "registers": 1}, {"id": "flash_fwd bf16 Dh=64", "arch": "sm_80"},
            {"id": FWD, "arch": "sm_90a", "registers": 2}]
    full = tmp_path / "r.flash_attention.json"
    full.write_text(json.dumps({"key": aot._cache_key(aot.ARCHS, "flash_attention"), "rows": fake}))
    monkeypatch.setattr(aot, "compile_kernels", _no_compile)
    rows = aot.resource_table(modules=["flash_attention"], configs=[FWD], cache=cache)
    assert rows == [fake[0], fake[2]]                    # filtered, in the cache's order
    assert aot.resource_table(modules=["flash_attention"], cache=cache) == fake


def test_unknown_config_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(aot, "compile_kernels", _no_compile)
    with pytest.raises(ValueError, match=r"configs: unknown config ids \['flash_fwd fp16 Dh=63'\]"):
        aot.resource_table(modules=["flash_attention"], configs=["flash_fwd fp16 Dh=63"],
                           cache=tmp_path / "r.json")
