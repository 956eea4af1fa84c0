"""Jupyter configuration for `make lab`: the chapters and exercises open as notebooks.

    .venv/bin/jupyter lab --config=jupyter_server_config.py

The chapters (chapters/*.md) and exercises (exercises/*.md) are Jupytext MyST Markdown files.
Jupytext's contents manager serves them to JupyterLab as notebooks and writes them back as
Markdown when you save: no .ipynb file is created. A double click on a .md file opens it as a
notebook ("Jupytext Notebook"); to edit one as plain text, right-click it and choose
Open With > Editor.
"""
import json
import pathlib

c = get_config()  # noqa: F821 - provided by Jupyter when it loads this file

ROOT = pathlib.Path(__file__).resolve().parent

# Serve the repository, whichever folder the command was started from.
c.ServerApp.root_dir = str(ROOT)

# Jupytext's server extension puts its contents manager in front of Jupyter's own (pip enables it
# on install; enabling it here makes this file enough). Its settings are in jupytext.toml.
c.ServerApp.jpserver_extensions = {"jupyterlab_jupytext": True}

# JupyterLab's default settings, from overrides.json in its application settings folder (written
# under _build/, never committed, each time the server starts): Markdown and MyST files open as
# Jupytext notebooks, and JupyterLab does not ask to fetch news or updates (it works offline).
LAB_SETTINGS = ROOT / "_build" / "jupyterlab" / "settings"
LAB_SETTINGS.mkdir(parents=True, exist_ok=True)
(LAB_SETTINGS / "overrides.json").write_text(
    json.dumps(
        {
            "@jupyterlab/docmanager-extension:plugin": {
                "defaultViewers": {"markdown": "Jupytext Notebook", "myst": "Jupytext Notebook"}
            },
            "@jupyterlab/apputils-extension:notification": {
                "checkForUpdates": False,
                "fetchNews": "false",
            },
        },
        indent=2,
    )
)
c.LabApp.app_settings_dir = str(LAB_SETTINGS)
