"""Compile every Triton kernel ahead of time for real GPUs, on a machine with no GPU, and report
what each one costs in registers, shared memory and spills.

    python -m seqlib.aot                  # compile (or reuse the cache) and print the table
    python -m seqlib.aot --refresh        # recompile even if the cache is current
    python -m seqlib.aot --module rnn     # one kernel family only
    python -m seqlib.aot --module flash_attention --config "flash_fwd fp16 Dh=64"   # some configs
    python -m seqlib.aot --json out.json  # cache as out.<module>.json instead of _build/aot/<module>.json

Every module named in ``seqlib.kernels.KERNEL_MODULES`` lists ``AOT_CONFIGS``: one dict per
compiled variant with ``id``, ``kernel`` (the attribute name of the ``@triton.jit`` function),
``signature`` and ``constexprs`` (as ``triton.compiler.ASTSource`` takes them), ``options``
(``num_warps``...), a human-readable ``config`` and, optionally, ``tensor_cores`` (True/False:
whether ``tl.dot`` is expected to become tensor-core instructions). An optional ``SPILL_OK`` maps a config id, or
a kernel name, to the reason it may spill.

For each config and each architecture (sm_80 = A100, sm_90 = H100) this calls
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))``, which runs triton's own
passes and the ``ptxas`` bundled in the triton wheel. Then, with the wheel's tools:
``cuobjdump -res-usage`` gives registers and static shared memory of the cubin, ``ptxas -v`` on
the same PTX gives the stack frame and spill bytes, and ``cuobjdump -sass`` shows whether
``tl.dot`` became tensor-core instructions (HMMA on sm_80; HMMA or HGMMA, i.e. wgmma, on sm_90).

The compile must not run under ``TRITON_INTERPRET=1`` (kernels would be decorated as interpreted
functions), and a process that already imported triton cannot change that, so the compile runs
in a subprocess whose environment has the variable removed.

Table columns: ``registers`` per thread (the hardware limit is 255), ``shared`` bytes per program
(triton's dynamic shared memory plus any static shared memory), ``stack`` frame bytes and
``spill_stores``/``spill_loads`` bytes (register spills to local memory, i.e. to L1/HBM),
``tensor_cores`` (the tensor-core opcodes found in the SASS, or "no").
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ARCHS", "SHARED_LIMIT", "resource_table", "compile_kernels", "format_table",
           "default_cache_path", "main"]

ARCHS = (80, 90)
# Largest shared memory one program (thread block) may use, in bytes, per architecture.
SHARED_LIMIT = {80: 166912, 90: 232448}  # A100: 163 KiB; H100: 227 KiB
_TENSOR_CORE_OPS = re.compile(r"\b((?:HMMA|HGMMA|IMMA|IGMMA|QGMMA|DMMA|UTCHMMA|UTCQMMA)[A-Z0-9.]*)")


def default_cache_path() -> Path:
    """``_build/aot/resources.json`` under the project root (or the working directory); the
    per-module caches sit beside it."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").exists():  # an installed copy, not a source tree
        root = Path.cwd()
    return root / "_build" / "aot" / "resources.json"


def resource_table(archs=ARCHS, cache: str | Path | None = None, refresh: bool = False,
                   modules=None, configs=None) -> list[dict]:
    """One row per (kernel config, architecture), from the JSON cache if it is current.

    ``modules`` picks kernel modules (e.g. ``["rnn"]``; default: all of ``KERNEL_MODULES``); each
    module is cached on its own (``_build/aot/<module>.json``, or ``<cache stem>.<module>.json``),
    so a chapter that shows one family's table compiles only that family when the cache is cold.
    A module's cache is current when its source, the shared kernel files, the triton version and
    ``archs`` are the same as when it was written. A compile takes a second or two per config.

    ``configs`` picks config ids (the ``"id"`` of ``AOT_CONFIGS`` entries, e.g.
    ``"flash_fwd fp16 Dh=64"``) of the chosen modules; each id must exist. Their rows come from
    the module's full cache when it is current, else from a cache of just that selection
    (``<module>.<hash of the ids>.json``), else from compiling only those configs: a chapter
    that shows three kernels compiles three kernels on a cold machine, not the whole family.
    """
    modules = list(modules or _kernel_modules())
    wanted = _check_config_ids(modules, configs)
    rows = []
    for module in modules:
        path, key = _module_cache_path(cache, module), _cache_key(archs, module)
        if configs is None:
            rows += _cached_or_compiled(path, key, archs, module, None, refresh)
            continue
        ids = wanted[module]
        if not ids:
            continue
        full = None if refresh else _read_cache(path, key)
        if full is not None:
            rows += [r for r in full if r["id"] in ids]
            continue
        digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:12]
        rows += _cached_or_compiled(path.with_name(f"{path.stem}.{digest}.json"), key, archs,
                                    module, sorted(ids), refresh)
    return rows


