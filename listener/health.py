"""`/healthz` and `/metrics` for the daemon, on the standard library's http.server in one thread.

No prometheus_client dependency: the handful of series we export are rendered by hand in the text
exposition format (version 0.0.4). The server only reads snapshots the daemon hands it; it never
touches the scheduler, so a slow scrape cannot delay a fetch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from listener.config import SourceConfig
    from storage import SourceState

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


@dataclass
class Family:
    """One metric family: name, type, help and its samples keyed by label set."""

    name: str
    kind: str
    help: str
    samples: dict[Labels, float] = field(default_factory=dict)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in sorted(self.samples.items()):
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{self.name}{{{label_text}}} {_fmt(value)}" if labels else f"{self.name} {_fmt(value)}")
        return lines


class Metrics:
    """Process-lifetime counters (Prometheus counters restart at 0 with the process, as they should)."""

    RATE_WINDOW = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.fetch_total: dict[tuple[str, str], int] = {}
        self.fetch_errors: dict[str, int] = {}
        self.mentions_new: dict[str, int] = {}
        self.enriched_total = 0
        self.skipped_runs: dict[str, int] = {}
        self._enrich_events: deque[tuple[float, int]] = deque()

    def record_fetch(self, source: str, status: str, new: int) -> None:
        with self._lock:
            self.fetch_total[(source, status)] = self.fetch_total.get((source, status), 0) + 1
            self.fetch_errors.setdefault(source, 0)
            self.mentions_new[source] = self.mentions_new.get(source, 0) + new
            if status == "failed":
                self.fetch_errors[source] += 1

    def record_enriched(self, count: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self.enriched_total += count
            now = self._clock()
            self._enrich_events.append((now, count))
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Keep one window of events, scraped or not (a daemon nobody scrapes must not grow)."""
        while self._enrich_events and self._enrich_events[0][0] < now - self.RATE_WINDOW:
            self._enrich_events.popleft()

    def record_skipped(self, job: str) -> None:
        with self._lock:
            self.skipped_runs[job] = self.skipped_runs.get(job, 0) + 1

    def enrich_rate(self) -> float:
        """Mentions enriched per second over the last minute."""
        with self._lock:
            self._prune(self._clock())
            return sum(n for _, n in self._enrich_events) / self.RATE_WINDOW

    def families(self, sources: Iterable[dict[str, Any]], snapshot: dict[str, Any]) -> list[Family]:
        """Counters plus the gauges derived from a health snapshot (lag, failures, queue depth)."""
        fams = {
            "fetch": Family("listener_fetch_total", "counter", "Source runs by outcome (ok, partial, failed)."),
            "errors": Family("listener_fetch_errors_total", "counter", "Source runs that failed."),
            "new": Family("listener_mentions_new_total", "counter", "New mentions stored, by source."),
            "lag": Family("listener_source_lag_seconds", "gauge", "Seconds since the source's last successful run."),
            "fails": Family("listener_source_consecutive_failures", "gauge", "Failed runs in a row (from storage)."),
            "next": Family("listener_source_next_run_timestamp_seconds", "gauge", "Unix time of the next run."),
            "depth": Family("listener_enrich_queue_depth", "gauge", "Mentions awaiting enrichment (NaN: no model)."),
            "enriched": Family("listener_enriched_total", "counter", "Mentions enriched by this process."),
            "rate": Family("listener_enrich_rate_per_second", "gauge", "Enrichment throughput over the last minute."),
            "model": Family("listener_enrich_model_loaded", "gauge", "1 when the enrichment model is loaded."),
            "skipped": Family("listener_job_skipped_total", "counter", "Runs skipped (still running/missed)."),
            "up": Family("listener_up", "gauge", "1 while the scheduler is running."),
            "uptime": Family("listener_uptime_seconds", "gauge", "Seconds since the daemon started."),
        }
        with self._lock:
            for (source, status), n in self.fetch_total.items():
                fams["fetch"].samples[(("source", source), ("status", status))] = n
            for source, n in self.fetch_errors.items():
                fams["errors"].samples[(("source", source),)] = n
            for source, n in self.mentions_new.items():
                fams["new"].samples[(("source", source),)] = n
            for job, n in self.skipped_runs.items():
                fams["skipped"].samples[(("job", job),)] = n
            fams["enriched"].samples[()] = self.enriched_total
        for s in sources:
            key = (("source", str(s["name"])),)
            fams["lag"].samples[key] = float(s["lag_seconds"]) if s.get("lag_seconds") is not None else math.nan
            fams["fails"].samples[key] = float(s.get("consecutive_failures", 0))
            if s.get("next_run_ts") is not None:
                fams["next"].samples[key] = float(s["next_run_ts"])
        depth = snapshot.get("enrich_queue_depth")
        fams["depth"].samples[()] = float(depth) if depth is not None else math.nan
        fams["rate"].samples[()] = self.enrich_rate()
        fams["model"].samples[()] = 1.0 if snapshot.get("model_loaded") else 0.0
        fams["up"].samples[()] = 1.0 if snapshot.get("scheduler_running") else 0.0
        fams["uptime"].samples[()] = float(snapshot.get("uptime", 0.0))
        return list(fams.values())


