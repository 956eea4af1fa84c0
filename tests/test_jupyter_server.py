"""JupyterLab, started as `make lab` starts it, serves a chapter's Jupytext source as a notebook.

The server runs on 127.0.0.1 on a free port with a random token and the project's
jupyter_server_config.py; it is shut down at the end.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from helpers import BIN, ROOT, artifacts_dir, free_port

CHAPTER = "chapters/01_rnn.md"


class LabServer:
    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def get(self, path: str):
        req = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())


@pytest.fixture(scope="module")
def lab():
    if not (ROOT / CHAPTER).exists():
        pytest.fail(f"{CHAPTER} is missing")
    port, token = free_port(), secrets.token_hex(16)
    log_path = artifacts_dir() / "jupyter_server.log"
    # A private Jupyter runtime and user folder: the test neither reads nor leaves anything in ~.
    with tempfile.TemporaryDirectory() as home, open(log_path, "w") as log:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": f"{home}/runtime", "JUPYTER_CONFIG_DIR": f"{home}/config",
               "JUPYTERLAB_SETTINGS_DIR": f"{home}/lab-user-settings",
               "JUPYTERLAB_WORKSPACES_DIR": f"{home}/lab-workspaces"}
        proc = subprocess.Popen(
            [str(BIN / "jupyter"), "lab", "--config", str(ROOT / "jupyter_server_config.py"),
             "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
            cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        server = LabServer(f"http://127.0.0.1:{port}/", token)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                try:
                    server.get("api/status")
                    break
                except (urllib.error.URLError, ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        pytest.fail("jupyter lab did not answer within 120 s:\n" + log_path.read_text()[-4000:])
                    time.sleep(0.5)
            yield server
        finally:
            proc.terminate()  # SIGTERM: the server shuts down its kernels and exits
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)


def test_chapter_is_served_as_a_notebook(lab):
    status, model = lab.get(f"api/contents/{CHAPTER}?type=notebook&content=1")
    assert status == 200
    assert model["type"] == "notebook", model["type"]
    nb = model["content"]
    assert nb["nbformat"] == 4
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    markdown = [cell for cell in nb["cells"] if cell["cell_type"] == "markdown"]
    assert len(code) >= 3, f"only {len(code)} code cells"
    assert markdown, "no markdown cells"
    assert any("seqlib" in "".join(cell["source"]) for cell in code), "no code cell uses seqlib"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


def test_exercises_are_served_as_notebooks(lab):
    for path in sorted((ROOT / "exercises").glob("*.md")):
        status, model = lab.get(f"api/contents/exercises/{path.name}?type=notebook&content=1")
        assert status == 200 and model["type"] == "notebook", path.name
        assert any(cell["cell_type"] == "code" for cell in model["content"]["cells"]), path.name


def test_markdown_opens_as_a_jupytext_notebook_by_default(lab):
    status, settings = lab.get("lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert status == 200
    viewers = settings["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers.get("markdown") == "Jupytext Notebook", viewers
    assert viewers.get("myst") == "Jupytext Notebook", viewers


def test_the_python3_kernel_is_this_environment(lab):
    status, specs = lab.get("api/kernelspecs")
    assert status == 200
    assert "python3" in specs["kernelspecs"], list(specs["kernelspecs"])
