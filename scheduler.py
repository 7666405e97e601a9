"""Daemon entry point: `python scheduler.py [-c listener.toml] [--log-format json] …` == `listener daemon …`.

Kept at the repository root for deployments that run a script rather than the console entry.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from listener import cli, cli_daemon

    cli_daemon.ensure_registered(cli.app)
    cli.main(["daemon", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
