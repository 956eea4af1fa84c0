"""Show a cell's printed output as a terminal would: a progress bar appears once, at its end.

tqdm (and anything else that redraws a line) writes "\\r" and then the new line. A terminal or
JupyterLab overwrites the line; myst-nb 1.x, when it merges a cell's stream outputs
(nb_merge_streams), adds a newline after every chunk first, so a training loop's bar shows up
in the book as hundreds of lines. This extension merges the chunks as they arrived and then
applies "\\r" and "\\b" the way a terminal does. Loaded from _config.yml (sphinx.local_extensions).
"""
from __future__ import annotations

import re

_LINE_START = re.compile(r"[^\n]*\r(?=[^\n])")  # text that a later "\r" on the same line overwrites
_BACKSPACE = re.compile(r"[^\n]\x08")


def as_terminal(text: str) -> str:
    """Apply carriage returns and backspaces: "a\\rb" -> "b", "ab\\x08c" -> "ac"."""
    text = text.replace("\r\n", "\n")
    text = _LINE_START.sub("", text)
    previous = None
    while previous != text:
        previous, text = text, _BACKSPACE.sub("", text)
    return text.replace("\r", "")


def coalesce_streams(outputs):
    """Merge the stream outputs of a cell by name (stdout, stderr), as a terminal shows them."""
    merged, by_name = [], {}
    for output in outputs or []:
        if output["output_type"] != "stream":
            merged.append(output)
        elif output["name"] in by_name:
            by_name[output["name"]]["text"] += output["text"]
        else:
            by_name[output["name"]] = output
            merged.append(output)
    for output in by_name.values():
        output["text"] = as_terminal(output["text"]).rstrip() + "\n"
    return merged


def setup(app):
    from myst_nb.core import render

    if not hasattr(render, "coalesce_streams"):  # a myst-nb that no longer has the hook
        raise RuntimeError("terminal_streams: myst_nb.core.render.coalesce_streams not found")
    render.coalesce_streams = coalesce_streams
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