def _read_cache(path: Path, key: str) -> list[dict] | None:
    """The rows of a cache file if it exists and was written under ``key``, else None."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("rows") if data.get("key") == key else None


def _cached_or_compiled(path: Path, key: str, archs, module: str, ids, refresh: bool) -> list[dict]:
    rows = None if refresh else _read_cache(path, key)
    if rows is None:
        rows = compile_kernels(archs, path.parent, modules=[module], configs=ids)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"key": key, "configs": ids, "rows": rows}, indent=1))
    return rows


def _check_config_ids(modules, configs) -> dict[str, set]:
    """{module: the requested ids it holds}; every requested id must belong to a chosen module."""
    if configs is None:
        return {}
    if isinstance(configs, str):
        configs = [configs]
    requested = set(configs)
    available = {m: [c["id"] for c in importlib.import_module(f"seqlib.kernels.{m}").AOT_CONFIGS]
                 for m in modules}
    unknown = requested - {i for ids in available.values() for i in ids}
    if unknown:
        listing = "; ".join(f"{m}: {', '.join(ids)}" for m, ids in available.items())
        raise ValueError(f"configs: unknown config ids {sorted(unknown)} for modules {modules}; "
                         f"expected ids from AOT_CONFIGS ({listing})")
    return {m: requested & set(ids) for m, ids in available.items()}


def _module_cache_path(cache, module) -> Path:
    if cache is None:
        return default_cache_path().parent / f"{module}.json"
    cache = Path(cache)
    return cache.with_name(f"{cache.stem}.{module}.json")


def compile_kernels(archs=ARCHS, out_dir: str | Path = "_build/aot", modules=None,
                    configs=None) -> list[dict]:
    """Compile every config of ``modules`` (default: all), or only the config ids in ``configs``,
    for every arch in a clean subprocess; cubins go to out_dir."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    modules = list(modules or _kernel_modules())
    rows_file = out_dir / f"rows.{'-'.join(modules)}.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, without its warning
    env["TRITON_DUMP_PTXAS_LOG"] = "1"  # ptxas -v output: stack frame and spill bytes
    cmd = [sys.executable, "-m", "seqlib.aot", "--worker", "--out", str(out_dir),
           "--arch", *map(str, archs), "--module", *modules]
    if configs is not None:
        cmd += ["--config", *configs]
    with tempfile.TemporaryDirectory() as cache:  # a cold triton cache: every kernel really compiles
        env["TRITON_CACHE_DIR"] = cache
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ahead-of-time compile failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return json.loads(rows_file.read_text())


