"""Data-rights verbs: `listener purge` (a person's or a source's mentions, or everything before a date)
and `listener purge --retention` (the configured `retain` periods, see listener.retention).

Purging deletes mentions with their enrichments, watch rows and full-text index entries, in one
transaction. It asks first unless `--yes`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from listener.errors import UsageError


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of
    from listener.context import parse_when

    @app.command()
    def purge(
        typer_ctx: typer.Context,
        source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source's mentions.")] = None,
        author: Annotated[str | None, typer.Option("--author", "-a", help="Only this author's mentions.")] = None,
        before: Annotated[
            str | None, typer.Option("--before", help="Only mentions created before: 2026-01-31 or a duration (365d).")
        ] = None,
        retention: Annotated[
            bool, typer.Option("--retention", help="Apply the configured `retain` periods instead of filters.")
        ] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Delete mentions (with enrichments and search index entries): filters are AND-ed, at least one needed."""
        ctx = ctx_of(typer_ctx)
        if retention:
            if source or author or before:
                raise UsageError("--retention applies the configured periods; it takes no --source/--author/--before")
            _retention(ctx, yes)
            return
        if source is None and author is None and before is None:
            raise UsageError("purge needs at least one of --source, --author or --before (or --retention)")
        cutoff = parse_when(before)
        store = ctx.store()
        matching = store.count(
            sources=[source] if source else (), authors=[author] if author else (), until=cutoff, include_deleted=True
        )
        what = " and ".join(
            part
            for part in (
                f"source {source!r}" if source else "",
                f"author {author!r}" if author else "",
                f"created before {cutoff:%Y-%m-%d %H:%M} UTC" if cutoff else "",
            )
            if part
        )
        if matching == 0:
            console.print(f"deleted 0 mentions: none match {what}")
            return
        if not yes and not typer.confirm(
            f"Delete {matching} mention(s) of {what}, with their enrichments and search index entries?", default=False
        ):
            console.print("nothing deleted")
            raise typer.Exit(1)
        deleted = store.purge(source=source, author=author, before=cutoff)
        console.print(f"deleted {deleted} mention(s) of {what}")

    def _retention(ctx: object, yes: bool) -> None:
        from listener.context import Context
        from listener.retention import apply_retention, describe_period, retention_policy

        assert isinstance(ctx, Context)
        policy = retention_policy(ctx.config())
        if policy.empty:
            console.print("no `retain` configured ([listener] retain or a source's retain): nothing to do")
            return
        periods = ", ".join(f"{name} {describe_period(period)}" for name, period in sorted(policy.per_source.items()))
        default = f"others {describe_period(policy.default)}" if policy.default else "others kept"
        if not yes and not typer.confirm(f"Apply retention ({periods or 'no per-source periods'}; {default})?"):
            console.print("nothing deleted")
            raise typer.Exit(1)
        deleted = apply_retention(ctx.store(), policy)
        total = sum(deleted.values())
        detail = ", ".join(f"{name}: {n}" for name, n in deleted.items())
        console.print(f"deleted {total} mention(s) past their retention period" + (f" ({detail})" if detail else ""))
