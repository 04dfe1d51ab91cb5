"""The built book, read in a real browser with no network: Debian's chromium, headless, via Selenium.

The book in ``_build/html`` is served on 127.0.0.1 and every host name but that one resolves to
nothing, so that a page which needs the network shows it. On the landing page and every recipe page
the test checks that every math node was typeset with no MathJax error, every image loaded, no
request left 127.0.0.1, and the console stayed free of errors; and, in the same visit, that every
display equation fits its text column at the window's 1280 pixels and, at a 390-pixel phone's
width (emulated), scrolls sideways in its own box if it must but is never cut. The pages load at
the two widths in turn, each measured first at the width it loaded at and then at the other, so that
the book's relayout (docs/_static/mathjax-reflow.js) is checked both ways: for a window narrowed and
for a window widened after its page loaded. It also searches for each recipe, walks the "next"
links of the built pages from the landing page through every chapter, and leaves screenshots of a
recipe page in light and dark mode under ``_build/screenshots/`` for a person to look at. The map
of the book must draw one node per recipe, and every link on it and in each recipe page's
Connections section must lead to a built page (its screenshots are there too).

``make test`` builds the book first and sets ``COOKBOOK_REQUIRE_BROWSER=1``, so that a missing build
or browser fails the run there; a bare ``pytest`` skips these tests when the book is not built.
"""

import functools
import html.parser
import http.server
import json
import os
import posixpath
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest

from cookbook import _book

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("COOKBOOK_HTML", ROOT / "_build" / "html"))  # another built copy of the book
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REQUIRED = os.environ.get("COOKBOOK_REQUIRE_BROWSER") == "1"


