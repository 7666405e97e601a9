"""The web UI in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright.

uvicorn serves the real app on 127.0.0.1 over the bundled demo's mentions (plus one hostile mention),
and each test acts like a user: search, filter, open a mention, check sources, use a phone-size screen.
Screenshots go to artifacts/screenshots/ (git-ignored) for a human to look at. Skipped only when
/usr/bin/chromium is absent (`apt-get install chromium`); Playwright's own browser download is never used.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, Dialog, Page, ViewportSize, expect, sync_playwright
from rich.console import Console

from enrich.base import Enrichment
from listener.api import create_app
from listener.demo.runner import demo_config, run_demo
from listener.types import Mention
from storage import Store

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PHONE: ViewportSize = {"width": 390, "height": 844}
HOSTILE_TEXT = 'acme notes <img src=x onerror="window.__xss=1"> <script>window.__xss=2</script> "quoted" & more'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)"
    ),
]


@dataclass
class Site:
    url: str
    store: Store
    hostile_id: str


def _label(text: str) -> str:
    lowered = text.lower()
    if re.search(r"crash|bug|slow|lost|broken|duplicat|conflict|expensive|cara|refund", lowered):
        return "negative"
    if re.search(r"love|great|fast|exactly|best|perfect", lowered):
        return "positive"
    return "neutral"


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    db = tmp_path_factory.mktemp("browser") / "demo.db"
    store = run_demo(db=db, enrich=False, console=Console(file=io.StringIO()))
    items = store.search(None, limit=1000).items
    # Stand-in sentiment labels (the model is not needed to test the UI).
    store.save_enrichments(
        [Enrichment(i.id, "sentiment", "test", {"label": _label(i.mention.body), "score": 0.9}) for i in items]
    )
    hostile = Mention(
        source="acme-community-forum",
        kind="discourse",
        native_id="hostile-1",
        url="javascript:window.__xss=3",
        title='<script>window.__xss=4</script>Acme Notes "title"',
        text=HOSTILE_TEXT,
        author='<b onmouseover="window.__xss=5">mallory</b>',
        created_at=datetime.now(UTC) - timedelta(hours=1),
        matched=("acme-notes",),
    )
    store.save_batch("acme-community-forum", [hostile], None)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with _serve(create_app(store, demo_config("http://127.0.0.1:9"))) as url:
        yield Site(url, store, hostile.id)
    store.close()


@contextmanager
def _serve(app: FastAPI) -> Iterator[str]:
    """uvicorn on a free 127.0.0.1 port in a thread; yields the base URL."""
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    host, port = sock.getsockname()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


TOKEN = "browser-test-token-0123456789"


@pytest.fixture(scope="module")
def locked_site(site: Site) -> Iterator[str]:
    """The same store served as if bound beyond loopback: a token is required."""
    with _serve(create_app(site.store, demo_config("http://127.0.0.1:9"), token=TOKEN)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    outside: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: None if r.url.startswith((site.url, "data:")) else outside.append(r.url))
    pg.on("pageerror", lambda e: errors.append(str(e)))

    def on_dialog(dialog: Dialog) -> None:
        errors.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    pg.on("dialog", on_dialog)
    yield pg
    context.close()
    assert outside == [], f"the UI must not load anything from elsewhere: {outside}"
    assert errors == [], errors


def shot(page: Page, name: str, *, full: bool = False) -> None:
    """The visible screen (result lists are long), or the whole page for the short ones."""
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


def page_width(page: Page) -> int:
    """How wide the laid-out page is; on a mobile viewport the browser widens to fit, so compare with the device."""
    return int(page.evaluate("Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"))


def test_search_then_filter_by_source_watch_and_sentiment(page: Page, site: Site) -> None:
    page.goto(site.url + "/")
    expect(page.locator("header")).to_contain_text("customer-voice listener")
    assert page.locator("article.mention").count() > 10
    shot(page, "01-home")

    page.get_by_role("searchbox", name="search").fill("sync")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"q=sync"))
    cards = page.locator("article.mention")
    assert cards.count() > 3
    expect(page.locator("article.mention mark").first).to_have_text(re.compile("sync", re.I))
    shot(page, "02-search-sync")

    page.get_by_label("source", exact=True).select_option("acme-community-forum")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"source=acme-community-forum"))
    sources = page.locator("article.mention .meta .source").all_inner_texts()
    assert sources and set(sources) == {"acme-community-forum"}

    page.get_by_label("source", exact=True).select_option("")
    page.get_by_label("watch", exact=True).select_option("notably")
    page.get_by_label("search", exact=True).fill("")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"watch=notably"))
    assert page.locator("article.mention").count() > 0
    for card in page.locator("article.mention").all():
        expect(card.locator(".badge.watch", has_text="notably")).to_have_count(1)

    page.get_by_label("watch", exact=True).select_option("")
    page.get_by_label("sentiment", exact=True).select_option("negative")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"sentiment=negative"))
    labels = page.locator("article.mention .badge.sentiment").all_inner_texts()
    assert labels and set(labels) == {"negative"}
    expect(page.get_by_label("sentiment", exact=True)).to_have_value("negative")  # the form remembers the filter
    shot(page, "03-filter-negative")


def test_no_results_and_bad_input_are_explained(page: Page, site: Site) -> None:
    page.goto(site.url + "/?q=zzqqxxnothing")
    expect(page.locator("main")).to_contain_text("No mentions")
    page.goto(site.url + "/?q=-only")
    expect(page.locator(".error")).to_be_visible()
    shot(page, "04-bad-query")


def test_open_a_mention(page: Page, site: Site) -> None:
    page.goto(site.url + "/?q=%22conflicted+copy%22&since=30d")
    first = page.locator("article.mention").first
    first.get_by_role("link", name="details").click()
    page.wait_for_url(re.compile(r"/m/[0-9a-f]+$"))
    expect(page.locator("article.card pre")).to_contain_text("conflicted cop")
    expect(page.locator("table.enrichments")).to_contain_text("sentiment")
    shot(page, "05-mention", full=True)
    page.go_back()
    expect(page.get_by_label("search", exact=True)).to_have_value('"conflicted copy"')


def test_sources_page(page: Page, site: Site) -> None:
    page.goto(site.url + "/")
    page.get_by_role("link", name="Sources").click()
    page.wait_for_url(site.url + "/sources")
    rows = page.locator("table.sources tbody tr")
    assert rows.count() == len(demo_config("http://127.0.0.1:1").sources)  # one row per demo source
    expect(page.locator("table.sources")).to_contain_text("reddit-r-productivity")
    expect(page.locator("table.sources")).to_contain_text("ok")
    shot(page, "06-sources", full=True)


def test_hostile_content_stays_text(page: Page, site: Site) -> None:
    page.goto(site.url + "/?q=quoted+more")
    card = page.locator("article.mention").first
    expect(card).to_contain_text('<img src=x onerror="window.__xss=1">')
    expect(card).to_contain_text("<b onmouseover=")
    assert card.locator("a[href^='javascript']").count() == 0
    card.hover()
    page.goto(site.url + f"/m/{site.hostile_id}")
    expect(page.locator("h1")).to_contain_text("<script>window.__xss=4</script>")
    page.locator("main").hover()
    assert page.evaluate("window.__xss") is None
    assert page.locator("a[href^='javascript']").count() == 0


@pytest.mark.parametrize("path", ["/", "/?q=sync", "/m/{id}", "/sources"])
def test_phone_viewport_has_no_horizontal_scroll(browser: Browser, site: Site, path: str) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    pg = context.new_page()
    try:
        first = site.store.search("sync", limit=1).items[0].id
        pg.goto(site.url + path.replace("{id}", first))
        too_wide = pg.evaluate(
            f"[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > {PHONE['width']})"
            ".slice(0, 5).map(e => e.tagName + '.' + e.className)"
        )
        assert page_width(pg) <= PHONE["width"] and not too_wide, too_wide
        name = {"/": "home", "/?q=sync": "search", "/m/{id}": "mention", "/sources": "sources"}[path]
        shot(pg, f"phone-{name}", full=name in ("mention", "sources"))
    finally:
        context.close()


def test_login_keeps_the_token_out_of_reach_of_scripts(browser: Browser, locked_site: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(locked_site) else outside.append(r.url))
    page.goto(locked_site + "/?q=sync")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.get_by_label("API token").fill("not the token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("[role=alert]")).to_contain_text("not the one")
    page.get_by_label("API token").fill(TOKEN)
    shot(page, "09-login", full=True)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/\?q=sync$"))
    assert page.locator("article.mention").count() > 3
    assert page.evaluate("document.cookie") == ""  # HttpOnly: page scripts never see the token
    (cookie,) = [c for c in context.cookies() if c["name"] == "listener_token"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(locked_site + "/sources")
    page.wait_for_url(re.compile(r"/login\?next=%2Fsources"))
    assert outside == []
    context.close()


def test_api_docs_render_without_a_cdn(page: Page, site: Site) -> None:
    """Swagger UI comes from this server (the page fixture fails on any request elsewhere)."""
    page.goto(site.url + "/api/docs")
    expect(page.locator(".swagger-ui .info .title").first).to_contain_text("customer-voice listener", timeout=20_000)
    expect(page.get_by_text("/api/mentions").first).to_be_visible()
    shot(page, "10-api-docs")
