"""Secrets stay secret: values of env-referenced credentials never reach logs, error messages,
`listener sources`/`check`, the digest, send-digest output or the API — even when a failing server
echoes every request header back. And credentials are never sent to another origin."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from listener import cli
from listener.api import create_app
from listener.config import load_config
from listener.http import HttpClient
from listener.pipeline import Pipeline
from storage import Store
from tests.support.server import ReplayServer, Reply, Seen

SECRETS = {
    "DISCOURSE_API_KEY": "dk-3f9a1c77e0b24d55a9c1-SECRET",
    "REDDIT_CLIENT_ID": "rcid-8b2f4e1d",
    "REDDIT_CLIENT_SECRET": "rcs-71d0c9a2b8e34f66-SECRET",
    "SMTP_PASSWORD": "smtp-pw-c4e19b07aa-SECRET",
    "MASTODON_TOKEN": "mt-0aa9e3b6c2d14f08-SECRET",
}


def echo(status: int) -> Callable[[Seen], Reply]:
    """A failing server that puts every request header (credentials included) into its body and headers."""

    def handler(seen: Seen) -> Reply:
        dump = json.dumps(seen.headers)
        return Reply(
            status, dump.encode(), headers={"X-Echo": dump.replace("\n", " ")[:4000]}, content_type="application/json"
        )

    return handler


def write_config(tmp_path: Path, server: ReplayServer) -> Path:
    cfg = tmp_path / "listener.toml"
    cfg.write_text(
        f"""
[storage]
database = "{tmp_path / "secrets.db"}"

[[watch]]
name = "acme"
terms = ["acme"]

[[source]]
name = "forum"
kind = "discourse"
base_url = "{server.url}/forum"
mode = "latest"
api_key = {{ env = "DISCOURSE_API_KEY" }}
rate = 1000

[[source]]
name = "masto"
kind = "mastodon"
base_url = "{server.url}/masto"
queries = ["acme"]
access_token = {{ env = "MASTODON_TOKEN" }}
rate = 1000

[[source]]
name = "reddit"
kind = "reddit"
subreddits = ["acme"]
client_id = {{ env = "REDDIT_CLIENT_ID" }}
client_secret = {{ env = "REDDIT_CLIENT_SECRET" }}
enabled = false

[[digest]]
name = "marketing"
since = "30d"

[[digest.deliver]]
kind = "smtp"
host = "127.0.0.1"
port = 9
security = "none"
from = "listener@example.com"
to = ["marketing@example.com"]
user = "listener"
password = {{ env = "SMTP_PASSWORD" }}
""",
        encoding="utf-8",
    )
    return cfg


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("LISTENER_CONFIG", raising=False)
    monkeypatch.delenv("LISTENER_DB", raising=False)
    yield


def assert_clean(text: str, where: str) -> None:
    for name, value in SECRETS.items():
        assert value not in text, f"{name} leaked into {where}"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def fail_everything(server: ReplayServer, status: int) -> None:
    for path in ("/forum/latest.json", "/masto/api/v2/search", "/masto/api/v1/timelines/tag/acme"):
        server.routes[path] = echo(status)


def fetch_in_process(cfg: Path, db: Path) -> None:
    """The 500 case through Pipeline with a no-op sleep (the CLI would back off for real between retries)."""
    http = HttpClient("secrets-test/1.0", default_rate=1000.0, sleep=lambda s: None, timeout=5.0)
    with Store.open(db) as store:
        runs = Pipeline(load_config(cfg), store, http).run(["forum", "masto"])
    http.close()
    assert [r.status for r in runs] == ["failed", "failed"] and all("HTTP 500" in (r.error or "") for r in runs)


def our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every record except httpcore's DEBUG trace (see test_httpcore_debug_trace_logs_echoed_headers)."""
    return "\n".join(f"{r.name}: {r.getMessage()}" for r in caplog.records if not r.name.startswith("httpcore"))


@pytest.mark.parametrize("status", [401, 500])
def test_no_secret_in_logs_errors_cli_digest_or_api(
    secret_env: None,
    replay_server: ReplayServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    fail_everything(replay_server, status)
    cfg = write_config(tmp_path, replay_server)
    outputs = {}
    if status == 401:
        code, outputs["fetch output"] = run_cli(capsys, "-c", str(cfg), "-v", "fetch")
        assert code == 1  # both sources failed …
    else:
        fetch_in_process(cfg, tmp_path / "secrets.db")
    sent = [h.headers for h in replay_server.requests]
    assert any(h.get("api-key") == SECRETS["DISCOURSE_API_KEY"] for h in sent)  # … having sent the secrets
    assert any(h.get("authorization") == f"Bearer {SECRETS['MASTODON_TOKEN']}" for h in sent)
    with Store.open(tmp_path / "secrets.db") as store:
        states = store.source_states()
        assert {s.source for s in states if f"HTTP {status}" in (s.last_error or "")} == {"forum", "masto"}
        outputs["stored errors"] = json.dumps([(s.last_error, s.notes) for s in states])
        outputs["run history"] = json.dumps([r.error for r in store.runs()])
        app = create_app(store, load_config(cfg))
        with TestClient(app) as client:
            outputs["/api/sources"] = client.get("/api/sources").text
            outputs["/api/stats"] = client.get("/api/stats").text
    assert f"HTTP {status}" in outputs["/api/sources"]
    for verb in (
        ["sources"],
        ["check"],
        ["digest", "--since", "30d"],
        ["send-digest", "--dry-run"],
        ["send-digest"],
        ["state", "show", "forum"],
        ["state", "show", "masto"],
    ):
        _, out = run_cli(capsys, "-c", str(cfg), *verb)
        outputs[" ".join(verb)] = out
    assert "reddit" in outputs["sources"] and "127.0.0.1" in outputs["send-digest"]  # the SMTP failure was reported
    outputs["logs"] = our_logs(caplog)
    for where, text in outputs.items():
        assert_clean(text, where)


def test_httpcore_debug_trace_logs_echoed_headers(
    secret_env: None, replay_server: ReplayServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fail_everything(replay_server, 500)
    cfg = write_config(tmp_path, replay_server)
    fetch_in_process(cfg, tmp_path / "secrets.db")
    assert_clean(caplog.text, "DEBUG logs")


def test_secret_values_never_in_config_reprs(secret_env: None, replay_server: ReplayServer, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, replay_server))
    text = repr(config) + str(config) + json.dumps(config.sections, default=str)
    assert_clean(text, "the Config repr")


def test_credentials_not_forwarded_to_another_origin(
    secret_env: None, replay_server: ReplayServer, tmp_path: Path
) -> None:
    other = ReplayServer().start()  # another origin (another port)
    try:
        other.routes["/latest.json"] = Reply(body=b'{"topic_list": {"topics": []}}', content_type="application/json")
        replay_server.routes["/forum/latest.json"] = Reply(302, headers={"Location": f"{other.url}/latest.json"})
        for path in ("/masto/api/v2/search", "/masto/api/v1/timelines/tag/acme"):
            replay_server.routes[path] = Reply(302, headers={"Location": f"{other.url}/latest.json"})
        config = load_config(write_config(tmp_path, replay_server))
        http = HttpClient("secrets-test/1.0", default_rate=1000.0, sleep=lambda s: None, timeout=5.0)
        with Store.open(tmp_path / "redirect.db") as store:
            Pipeline(config, store, http).run(["forum", "masto"])
        http.close()
        for request in other.requests:
            assert_clean(json.dumps(request.headers), f"a request to another origin ({request.path})")
    finally:
        other.stop()
