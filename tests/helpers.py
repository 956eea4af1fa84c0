"""Shared helpers for the notebook, book, browser and Jupyter-server tests.

Kept out of conftest.py on purpose: the tests import what they need from here, and the one
expensive thing, the book build, runs at most once per pytest process (``build_book_once``).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
BIN = pathlib.Path(sys.executable).parent  # the virtualenv's bin/ (jupyter-book, jupyter, ...)
BUILD_HTML = ROOT / "_build" / "html"
TOC = ROOT / "book" / "_toc.yml"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def artifacts_dir() -> pathlib.Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def is_notebook(path: pathlib.Path) -> bool:
    """A Jupytext notebook has a kernelspec in its front matter; a plain page has none."""
    text = path.read_text()
    return text.startswith("---") and "kernelspec:" in text.split("\n---", 1)[0]


def notebook_sources() -> list[pathlib.Path]:
    """Every notebook of the book: chapters/*.md, exercises/*.md, and the pages of book/ that run
    code (an appendix, for example)."""
    return (
        sorted(ROOT.glob("chapters/*.md"))
        + sorted(ROOT.glob("exercises/*.md"))
        + [p for p in sorted(ROOT.glob("book/*.md")) if is_notebook(p)]
    )


def toc_files() -> list[str]:
    """The documents named in book/_toc.yml (e.g. "book/intro", "chapters/01_rnn")."""
    import yaml

    toc = yaml.safe_load(TOC.read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [f.removesuffix(".md").removesuffix(".ipynb") for f in files]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The book build


@dataclass
class BookBuild:
    returncode: int
    seconds: float
    log: str
    html: pathlib.Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def build_book(timeout: float = 1800) -> BookBuild:
    """Build the book exactly as `make book` does, but with warnings as errors.

    --all re-reads every page, so a warning from a page that an earlier `make book` already built
    is seen again; notebooks are not re-executed unless their source changed (jupyter-cache).
    """
    cmd = [
        str(BIN / "jupyter-book"), "build", ".",
        "--toc", "book/_toc.yml", "--config", "_config.yml",
        "-W", "--keep-going", "--all",
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    seconds = time.perf_counter() - start
    log = proc.stdout + "\n" + proc.stderr
    (artifacts_dir() / "book_build.log").write_text(log)
    return BookBuild(proc.returncode, seconds, log, BUILD_HTML)


@functools.lru_cache(maxsize=1)
def build_book_once() -> BookBuild:
    return build_book()


# --------------------------------------------------------------------------------------------
# A static HTTP server for the built book


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve_directory(directory: pathlib.Path):
    """Serve `directory` on http://127.0.0.1:<free port>/ from a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
