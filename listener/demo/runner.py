"""`listener demo`: the first thing a new user runs. Everything real except the internet.

The bundled feeds are served from 127.0.0.1 by a static server that honours ETags, so the demo goes
through the same HTTP client, connector, matcher, store and digest as production, and its second
fetch shows the conditional-GET saving (0 new rows, 0 body bytes).
"""

from __future__ import annotations

import hashlib
import os
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from rich.console import Console

from listener.config import Config, parse_config
from listener.errors import StorageError
from storage import Store

HERE = Path(__file__).parent
FEEDS = HERE / "feeds"


class _FeedHandler(SimpleHTTPRequestHandler):
    """Static files with strong ETags (SimpleHTTPRequestHandler only knows Last-Modified)."""

    body_bytes = 0

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def,unused-ignore]
        path = Path(self.translate_path(self.path))
        if path.is_file():
            etag = '"' + hashlib.sha1(path.read_bytes()).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return None
            self._etag = etag
        return super().send_head()

    def end_headers(self) -> None:
        etag = getattr(self, "_etag", None)
        if etag:
            self.send_header("ETag", etag)
        super().end_headers()

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def,unused-ignore]
        data = source.read()
        type(self).body_bytes += len(data)
        outputfile.write(data)

    def guess_type(self, path: str | os.PathLike[str]) -> str:
        suffix = Path(path).suffix
        return {".rss": "application/rss+xml", ".atom": "application/atom+xml", ".xml": "application/xml"}.get(
            suffix, super().guess_type(path)
        )


@contextmanager
def serve_feeds(directory: Path = FEEDS) -> Iterator[tuple[str, type[_FeedHandler]]]:
    handler = type("DemoFeedHandler", (_FeedHandler,), {"body_bytes": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def demo_config(base_url: str) -> Config:
    text = (HERE / "demo.toml").read_text(encoding="utf-8").replace("{DEMO_BASE}", base_url)
    config = parse_config(tomllib.loads(text), str(HERE / "demo.toml"))
    # All demo feeds share one local host; the per-host politeness limit is for real sites, not for us.
    return replace(config, sources=tuple(replace(s, rate=s.rate or 50.0) for s in config.sources))


def run_demo(*, db: Path, fresh: bool = True, enrich: bool = True, console: Console | None = None) -> Store:
    from listener.digest import build_digest, render_markdown
    from listener.pipeline import Pipeline, default_stages, enrich_pending, make_http

    out = console or Console()
    if fresh:
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                Path(f"{db}{suffix}").unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot remove old demo database {db}{suffix}: {exc.strerror}") from None
    store = Store.open(str(db))
    with serve_feeds() as (base, handler):
        config = demo_config(base)
        http = make_http(config, store, default_rate=50.0)
        pipeline = Pipeline(config, store, http)
        first = pipeline.run()
        out.print(f"[bold]1st fetch[/] from {len(first)} bundled feeds served on {base}:")
        for r in first:
            out.print(
                f"  {r.source:<28} {r.fetched:>3} entries parsed, {r.kept:>3} kept, {r.new:>3} new"
                + (f"  [red]{r.error}[/]" if r.error else "")
            )
        before = handler.body_bytes
        second = pipeline.run()
        out.print(
            f"[bold]2nd fetch[/] (unchanged feeds and forum): {sum(r.new for r in second)} new rows, "
            f"{handler.body_bytes - before} body bytes downloaded (ETag → 304)"
        )
        http.close()
    if enrich:
        try:
            done = enrich_pending(store, default_stages(config, store))
            out.print(f"[bold]enriched[/] {done} mentions with the bundled models (sentiment, topics, intent, "
                      "journey stage, language, duplicates)")
        except Exception as exc:  # the demo still shows the digest without enrichments
            out.print(f"[yellow]enrichment skipped[/]: {exc}")
    newest = store.search(None, limit=1).items
    if newest:
        until = newest[0].mention.created_at + timedelta(seconds=1)
        digest = build_digest(store, config, until=until, period=timedelta(days=14))
        out.print()
        out.print(render_markdown(digest), markup=False, highlight=False)
    out.print(
        f"\nThe data is in {db}. Try:\n  listener --db {db} search '\"acme notes\" sync' \n"
        f"  listener --db {db} search --watch notably --format csv\n  listener --db {db} digest --since 30d\n"
        f"  listener --db {db} topics --since 30d\n  listener --db {db} questions --since 30d"
    )
    return store