def _missing():
    if not (HTML / "docs" / "index.html").exists():
        return f"the book is not built in {HTML} (run `make html`)"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} is missing (run `make browser`, which installs chromium and chromedriver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed"
    return None


if (reason := _missing()) is not None:
    if REQUIRED:
        raise RuntimeError(f"The browser tests cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

RECIPES = _book.all_recipes()
RECIPE_PAGES = ["docs/chapters/" + "/".join(name.split(".")[1:]) + ".html" for name in RECIPES]
CHAPTER_PAGES = [f"docs/chapters/{c}/index.html" for c in _book.chapters()]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    handler = functools.partial(_Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
        # The test only goes forward: a page kept alive for the back button is work for nothing
        # (about a tenth of the browser's CPU time over 22 pages, measured twice).
        "--disable-back-forward-cache",
        "--window-size=1280,1000",
        # No network: every host name but the loopback address resolves to nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def _drain_logs(driver):
    """Requests made and console errors since the last call."""
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return requests, errors


def _wait_for_mathjax(driver):
    """Wait until MathJax has typeset the page (or the page has no MathJax)."""
    return driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        if (!document.querySelector('.math')) { done('no math'); return; }
        const start = Date.now();
        (function poll() {
          if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
            MathJax.startup.promise.then(() => done('typeset'), (e) => done('error: ' + e));
          } else if (Date.now() - start > 30000) {
            done('MathJax never started');
          } else { setTimeout(poll, 50); }
        })();
        """
    )


#: The window's width (see ``browser``) and a phone's, at which every display equation is measured.
DESKTOP, PHONE = 1280, 390

# Each display equation that MathJax typeset: its width against its text column's, whether it is
# wider than the column (it scrolls sideways) and whether any of it is cut (its box reaches past the
# column or the window, or it is wider than a box that does not scroll).
_EQUATIONS = """
const out = [];
for (const item of MathJax.startup.document.math) {
  if (!item.display || !item.typesetRoot || !item.typesetRoot.isConnected) continue;
  const root = item.typesetRoot, box = root.getBoundingClientRect();
  const column = root.parentElement.getBoundingClientRect();
  const math = root.querySelector('mjx-math').getBoundingClientRect();
  const wider = math.width > column.width + 1 || root.scrollWidth > root.clientWidth + 1;
  const scrolls = ['auto', 'scroll'].includes(getComputedStyle(root).overflowX);
  out.push({
    tex: item.math.trim().replace(/\\s+/g, ' ').slice(0, 70),
    width: Math.ceil(Math.max(math.width, root.scrollWidth)), column: Math.floor(column.width),
    wider,
    cut: (wider && !scrolls) || box.left < column.left - 1 || box.right > column.right + 1
         || column.left < -1 || column.right > window.innerWidth + 1,
  });
}
return out;
"""


def _equations_at(driver, width):
    """The display equations, once the page has laid them out for a window ``width`` pixels wide.

    The book lays its equations out again when the window's width changes (docs/_static/
    mathjax-reflow.js) and says on ``<html data-math-width>`` for which width it last did.
    """
    state = driver.execute_async_script(
        """
        const [width, done] = arguments, start = Date.now();
        (function poll() {
          const laid = document.documentElement.dataset.mathWidth, now = window.innerWidth;
          if (laid === String(now) && now === width) done('laid out');
          else if (Date.now() - start > 20000) done(`laid out for ${laid}, window ${now}`);
          else setTimeout(poll, 10);
        })();
        """,
        width,
    )
    assert state == "laid out", f"the equations were not laid out again for {width} pixels: {state}"
    return driver.execute_script(_EQUATIONS)


#: The phone's width without its mobile viewport: the theme lays the page out as on a phone, and the
#: page cannot widen its layout viewport past the screen (which a phone may do, zooming out); half the
#: cost of the mobile emulation, which lays the whole page out again twice as slowly.
_PHONE_METRICS = {"width": PHONE, "height": 844, "deviceScaleFactor": 1, "mobile": False}


def _at_desktop_width(driver):
    """End the phone's emulation, if a page check left it on (see :func:`_check_equations`)."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _check_equations(driver, page):
    """Every display equation fits its column at the desktop width, and on a phone is never cut.

    The page is measured first at the width it was loaded at, then at the other one, and is left
    there: the next page loads at that width and is measured the other way round. Each page is then
    laid out for one change of width, not two (turning back to the desktop before the next page cost
    another layout of the page being left: measured on 57 pages, 10 to 17 % of the time per page).
    """
    if driver.execute_script("return window.innerWidth") == PHONE:
        phone = _equations_at(driver, PHONE)
        _at_desktop_width(driver)
        desktop = _equations_at(driver, DESKTOP)
    else:
        desktop = _equations_at(driver, DESKTOP)
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", _PHONE_METRICS)
        phone = _equations_at(driver, PHONE)
    wide = [f"{e['tex']!r} is {e['width']} px in a {e['column']} px column" for e in desktop if e["wider"]]
    assert not wide, f"{page}: at {DESKTOP} px, display equations wider than the text column: {wide}"
    cut = [f"{e['tex']!r} ({e['width']} px, column {e['column']} px)" for e in phone if e["cut"]]
    assert not cut, f"{page}: at {PHONE} px, display equations cut off: {cut}"
    return {"equations": len(desktop), "scroll_on_phone": sum(e["wider"] for e in phone)}


def _check_page(driver, server, page):
    _drain_logs(driver)
    driver.get(f"{server}/{page}")
    state = _wait_for_mathjax(driver)
    assert state in ("typeset", "no math"), f"{page}: {state}"
    report = driver.execute_script(
        """
        const math = [...document.querySelectorAll('.math')];
        return {
          untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
          merrors: [...document.querySelectorAll('mjx-merror')].map(e => e.textContent.slice(0, 80)),
          broken_images: [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
          math: math.length,
          images: document.images.length,
          display: document.querySelectorAll('div.math').length,
          // What a recipe page's own test reads, taken in the same call (each WebDriver call is a
          // round trip to the browser).
          article: document.querySelector('article')?.innerText ?? '',
          downloads: [...document.querySelectorAll('a.download')].map(a => a.href),
        };
        """
    )
    if report["display"] and state == "typeset":
        report.update(_check_equations(driver, page))
    # Let the fonts that the typesetting asked for arrive before reading the logs: every request
    # the page made has then been sent, and the browser logged it when it was sent.
    driver.execute_async_script("const done = arguments[0]; document.fonts.ready.then(() => done());")
    requests, errors = _drain_logs(driver)
    host = urllib.parse.urlsplit(server).netloc
    foreign = [u for u in requests if urllib.parse.urlsplit(u).scheme in ("http", "https", "ws", "wss")
               and urllib.parse.urlsplit(u).netloc != host]
    assert not report["untypeset"], f"{page}: math nodes not typeset: {report['untypeset']}"
    assert not report["merrors"], f"{page}: MathJax error elements: {report['merrors']}"
    assert not report["broken_images"], f"{page}: images that did not load: {report['broken_images']}"
    assert not foreign, f"{page}: requests to other hosts: {foreign}"
    assert not errors, f"{page}: console errors: {errors}"
    return report


def test_landing_page(browser, server):
    _check_page(browser, server, "docs/index.html")
    assert "Deep Learning Cookbook" in browser.title


def test_every_display_equation_is_on_a_page_that_is_checked():
    # _check_page measures the display equations of the pages it visits; no other page may hold one.
    visited = {"docs/index.html", *RECIPE_PAGES}
    others = [str(p.relative_to(HTML)) for p in (HTML / "docs").rglob("*.html")
              if str(p.relative_to(HTML)) not in visited and '<div class="math' in p.read_text(encoding="utf-8")]
    assert not others, f"pages with display equations that the browser test does not measure: {others}"


def test_root_redirects_to_the_landing_page(browser, server):
    browser.get(f"{server}/index.html")
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith("/docs/index.html"))


