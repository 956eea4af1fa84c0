"""The book builds with warnings as errors, and every page of the table of contents is written.

The build (into _build/, as `make book` does) runs once per pytest process; test_browser.py
looks at the same output.
"""
import re

import pytest

from helpers import ROOT, artifacts_dir, build_book_once, toc_files


@pytest.fixture(scope="module")
def book():
    return build_book_once()


def test_book_builds_with_warnings_as_errors(book):
    tail = "\n".join(book.log.splitlines()[-60:])
    # Sphinx's own warnings look like "path:line: WARNING: ..." (the kernel's log lines do not).
    warnings = [line for line in book.log.splitlines() if re.search(r"(^|: )(WARNING|ERROR|CRITICAL):", line)]
    (artifacts_dir() / "book_build_time.md").write_text(
        f"| build | seconds |\n| --- | --- |\n| jupyter-book build -W --keep-going --all | {book.seconds:.1f} |\n"
    )
    print(f"\nbook build: {book.seconds:.1f} s (log in tests/artifacts/book_build.log)")
    assert book.ok, f"jupyter-book build failed (exit {book.returncode}):\n" + "\n".join(warnings) + "\n" + tail
    assert "build succeeded" in book.log
    assert not warnings, warnings


def test_every_toc_page_is_written(book):
    assert book.ok, "the book did not build"
    index = book.html / "index.html"
    assert index.is_file(), index
    for doc in toc_files():
        page = book.html / f"{doc}.html"
        assert page.is_file(), f"{doc} is in book/_toc.yml but {page} was not written"
        assert page.stat().st_size > 1000, page


def test_every_chapter_is_in_the_book(book):
    """A chapter notebook that exists must be listed in the table of contents (and so built)."""
    assert book.ok, "the book did not build"
    listed = set(toc_files())
    for chapter in sorted(ROOT.glob("chapters/*.md")):
        doc = f"chapters/{chapter.stem}"
        assert doc in listed, f"{chapter.relative_to(ROOT)} is not listed in book/_toc.yml"
        assert (book.html / f"{doc}.html").is_file()


def test_chapters_were_executed(book):
    """Each chapter page shows outputs: it was executed, not rendered from a bare source."""
    assert book.ok, "the book did not build"
    for chapter in sorted(ROOT.glob("chapters/*.md")):
        html = (book.html / "chapters" / f"{chapter.stem}.html").read_text()
        assert 'class="cell_output' in html, f"{chapter.name} has no executed outputs in the book"
        assert "Traceback (most recent call last)" not in html, f"{chapter.name} shows a traceback"


def test_math_is_served_locally(book):
    """MathJax comes from the book's own _static folder, never from a CDN."""
    assert book.ok, "the book did not build"
    html = (book.html / "book" / "notation.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', html)
    assert any("_static/mathjax/tex-chtml.js" in s for s in scripts), scripts
    assert not [s for s in scripts if s.startswith(("http:", "https:", "//"))], scripts
    assert (book.html / "_static" / "mathjax" / "tex-chtml.js").is_file()
