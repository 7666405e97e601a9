"""`listener daemon`: the long-running scheduler (also `python scheduler.py`), or one pass with `--once`."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from listener.errors import ListenerError, StorageError

log = logging.getLogger("listener.daemon")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def run_daemon(ctx: object, *, log_format: str = "text", log_level: str = "info", health_port: int | None = None,
               once: bool = False) -> int:
    """Configure logs, gate on the schema, then serve until SIGTERM (or run once). Returns the exit code."""
    from listener.context import Context
    from listener.daemon_settings import load_settings, open_current_store
    from listener.logging_setup import configure

    assert isinstance(ctx, Context)
    redactor = configure(log_format, level=LEVELS[log_level])
    try:
        config = ctx.config()
        redactor.use_config(config)
        settings = load_settings(config)
        store = open_current_store(ctx.database_target())
    except ListenerError as exc:  # one clear line in the chosen log format, then the usual exit code
        log.error("cannot start: %s", exc)
        return exc.exit_code
    try:
        if once:
            from listener.daemon_jobs import run_once

            return run_once(config, store, settings)
        if store.dialect == "postgresql" and settings.queue == "auto":
            from storage import jobqueue

            if not jobqueue.available():
                raise StorageError("a PostgreSQL store runs the daemon as a scale-out worker, which needs "
                                   "procrastinate: pip install 'customer-voice-listener[postgres]' (or set [daemon] "
                                   'queue = "local" for one process)')
            from listener.daemon_pg import PgDaemon  # scale-out: procrastinate jobs, any number of daemons

            return PgDaemon(config, store, health_port=health_port).serve()
        from listener.daemon import Daemon

        return Daemon(config, store, health_port=health_port).serve()
    except ListenerError as exc:
        log.error("daemon stopped: %s", exc)
        return exc.exit_code
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    from listener.cli import ctx_of

    @app.command()
    def daemon(
        typer_ctx: typer.Context,
        log_format: Annotated[str, typer.Option("--log-format", help="text, or json: one object per line.")] = "text",
        log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
        health_port: Annotated[int | None, typer.Option(
            "--health-port", min=0, max=65535, help="Port for /healthz and /metrics (default: daemon.health_port).",
        )] = None,
        once: Annotated[bool, typer.Option("--once", help="Run each enabled source once, enrich, exit.")] = False,
        config: Annotated[str | None, typer.Option("--config", "-c", help="Config file (as global -c).")] = None,
        db: Annotated[str | None, typer.Option("--db", help="Database file or URL (as the global option).")] = None,
    ) -> None:
        """Run continuously: each source on its schedule, enrichment, daily digest, /healthz + /metrics.

        SIGTERM/SIGINT stop after the current batch; SIGHUP (or saving the config) reloads sources.
        """
        if log_format not in ("text", "json"):
            raise typer.BadParameter("must be text or json", param_hint="--log-format")
        if log_level not in LEVELS:
            raise typer.BadParameter(f"must be one of {', '.join(LEVELS)}", param_hint="--log-level")
        ctx = ctx_of(typer_ctx)
        if config:
            ctx.config_path, ctx._config = config, None
        if db:
            ctx.db = db
        code = run_daemon(ctx, log_format=log_format, log_level=log_level, health_port=health_port, once=once)
        raise typer.Exit(code)


def ensure_registered(app: typer.Typer) -> None:
    """Register `daemon` unless listener/cli.py already did (scheduler.py must work either way)."""
    for command in app.registered_commands:
        name = command.name or getattr(command.callback, "__name__", "")
        if name == "daemon":
            return
    register(app)
