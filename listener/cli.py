"""`listener` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage/config error.

Every failure the user can cause prints one clear line, never a traceback
(set LISTENER_DEBUG=1 to see one for a real bug).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from listener import __version__
from listener.config import DEFAULT_CONFIG_NAME, load_config
from listener.context import Context
from listener.errors import ListenerError, UsageError

app = typer.Typer(
    help="Customer-voice listener: hear what customers say on Reddit, HN, forums, feeds and app stores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
state_app = typer.Typer(help="Inspect or reset a source's cursor and health.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema and integrity.", no_args_is_help=True)
app.add_typer(state_app, name="state")
app.add_typer(db_app, name="db")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # an error stays one line, never wrapped

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="Config file (default: $LISTENER_CONFIG or ./listener.toml).")
]
DbOpt = Annotated[
    str | None, typer.Option("--db", help="Database file or URL (default: $LISTENER_DB or the config's).")
]


def ctx_of(typer_ctx: typer.Context) -> Context:
    obj = typer_ctx.find_root().obj
    assert isinstance(obj, Context)
    return obj


@app.callback()
def root(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db: DbOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        console.print(f"listener {__version__}")
        raise typer.Exit()
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    typer_ctx.obj = Context(config_path=config, db=db)
    typer_ctx.call_on_close(typer_ctx.obj.close)


EXAMPLE_CONFIG = Path(__file__).with_name("example.toml")
TOPICS_HEADER = """
# =============================================================================================
# Topics: what `listener enrich` tags and `listener topics` counts, with aspect sentiment. This is the
# built-in taxonomy for a software / consumer product; edit, remove or add topics for yours.
#   name         short id (lower case), shown in digests and in `listener search --topic NAME`
#   description  one sentence; seeds: typical customer phrasings. Both are embedded and compared
#                with each sentence of a mention.
#   keywords     optional lower-case substrings that add a lexical cue
#   threshold    optional cosine cut-off (default: the tuned global one)
# `listener topics --emerging` finds themes no topic covers; `listener promote ID --name NAME` adds one
# here. Without any [[topics]] table the built-in default applies.
# =============================================================================================

"""


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path(DEFAULT_CONFIG_NAME),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented example config with every source kind."""
    if path.exists() and not force:
        raise UsageError(f"{path} exists; use --force to overwrite")
    from enrich.topics import default_taxonomy_toml

    topics = default_taxonomy_toml(TOPICS_HEADER)  # the default taxonomy, to edit in place
    path.write_text(EXAMPLE_CONFIG.read_text(encoding="utf-8").rstrip("\n") + "\n" + topics, encoding="utf-8")
    console.print(f"wrote {path} — edit the [[watch]] and [[source]] tables, then run `listener check`")


@app.command()
def check(typer_ctx: typer.Context) -> None:
    """Validate the config (and that secrets referenced from env are set)."""
    ctx = ctx_of(typer_ctx)
    config = ctx.config()
    from connectors import connector_class
    from enrich.topics import taxonomy_from_config

    topics = taxonomy_from_config(config)  # a bad [[topics]] entry is a ConfigError naming its key
    missing = []
    for source in config.sources:
        connector_class(source.kind)  # import succeeds: optional dependencies present
        for key, value in source.params.items():
            if hasattr(value, "env") and value.get_or_none() is None:
                missing.append(f"source.{source.name}.{key}: environment variable {value.env} is not set")
    for line in missing:
        err.print(f"[yellow]warning[/]: {line}")
    console.print(
        f"{config.path}: ok — {len(config.watches)} watch queries, {len(config.sources)} sources, "
        f"{len(topics)} topics, database {ctx.database_target()}"
    )


@app.command()
def sources(typer_ctx: typer.Context) -> None:
    """Sources with their schedule and health (last success, failures, last error, notes)."""
    ctx = ctx_of(typer_ctx)
    config = ctx.config(required=False)
    states = {s.source: s for s in ctx.store().source_states()}
    table = Table(title="sources")
    for col in ("name", "kind", "every", "mode", "health", "last success", "fails", "mentions", "last error / notes"):
        table.add_column(col, overflow="fold")
    from connectors import connector_class
    from listener.pipeline import make_http

    http = make_http(config)
    for s in config.sources:
        st = states.pop(s.name, None)
        try:
            mode = connector_class(s.kind)(s, http, config.watches).status()
        except Exception as exc:  # show the problem rather than hide the row
            mode = f"error: {exc}"
        health = "disabled" if not s.enabled else "never run"
        if st is not None and st.last_run_at is not None:
            health = "[red]failing[/]" if st.consecutive_failures else "[green]ok[/]"
        table.add_row(
            s.name,
            s.kind,
            s.cron or str(s.every),
            mode,
            health,
            f"{st.last_success_at:%Y-%m-%d %H:%M}" if st and st.last_success_at else "–",
            str(st.consecutive_failures) if st else "0",
            str(st.total_mentions) if st else "0",
            (st.last_error or "; ".join(st.notes)) if st else "",
        )
    for name, st in states.items():
        table.add_row(
            name, "?", "–", "not in config", "orphaned", "–", str(st.consecutive_failures), str(st.total_mentions), ""
        )
    http.close()
    console.print(table)


