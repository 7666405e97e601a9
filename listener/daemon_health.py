"""What both daemons serve on `/healthz` and `/metrics`: the server's binding, the health body, the metrics text.

Each daemon knows its own scheduler (APScheduler threads, or the PostgreSQL job queue) and where a
source's next run comes from; what "down" and "degraded" mean, and the enrichment figures, are
decided here once. The HTTP server and the metric families themselves are in listener/health.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from listener.errors import ListenerError
from listener.health import HealthFn, HealthServer, Metrics, MetricsFn, render_metrics

if TYPE_CHECKING:
    from listener.daemon_jobs import EnrichJob
    from listener.daemon_settings import DaemonSettings
    from storage import SourceState, Store

Health = tuple[int, dict[str, Any]]
"""(HTTP status, body) of /healthz."""
SourceRows = Callable[[dict[str, "SourceState"]], list[dict[str, Any]]]


def bind_health_server(settings: DaemonSettings, health: HealthFn, metrics: MetricsFn) -> HealthServer | None:
    """Bind (not start) the server, or None when `health_port = false`; a taken port is a clear error at once."""
    if settings.health_port is None:
        return None
    host, port = settings.health_host, settings.health_port
    try:
        return HealthServer(host, port, health, metrics)
    except OSError as exc:
        raise ListenerError(f"cannot serve health on {host}:{port}: {exc.strerror or exc} "
                            "(change [daemon] health_port or pass --health-port)") from None


def health_address(server: HealthServer | None) -> str:
    """Where health is served, for the start-up log line: "off" or the URL."""
    return "off" if server is None else "http://{}:{}".format(*server.address)


def health_report(
    store: Store, enrich: EnrichJob, metrics: Metrics, head: dict[str, Any], source_rows: SourceRows,
    enrich_queue_depth: int | None,
) -> Health:
    """503 "down" when `head["scheduler"]` is false or the database unreachable, 200 "degraded" while a
    source is failing, else 200 "ok". `head` holds the daemon's own fields, which come first in the body;
    `source_rows` turns the stored source states into one row per enabled source."""
    body: dict[str, Any] = {"status": "ok", **head}
    try:
        states = {s.source: s for s in store.source_states()}
    except Exception as exc:
        states, body["database_error"] = {}, str(exc)
    sources = source_rows(states)
    body["sources"] = sources
    body["enrich"] = {"model_loaded": enrich.loaded, "queue_depth": enrich_queue_depth,
                      "rate_per_second": round(metrics.enrich_rate(), 3), "error": enrich.error}
    if not body["scheduler"] or "database_error" in body:
        body["status"] = "down"
        return 503, body
    if any(s["failing"] for s in sources):
        body["status"] = "degraded"
    return 200, body


def metrics_report(health: Health, metrics: Metrics, enrich: EnrichJob) -> str:
    """/metrics: the counters, plus gauges read from the health body just taken (so both agree)."""
    _, body = health
    snapshot = {"enrich_queue_depth": body["enrich"]["queue_depth"], "model_loaded": enrich.loaded,
                "scheduler_running": body.get("scheduler"), "uptime": body.get("uptime", 0.0)}
    return render_metrics(metrics.families(body.get("sources", []), snapshot))