def render_metrics(families: Iterable[Family]) -> str:
    return "\n".join(line for fam in families for line in fam.render()) + "\n"


def aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def source_health(
    source: SourceConfig, state: SourceState | None, *, now: datetime, uptime: float, next_run: datetime | None,
    running: bool, failures: int, backoff: float | None, failing_after: int,
) -> dict[str, Any]:
    """One source's entry in /healthz: schedule, back-off state and what storage knows of its health."""
    from listener.daemon_settings import human

    if state is not None:
        failures = state.consecutive_failures
    last_ok, last_run = (aware(state.last_success_at), aware(state.last_run_at)) if state else (None, None)
    return {
        "name": source.name, "kind": source.kind, "schedule": source.cron or f"every {human(source.every)}",
        "running": running, "next_run_at": next_run.isoformat() if next_run else None,
        "next_run_ts": next_run.timestamp() if next_run else None,
        "consecutive_failures": failures, "failing": failures >= failing_after, "backoff_seconds": backoff,
        "last_run_at": last_run.isoformat() if last_run else None,
        "last_success_at": last_ok.isoformat() if last_ok else None,
        "last_status": state.last_run.status if state and state.last_run else None,
        "last_error": state.last_error if state else None,
        "lag_seconds": round((now - last_ok).total_seconds() if last_ok else uptime, 1),
        "total_mentions": state.total_mentions if state else 0,
    }


HealthFn = Callable[[], tuple[int, dict[str, Any]]]
MetricsFn = Callable[[], str]


class HealthServer:
    """Serves GET /healthz (JSON, 200 or 503) and GET /metrics (Prometheus text) from a daemon thread."""

    def __init__(self, host: str, port: int, health: HealthFn, metrics: MetricsFn) -> None:
        def make_handler() -> type[BaseHTTPRequestHandler]:
            class Handler(BaseHTTPRequestHandler):
                server_version = "listener-health"

                def log_message(self, *args: object) -> None:  # scrapes every 15 s would drown the log
                    pass

                def do_GET(self) -> None:
                    path = self.path.split("?", 1)[0]
                    try:
                        if path in ("/healthz", "/health"):
                            status, data = health()
                            self._send(status, json.dumps(data, default=str).encode(), "application/json")
                        elif path == "/metrics":
                            self._send(200, metrics().encode(), "text/plain; version=0.0.4; charset=utf-8")
                        else:
                            self._send(404, b'{"error": "not found: try /healthz or /metrics"}', "application/json")
                    except Exception as exc:  # a broken probe must answer, not hang the client
                        log.exception("health endpoint %s failed", path)
                        body = json.dumps({"status": "down", "error": f"{exc.__class__.__name__}: {exc}"}).encode()
                        self._send(503, body, "application/json")

                def _send(self, status: int, body: bytes, content_type: str) -> None:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    self.wfile.write(body)

            return Handler

        self._httpd = ThreadingHTTPServer((host, port), make_handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health", daemon=True,
                                        kwargs={"poll_interval": 1.0})

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