@pytest.mark.parametrize("page", RECIPE_PAGES)
def test_recipe_page(browser, server, page):
    report = _check_page(browser, server, page)
    assert report["math"] > 0, f"{page}: has no typeset mathematics at all"
    text = report["article"]
    for heading in ("Equation", "Legend", "Explanation", "Code", "Example", "References"):
        assert heading in text, f"{page}: no '{heading}' section on the rendered page"
    assert "min to read" in text, f"{page}: no reading time"
    assert any(link.endswith(".py") for link in report["downloads"]), f"{page}: no download link to the module"


def test_search_finds_each_recipe(browser, server):
    # Searching a recipe's title finds its page. The search page is loaded once, the way a reader
    # reaches it (``search.html?q=``), and must list the first recipe; then every title is searched
    # in that page with the functions the page itself runs on ``?q=`` (Sphinx's searchtools), so
    # that the search index is read once rather than once per recipe.
    titles = [(__import__(name, fromlist=["_"]).__doc__ or "").strip().splitlines()[0] for name in RECIPES]
    browser.get(f"{server}/search.html?q={urllib.parse.quote(titles[0])}")
    selector = "#search-results ul.search li a"
    WebDriverWait(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, selector)
        or "did not match" in d.find_element(By.ID, "search-results").text
    )
    hits = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, selector)]
    assert any(h.split("#")[0].endswith(RECIPE_PAGES[0]) for h in hits), f"searching '{titles[0]}': {hits}"
    found = browser.execute_script(
        """
        return arguments[0].map((title) => {
          const [query, terms, excluded, highlight, objects] = Search._parseQuery(title);
          return Search._performSearch(query, terms, excluded, highlight, objects).map((r) => r[0]);
        });
        """,
        titles,
    )
    missed = [f"'{t}' -> {docs[:5]}" for t, page, docs in zip(titles, RECIPE_PAGES, found)
              if page.removesuffix(".html") not in docs]
    assert len(found) == len(RECIPES) and not missed, f"searches that did not find their recipe: {missed}"


class _NextLink(html.parser.HTMLParser):
    """The target of a page's "next" button (``<a class="right-next" href=...>``), if it has one."""

    def __init__(self):
        super().__init__()
        self.href = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "right-next" in (attrs.get("class") or "").split() and self.href is None:
            self.href = attrs["href"]


def test_next_links_walk_through_every_chapter():
    # The links are static HTML, so the walk reads the built files rather than loading every page
    # in the browser again (the pages themselves were loaded by test_recipe_page above).
    page, visited = "docs/index.html", ["docs/index.html"]
    for _ in range(500):
        parser = _NextLink()
        parser.feed((HTML / page).read_text(encoding="utf-8"))
        if parser.href is None:
            break
        target = urllib.parse.urlsplit(parser.href).path
        page = posixpath.normpath(posixpath.join(posixpath.dirname(page), target))
        assert (HTML / page).exists(), f"the 'next' link of {visited[-1]} points to a missing page {page}"
        visited.append(page)
    missing = [p for p in CHAPTER_PAGES + RECIPE_PAGES if p not in visited]
    assert not missing, f"following 'next' from the landing page never reaches {missing}"
    order = [visited.index(p) for p in CHAPTER_PAGES]
    assert order == sorted(order), "chapters are not walked in the book's order"


