"""`listener serve`: the REST API and web UI. Loopback by default; anywhere else needs a token."""

from __future__ import annotations

import ipaddress
import os
from typing import Annotated

import typer

from listener.errors import UsageError

TOKEN_ENV = "LISTENER_API_TOKEN"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(host: str, token_env: str) -> str | None:
    """The bearer token, required when binding beyond loopback so nothing is exposed by accident."""
    token = os.environ.get(token_env) or None
    if token is None and not is_loopback(host):
        raise UsageError(
            f"binding to {host} exposes the API beyond this machine: set {token_env} to a secret token first"
        )
    if token is not None and len(token) < 16:
        raise UsageError(f"{token_env} is too short; use at least 16 random characters")
    return token


def register(app: typer.Typer) -> None:
    from listener.cli import console, ctx_of

    @app.command()
    def serve(
        typer_ctx: typer.Context,
        host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
        token_env: Annotated[str, typer.Option(help="Environment variable holding the bearer token.")] = TOKEN_ENV,
    ) -> None:
        """REST API (/api, OpenAPI at /api/docs) and web UI (/) over the store."""
        import uvicorn

        from listener.api import create_app

        token = resolve_token(host, token_env)
        ctx = ctx_of(typer_ctx)
        application = create_app(ctx.store(), ctx.config(required=False), token=token)
        console.print(f"serving on http://{host}:{port}/ (API docs at /api/docs){' — token required' if token else ''}")
        uvicorn.run(application, host=host, port=port, log_level="warning")
