"""A headless Chromium looks at the built book, served from 127.0.0.1, as a reader would.

For every page of the table of contents it asserts that the page loads with no console errors and
no request leaving 127.0.0.1 (the book works offline), that the math is typeset by the book's own
MathJax, that every image loaded, and that every internal link and #anchor resolves. It saves
screenshots of every page (whole chapters, and one chapter in the dark theme) to tests/artifacts/.
"""
from __future__ import annotations

import html.parser
import pathlib
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml
from playwright import sync_api as playwright_sync

from helpers import CHROMIUM, ROOT, artifacts_dir, build_book_once, serve_directory, toc_files

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# Pages whose source has display or inline math: the test insists MathJax typeset something there.
MATH_PAGES = {"book/notation"} | {f"chapters/{p.stem}" for p in ROOT.glob("chapters/*.md")}


class _Anchors(html.parser.HTMLParser):
    """Collects the ids and names an #anchor can point at, and the links of a page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


@pytest.fixture(scope="module")
def site():
    book = build_book_once()
    if not book.ok:
        pytest.fail("the book did not build; see test_book.py and tests/artifacts/book_build.log")
    with serve_directory(book.html) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    if not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


class PageVisit:
    """Opens a page, recording console errors, page errors, failed and off-machine requests."""

    def __init__(self, browser, base: str, color_scheme: str = "light"):
        self.base = base
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, color_scheme=color_scheme
        )
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("requestfailed", lambda req: self.errors.append(
            f"request failed: {req.url} ({req.failure})"))
        self.page.on("response", self._response)
        self.page.route("**/*", self._route)

    def _console(self, msg):
        if msg.type == "error":
            self.errors.append(f"console error: {msg.text} at {msg.location}")

    def _response(self, resp):
        if resp.status >= 400:
            self.errors.append(f"HTTP {resp.status}: {resp.url}")

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base) or url.startswith(("data:", "blob:", "about:")):
            route.continue_()
        else:
            self.errors.append(f"request leaves the machine: {url}")
            route.abort()

    def open(self, path: str):
        self.page.goto(self.base + path, wait_until="load")
        self.page.wait_for_load_state("networkidle")
        # MathJax 3 typesets after load; wait until it says it is done.
        self.page.wait_for_function("() => !window.MathJax || (MathJax.startup && MathJax.startup.promise)")
        self.page.evaluate("() => window.MathJax ? MathJax.startup.promise.then(() => true) : true")
        return self.page

    def close(self):
        self.context.close()


def _images_not_loaded(page) -> list[str]:
    return page.evaluate(
        """async () => {
            const bad = [];
            for (const img of Array.from(document.images)) {
                img.loading = "eager";
                img.scrollIntoView();
                try { await img.decode(); } catch (e) {}
                if (!img.complete || img.naturalWidth === 0) bad.push(img.currentSrc || img.src);
            }
            window.scrollTo(0, 0);
            return bad;
        }"""
    )


def _page_id(doc: str) -> str:
    return doc.replace("/", "_")


@pytest.mark.parametrize("doc", toc_files())
def test_page_renders_offline(site, browser, doc):
    visit = PageVisit(browser, site)
    try:
        page = visit.open(f"{doc}.html")
        assert page.title(), f"{doc} has no title"
        typeset = page.locator("mjx-container").count()
        if doc in MATH_PAGES:
            assert typeset > 0, f"{doc}: no math was typeset (no mjx-container elements)"
        assert page.locator("mjx-merror").count() == 0, f"{doc}: MathJax reports a TeX error"
        assert page.locator(".math.notranslate:not(:has(mjx-container))").count() == 0, (
            f"{doc}: some math was left untypeset")
        bad_images = _images_not_loaded(page)
        assert not bad_images, f"{doc}: images that did not load: {bad_images}"
        page.screenshot(path=str(artifacts_dir() / f"{_page_id(doc)}.png"), full_page=False)
        if doc.startswith("chapters/"):
            page.screenshot(path=str(artifacts_dir() / f"{_page_id(doc)}_full.png"), full_page=True)
        assert not visit.errors, f"{doc}:\n" + "\n".join(visit.errors)
    finally:
        visit.close()


def test_index_opens_the_introduction(site, browser):
    visit = PageVisit(browser, site)
    try:
        page = visit.open("index.html")
        page.wait_for_url("**/book/intro.html")
        assert "Sequence Models" in page.title()
        page.screenshot(path=str(artifacts_dir() / "index.png"))
        assert not visit.errors, "\n".join(visit.errors)
    finally:
        visit.close()


def test_dark_theme(site, browser):
    """The theme's dark mode follows a reader whose system prefers dark, and the background turns dark."""
    visit = PageVisit(browser, site, color_scheme="dark")
    try:
        page = visit.open("book/intro.html")
        assert page.evaluate("() => document.documentElement.dataset.mode") == "auto"
        assert page.evaluate("() => document.documentElement.dataset.theme") == "dark"
        rgb = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        channels = [int(c) for c in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]]
        assert sum(channels) / 3 < 80, f"dark theme background is {rgb}"
        doc = next((d for d in toc_files() if d.startswith("chapters/")), "book/notation")
        page = visit.open(f"{doc}.html")
        page.screenshot(path=str(artifacts_dir() / f"{_page_id(doc)}_dark.png"))
        assert not visit.errors, "\n".join(visit.errors)
    finally:
        visit.close()