def test_screenshots_in_light_and_dark_mode(browser, server):
    SHOTS.mkdir(parents=True, exist_ok=True)
    _at_desktop_width(browser)  # screenshots of the desktop's layout, whichever width the last page left
    page = RECIPE_PAGES[0]
    for mode in ("light", "dark"):
        browser.get(f"{server}/{page}")
        browser.execute_script(
            "localStorage.setItem('theme', arguments[0]); document.documentElement.dataset.theme = arguments[0];",
            mode,
        )
        _wait_for_mathjax(browser)
        assert browser.execute_script("return document.documentElement.dataset.theme") == mode
        path = SHOTS / f"recipe-{mode}.png"
        browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000, f"the {mode} screenshot of {page} is empty"


class _ConnectionLinks(html.parser.HTMLParser):
    """The links of a recipe page's Connections section (``<section id="connections">``)."""

    def __init__(self):
        super().__init__()
        self.depth, self.hrefs = 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and (self.depth or attrs.get("id") == "connections"):
            self.depth += 1
        elif tag == "a" and self.depth and "headerlink" not in (attrs.get("class") or ""):
            self.hrefs.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == "section" and self.depth:
            self.depth -= 1


def test_the_map_draws_every_recipe_and_its_links_resolve(browser, server):
    from cookbook._book import bookmap

    _check_page(browser, server, "docs/map.html")
    nodes = browser.execute_script(
        "return [...document.querySelectorAll('.bookmap .bm-node')]"
        ".map(a => new URL(a.getAttribute('href'), document.baseURI).pathname)")
    assert sorted(nodes) == sorted("/" + page for page in RECIPE_PAGES), "the map does not draw each recipe once"
    links = browser.execute_script(
        "return [...document.querySelectorAll('article a[href]')].map(a => new URL(a.getAttribute('href'), document.baseURI).href)")
    host = urllib.parse.urlsplit(server).netloc
    missing = [u for u in links if urllib.parse.urlsplit(u).netloc == host
               and not (HTML / urllib.parse.unquote(urllib.parse.urlsplit(u).path).lstrip("/")).is_file()]
    assert len(links) > len(nodes) and not missing, f"links of the map to no built page: {missing}"
    # Pointing at a recipe marks the edges to the recipes it builds on and to those that build on it.
    marked = browser.execute_script(
        """
        const edge = document.querySelector('.bookmap .bm-edge');
        const node = document.getElementById(edge.dataset.user);
        node.dispatchEvent(new MouseEvent('mouseenter'));
        return [node.id, [...document.querySelectorAll('.bookmap .bm-edge.bm-base')].map(e => e.dataset.base),
                document.getElementById(edge.dataset.base).classList.contains('bm-base')];
        """)
    assert marked[1] and marked[2], f"pointing at {marked[0]} marks no edge: {marked}"
    SHOTS.mkdir(parents=True, exist_ok=True)
    _at_desktop_width(browser)
    for mode in ("light", "dark"):
        browser.execute_script("document.documentElement.dataset.theme = arguments[0];", mode)
        browser.save_screenshot(str(SHOTS / f"map-{mode}.png"))
    # Each recipe page's Connections section, read from the built files: present exactly where the
    # recipe has connections, and every link in it leads to a built page.
    sections = bookmap.connection_table()
    expected = {bookmap.docname(r) + ".html" for r in RECIPES if sections[bookmap.docname(r)]}
    found = set()
    for page in RECIPE_PAGES:
        parser = _ConnectionLinks()
        parser.feed((HTML / page).read_text(encoding="utf-8"))
        if parser.hrefs:
            found.add(page)
        for href in parser.hrefs:
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), urllib.parse.urlsplit(href).path))
            assert (HTML / target).is_file(), f"the Connections section of {page} links to a missing page {target}"
    assert found == expected, f"pages whose Connections section differs from the graph's: {sorted(found ^ expected)}"