@app.command()
def fetch(
    typer_ctx: typer.Context,
    source: Annotated[list[str] | None, typer.Option("--source", "-s", help="Only this source (repeatable).")] = None,
) -> None:
    """Fetch new mentions from every enabled source (or the named ones)."""
    ctx = ctx_of(typer_ctx)
    runs = _fetch(ctx, source or [])
    if any(r.status == "failed" for r in runs):
        raise typer.Exit(1)


def _fetch(ctx: Context, names: list[str]) -> list:
    from listener.pipeline import Pipeline

    config = ctx.config()
    pipeline = Pipeline(config, ctx.store())
    targets = names or [s.name for s in config.sources if s.enabled]
    for name in targets:
        config.source(name)  # unknown names fail before any work
    with _progress() as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(name: str, seen: int) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(name, total=None)
            progress.update(tasks[name], completed=seen, description=f"{name}: {seen} fetched")

        runs = [pipeline.run_source(config.source(n), on_progress) for n in targets]
    pipeline.http.close()
    table = Table(title="fetch")
    for col in ("source", "status", "fetched", "kept", "new", "dupes", "updated", "secs", "error / notes"):
        table.add_column(col, overflow="fold")
    for r in runs:
        colour = {"ok": "green", "partial": "yellow"}.get(r.status, "red")
        table.add_row(
            r.source,
            f"[{colour}]{r.status}[/]",
            str(r.fetched),
            str(r.kept),
            str(r.new),
            str(r.duplicates),
            str(r.updated),
            f"{r.seconds:.1f}",
            r.error or "; ".join(r.notes),
        )
    console.print(table)
    return runs


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@state_app.command("show")
def state_show(typer_ctx: typer.Context, source: str) -> None:
    """Print a source's cursor, health and recent runs as JSON."""
    import json

    store = ctx_of(typer_ctx).store()
    states = {s.source: s for s in store.source_states()}
    if source not in states:
        raise UsageError(f"no state stored for source {source!r}")
    st = states[source]
    runs = store.runs(source, limit=5)
    data = {
        "source": source,
        "cursor": json.loads(st.cursor.to_json()),
        "consecutive_failures": st.consecutive_failures,
        "last_success_at": st.last_success_at,
        "last_error": st.last_error,
        "notes": st.notes,
        "total_mentions": st.total_mentions,
        "runs": [
            {"started_at": r.started_at, "status": r.status, "new": r.new, "duplicates": r.duplicates, "error": r.error}
            for r in runs
        ],
    }
    console.print_json(json.dumps(data, default=str))


@state_app.command("reset")
def state_reset(typer_ctx: typer.Context, source: str) -> None:
    """Forget a source's cursor and health (its mentions stay); the next fetch backfills again."""
    ctx_of(typer_ctx).store().reset_source(source)
    console.print(f"reset {source}: next fetch starts from its backfill window")


@db_app.command("upgrade")
def db_upgrade(typer_ctx: typer.Context) -> None:
    """Apply schema migrations (alembic); on PostgreSQL also the job queue's schema if missing."""
    store = ctx_of(typer_ctx).store()
    store.upgrade()
    console.print(f"{store.display_url}: schema at revision {store.schema_revision()}")
    if store.dialect == "postgresql":  # the scale-out job queue's own schema (procrastinate), outside alembic
        from storage import jobqueue

        if not jobqueue.available():
            console.print("job queue schema skipped: procrastinate is not installed (only several daemons need it: "
                          "pip install 'customer-voice-listener[postgres]')")
            return
        created = jobqueue.apply_schema(store)
        console.print(f"job queue schema (procrastinate) {'created' if created else 'present'}")


@db_app.command("check")
def db_check(typer_ctx: typer.Context) -> None:
    """Integrity check: SQLite integrity, search index in sync, no orphans."""
    store = ctx_of(typer_ctx).store()
    problems = store.check()
    for p in problems:
        err.print(f"[red]problem[/]: {p}")
    if problems:
        raise typer.Exit(1)
    console.print(f"{store.display_url}: ok (schema {store.schema_revision()})")


def _register_more() -> None:
    from listener import (
        cli_admin,
        cli_daemon,
        cli_digest,
        cli_insight,
        cli_model,
        cli_query,
        cli_serve,
        cli_workers,
    )

    cli_query.register(app)
    cli_digest.register(app)
    cli_insight.register(app)
    cli_daemon.register(app)
    cli_admin.register(app)
    cli_model.register(app)
    cli_serve.register(app)
    cli_workers.register(app)


_register_more()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: turn our errors into one line and an exit code."""
    try:
        app(args=argv, standalone_mode=True)
    except ListenerError as exc:
        err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("LISTENER_DEBUG"):
            raise
        err.print(
            f"[red]internal error[/]: {exc.__class__.__name__}: {escape(str(exc))} "
            "(LISTENER_DEBUG=1 shows the traceback)",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

__all__ = ["app", "load_config", "main"]