def test_search_finds_a_page(site, browser):
    visit = PageVisit(browser, site)
    try:
        page = visit.open("search.html?q=recurrence")
        page.wait_for_selector("#search-results li", timeout=30_000)
        hits = page.locator("#search-results li").count()
        assert hits > 0, "search for 'recurrence' found nothing"
        assert not visit.errors, "\n".join(visit.errors)
    finally:
        visit.close()


def test_launch_buttons_use_the_repository_url(site, browser):
    repo_url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    org_repo = urllib.parse.urlparse(repo_url).path.strip("/")
    chapters = [d for d in toc_files() if d.startswith("chapters/")]
    if not chapters:
        pytest.skip("no chapter yet")
    status, body = _fetch(site + f"{chapters[0]}.html")
    text = body.decode()
    assert status == 200
    assert f"mybinder.org/v2/gh/{org_repo}/" in text, "no Binder launch button"
    assert f"colab.research.google.com/github/{org_repo}/" in text, "no Colab launch button"
    assert "hub/user-redirect/git-pull" in text, "no JupyterHub launch button"
    assert repo_url in text, "no repository button"


def test_internal_links_resolve(site):
    """Every same-site link of every page answers 200, and its #anchor exists on the target."""
    pages = {f"{doc}.html" for doc in toc_files()} | {"index.html", "genindex.html", "search.html"}
    anchors_of: dict[str, set[str]] = {}
    broken: list[str] = []

    def anchors(url: str) -> set[str] | None:
        if url not in anchors_of:
            status, body = _fetch(url)
            if status != 200:
                return None
            parser = _Anchors()
            parser.feed(body.decode("utf-8", "replace"))
            anchors_of[url] = parser.ids
        return anchors_of[url]

    for path in sorted(pages):
        url = site + path
        status, body = _fetch(url)
        assert status == 200, f"{path}: HTTP {status}"
        parser = _Anchors()
        parser.feed(body.decode("utf-8", "replace"))
        anchors_of[url] = parser.ids
        for href in parser.links:
            target = urllib.parse.urljoin(url, href)
            if not target.startswith(site):
                continue  # an external link: not followed (there is no network)
            target, _, fragment = target.partition("#")
            target = target.split("?")[0]
            if target.endswith("/"):
                target += "index.html"
            ids = anchors(target)
            if ids is None:
                broken.append(f"{path}: {href} -> not found")
            elif fragment and urllib.parse.unquote(fragment) not in ids:
                broken.append(f"{path}: {href} -> no #{fragment} on the target page")
    assert not broken, "broken internal links:\n" + "\n".join(broken)
