"""The reload path both daemons share (listener/daemon_settings.py) and the health server's binding
(listener/daemon_health.py), without starting a daemon."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from listener.config import Config, SourceConfig
from listener.daemon_health import bind_health_server, health_address
from listener.daemon_settings import (
    DaemonSettings,
    ReloadWatch,
    config_stamp,
    read_reloaded_config,
    settings_for,
    source_trigger,
    warn_restart_needed,
)
from listener.errors import ListenerError

GOOD = '[listener]\ntimezone = "Europe/Paris"\n[daemon]\nhealth_port = 9001\n\n' \
       '[[source]]\nname = "feed"\nkind = "rss"\nurl = "http://127.0.0.1:9/f"\nevery = "10m"\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reload_watch_reloads_on_request_or_a_changed_file_once_each(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", GOOD)
    reasons: list[str] = []
    watch = ReloadWatch()
    stamp = config_stamp(cfg)
    assert stamp is not None and watch.poll(cfg, stamp, reasons.append) == stamp and reasons == []

    watch.request()  # what the SIGHUP handler does
    assert watch.poll(cfg, stamp, reasons.append) == stamp and reasons == ["SIGHUP"]
    assert watch.poll(cfg, stamp, reasons.append) == stamp and reasons == ["SIGHUP"]  # handled once

    write(cfg, GOOD + "\n")
    os.utime(cfg, ns=(stamp[0] + 10**9, stamp[0] + 10**9))
    stamp = watch.poll(cfg, stamp, reasons.append)
    assert reasons == ["SIGHUP", "config file changed"] and stamp == config_stamp(cfg)

    cfg.unlink()  # a vanished file is a change too: the reload then refuses it, the daemon keeps running
    assert watch.poll(cfg, stamp, reasons.append) is None and reasons[-1] == "config file changed"
    assert config_stamp(None) is None


def test_read_reloaded_config_checks_everything_before_answering(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", GOOD)
    seen: list[str] = []

    def check_source(source: SourceConfig, settings: DaemonSettings, now: datetime) -> None:
        seen.append(f"{source.name}@{now.tzinfo}")

    def check_config(config: Config) -> None:
        seen.append("config")

    checked = read_reloaded_config(cfg, "test", 8123, check_source, check_config=check_config)
    assert checked is not None and [s.name for s in checked.config.sources] == ["feed"]
    assert checked.settings.health_port == 8123  # --health-port wins over the file, as at start
    assert str(checked.now.tzinfo) == "Europe/Paris" and seen == ["config", "feed@Europe/Paris"]
    assert read_reloaded_config(None, "test", None, check_source) is None  # no file: nothing to reload
    assert settings_for(checked.config, None).health_port == 9001


@pytest.mark.parametrize(("broken", "says"), [
    ('[[source]]\nname = "x"\nkind = "nonsense"\n', "nonsense"),
    ('[[source]]\nname = "x"\nkind = "rss"\nurl = "u"\ncron = "99 * * * *"\n', "cron"),
    ("[[source]\nbroken", "invalid TOML"),
])
def test_a_broken_config_is_refused_with_one_error_line(tmp_path: Path, caplog: Any, broken: str, says: str) -> None:
    cfg = write(tmp_path / "c.toml", GOOD + broken)
    with caplog.at_level(logging.ERROR, logger="listener.daemon"):
        assert read_reloaded_config(cfg, "SIGHUP", None, source_trigger) is None
    [record] = caplog.records
    assert record.name == "listener.daemon" and record.levelno == logging.ERROR
    message = record.getMessage()
    assert message.startswith("config reload refused (SIGHUP): ") and says in message
    assert message.endswith("— still running the previous config")


def test_restart_only_settings_warn_by_name(tmp_path: Path, caplog: Any) -> None:
    old = DaemonSettings()
    new = DaemonSettings(workers=8, health_port=None, queue="local")
    with caplog.at_level(logging.WARNING, logger="listener.daemon"):
        warn_restart_needed(old, new)
        warn_restart_needed(old, new, ("queue",))
    assert [r.getMessage() for r in caplog.records] == [
        "config reload: [daemon] health_port changed; that needs a restart",
        "config reload: [daemon] workers changed; that needs a restart",
        "config reload: [daemon] queue changed; that needs a restart",
    ]


def test_a_taken_health_port_is_a_clear_error_and_none_means_off() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerError, match=rf"cannot serve health on 127.0.0.1:{port}: .*--health-port"):
            bind_health_server(DaemonSettings(health_port=port), lambda: (200, {}), lambda: "")
    assert bind_health_server(DaemonSettings(health_port=None), lambda: (200, {}), lambda: "") is None
    assert health_address(None) == "off"
    server = bind_health_server(DaemonSettings(health_port=0), lambda: (200, {}), lambda: "")
    assert server is not None
    server.start()  # bound, not started: stop() waits for the serving loop
    try:
        host, bound = server.address
        assert health_address(server) == f"http://{host}:{bound}" and bound > 0
    finally:
        server.stop()
