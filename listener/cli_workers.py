"""`listener workers`: the scale-out job queue at a glance — workers and heartbeats, queue depth, stalled jobs."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from listener.errors import StorageError

STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")


def snapshot(store: Any, stalled_after: float) -> dict[str, Any]:
    """Workers, per-queue job counts and jobs of dead workers, read from the store's PostgreSQL database."""
    from listener import queue
    from storage import jobqueue

    if not jobqueue.schema_present(store):
        raise StorageError(f"{store.display_url} has no job queue schema yet: run `listener db upgrade`")
    workers = [
        {"id": w.id, "last_heartbeat": w.last_heartbeat.isoformat(),
         "seconds_since_heartbeat": round(w.seconds_since_heartbeat, 1),
         "alive": w.seconds_since_heartbeat < stalled_after, "running": list(w.running)}
        for w in jobqueue.workers(store)
    ]

    async def read() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        app = queue.make_app(store, min_size=1, max_size=2)
        async with app.open_async():
            queues = list(await app.job_manager.list_queues_async())
            stalled = await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after)
        jobs = [{"id": j.id, "job": j.call_string, "queue": j.queue, "worker": j.worker_id, "attempts": j.attempts}
                for j in stalled]
        return queues, jobs

    queues, stalled_jobs = asyncio.run(read())
    return {"database": store.display_url, "workers": workers,
            "queues": {q["name"]: {s: q[s] for s in STATUSES} for q in queues}, "stalled_jobs": stalled_jobs}


def register(app: typer.Typer) -> None:
    from rich.table import Table

    from listener.cli import console, ctx_of

    @app.command()
    def workers(
        typer_ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    ) -> None:
        """Scale-out mode (PostgreSQL): daemon workers and their heartbeats, queue depth, stalled jobs."""
        from listener.daemon_settings import load_settings

        ctx = ctx_of(typer_ctx)
        store = ctx.store()
        if store.dialect != "postgresql":
            console.print(f"{store.display_url} is SQLite: one `listener daemon` runs every job in its own process, "
                          "there are no queue workers. Several daemons need a PostgreSQL store "
                          "(see docs/scale-out.md).")
            return
        from storage import jobqueue

        if not jobqueue.available():
            console.print("procrastinate is not installed, so no daemon can run as a scale-out worker here: "
                          "pip install 'customer-voice-listener[postgres]'")
            raise typer.Exit(1)
        settings = load_settings(ctx.config(required=False))
        data = snapshot(store, settings.stalled_after.total_seconds())
        if as_json:
            console.print_json(json.dumps(data, default=str))
            return
        table = Table("worker", "last heartbeat", "state", "running", title=f"workers on {data['database']}")
        for w in data["workers"]:
            state = "alive" if w["alive"] else f"silent (stalled after {settings.stalled_after.total_seconds():.0f}s)"
            table.add_row(str(w["id"]), f"{w['seconds_since_heartbeat']:.0f}s ago", state,
                          "\n".join(w["running"]) or "-")
        console.print(table if data["workers"] else "no workers registered: is a `listener daemon` running?")
        depth = Table("queue", *STATUSES, title="jobs per queue and status")
        for name, counts in sorted(data["queues"].items()):
            depth.add_row(name, *(str(counts[s]) for s in STATUSES))
        console.print(depth if data["queues"] else "no jobs yet")
        if data["stalled_jobs"]:
            stalled = Table("job", "queue", "dead worker", "attempts", title="stalled jobs (re-queued by any daemon)")
            for j in data["stalled_jobs"]:
                stalled.add_row(f"{j['id']} {j['job']}", j["queue"], str(j["worker"] or "-"), str(j["attempts"]))
            console.print(stalled)
        else:
            console.print("no stalled jobs")