def format_table(rows: list[dict], fmt: str = "markdown") -> str:
    """The resource table as Markdown (``fmt="markdown"``) or aligned plain text (``"text"``)."""
    head = ["kernel", "arch", "config", "registers", "shared B", "stack B", "spill B",
            "tensor cores", "compile s"]
    body = [[r["kernel"], r["arch"], r["config"], str(r["registers"]), str(r["shared"]),
             str(r["stack"]), f'{r["spill_stores"]}/{r["spill_loads"]}',
             r["tensor_cores"], f'{r["compile_seconds"]:.1f}'] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)) for row in [head, *body]]
    spills = [r for r in rows if r["spill_stores"] or r["stack"]]
    notes = sorted({f'{r["id"]}: {r["spill_ok"]}' for r in spills if r["spill_ok"]})
    if notes:
        lines += ["", "Allowed to spill:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the worker


def _kernel_modules() -> list[str]:
    # Importing seqlib.kernels may set TRITON_INTERPRET=1 (no CUDA, triton not yet imported);
    # that only matters in the worker, which imports triton first.
    import seqlib.kernels

    return list(seqlib.kernels.KERNEL_MODULES)


def _cache_key(archs, module) -> str:
    from importlib.metadata import version

    h = hashlib.sha256(f"triton {version('triton')} archs {tuple(archs)}".encode())
    kernels_dir = Path(__file__).resolve().parents[1] / "kernels"
    for name in ["__init__", module]:
        path = kernels_dir / f"{name}.py"
        h.update(path.read_bytes() if path.exists() else name.encode())
    for path in sorted(kernels_dir.glob("_[!_]*.py")):  # shared private modules (_common.py)
        h.update(path.read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def _worker(archs, out_dir: Path, modules, configs=None) -> list[dict]:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("seqlib.aot worker must run without TRITON_INTERPRET")
    import warnings

    import triton  # first, so that importing seqlib.kernels leaves TRITON_INTERPRET alone
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    from triton.compiler import ASTSource

    warnings.filterwarnings("ignore", category=UserWarning, module="triton")
    bindir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    rows = []
    for modname in modules:
        mod = importlib.import_module(f"seqlib.kernels.{modname}")
        spill_ok = getattr(mod, "SPILL_OK", {})
        for cfg in mod.AOT_CONFIGS:
            if configs is not None and cfg["id"] not in configs:
                continue
            fn = getattr(mod, cfg["kernel"])
            if type(fn).__name__ != "JITFunction":
                raise RuntimeError(f"{cfg['kernel']} is a {type(fn).__name__}, not a JITFunction")
            for cc in archs:
                arch = sm_arch_from_capability(cc)
                t0 = time.perf_counter()
                src = ASTSource(fn=fn, signature=cfg["signature"], constexprs=cfg["constexprs"])
                log = io.StringIO()
                with contextlib.redirect_stdout(log):  # triton prints the ptxas -v log here
                    compiled = triton.compile(src, target=GPUTarget("cuda", cc, 32),
                                              options=cfg.get("options", {}))
                seconds = time.perf_counter() - t0
                stem = out_dir / arch / re.sub(r"[^A-Za-z0-9_.=-]+", "_", cfg["id"])
                stem.parent.mkdir(parents=True, exist_ok=True)
                cubin, ptx = stem.with_suffix(".cubin"), stem.with_suffix(".ptx")
                cubin.write_bytes(compiled.asm["cubin"])
                ptx.write_text(compiled.asm["ptx"])
                res = _res_usage(bindir, cubin)
                spills = _parse_ptxas_log(log.getvalue())
                if spills is None:  # a cached compile prints no log: run ptxas -v ourselves
                    spills = _ptxas_spills(get_ptxas(cc).path, arch, ptx, stem.with_suffix(".v.cubin"))
                sass = _run([str(bindir / "cuobjdump"), "-sass", str(cubin)])
                tc = sorted(set(_TENSOR_CORE_OPS.findall(sass)))
                rows.append({
                    "module": modname, "id": cfg["id"], "kernel": cfg["kernel"],
                    "arch": arch, "cc": cc, "config": cfg["config"],
                    "registers": res["REG"], "shared": compiled.metadata.shared + res["SHARED"],
                    "stack": max(res["STACK"], spills["stack"]), "local": res["LOCAL"],
                    "spill_stores": spills["stores"], "spill_loads": spills["loads"],
                    "tensor_cores": ", ".join(tc) if tc else "no",
                    "compile_seconds": round(seconds, 2), "cubin": str(cubin),
                    "cubin_bytes": cubin.stat().st_size,
                    "spill_ok": spill_ok.get(cfg["id"], spill_ok.get(cfg["kernel"], "")),
                    "expect_tensor_cores": cfg.get("tensor_cores"),
                })
                print(f"compiled {cfg['id']} for {arch} in {seconds:.1f} s", flush=True)
    return rows


def _run(cmd) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout + proc.stderr


def _res_usage(bindir: Path, cubin: Path) -> dict:
    out = _run([str(bindir / "cuobjdump"), "-res-usage", str(cubin)])
    m = re.search(r"Function [^\n]*:\s*\n\s*(REG:.*)", out)
    if m is None:
        raise RuntimeError(f"cannot read cuobjdump -res-usage output:\n{out}")
    fields = dict(re.findall(r"([A-Z]+):(\d+)", m.group(1)))
    return {k: int(fields.get(k, 0)) for k in ("REG", "STACK", "SHARED", "LOCAL")}


def _ptxas_spills(ptxas: str, arch: str, ptx: Path, out: Path) -> dict:
    # The flags triton itself passes to ptxas (triton/backends/nvidia/compiler.py, make_cubin).
    log = _run([ptxas, "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", str(ptx), "-o", str(out)])
    out.unlink(missing_ok=True)
    spills = _parse_ptxas_log(log)
    if spills is None:
        raise RuntimeError(f"cannot read ptxas -v output:\n{log}")
    return spills


def _parse_ptxas_log(log: str) -> dict | None:
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m is None:
        return None
    stack, stores, loads = map(int, m.groups())
    return {"stack": stack, "stores": stores, "loads": loads}


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqlib.aot", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, nargs="+", default=list(ARCHS), help="compute capabilities")
    p.add_argument("--json", type=Path, default=None,
                   help="cache file stem (default _build/aot/<module>.json per module)")
    p.add_argument("--module", nargs="+", default=None, help="kernel modules (default: all)")
    p.add_argument("--config", nargs="+", default=None,
                   help="config ids of the chosen modules (default: every config)")
    p.add_argument("--refresh", action="store_true", help="recompile even if the cache is current")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        rows = _worker(args.arch, args.out, args.module, args.config)
        (args.out / f"rows.{'-'.join(args.module)}.json").write_text(json.dumps(rows, indent=1))
        return 0
    t0 = time.perf_counter()
    rows = resource_table(args.arch, args.json, refresh=args.refresh, modules=args.module,
                          configs=args.config)
    print(format_table(rows, "text"))
    print(f"\n{len(rows)} cubins in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
