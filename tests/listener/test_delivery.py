"""Delivery end to end: a real SMTP server and webhook receivers on 127.0.0.1, files, config, the CLI."""

from __future__ import annotations

import email
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from bs4 import BeautifulSoup
from typer.testing import CliRunner

from listener.config import parse_config
from listener.delivery import Target, deliver_digest, digest_jobs, digest_outgoing, parse_targets, send
from listener.digest import build_digest
from listener.digest_html import CHART_CID, build_email_digest
from listener.errors import ConfigError
from tests.listener.test_digest_html import CONFIG, NOW, assert_inert, hostile_store, realistic


class Inbox:
    """aiosmtpd handler + authenticator: keeps every message and accepts one user/password."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.rcpts: list[list[str]] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        msg = email.message_from_bytes(envelope.content, policy=default_policy)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.rcpts.append(list(envelope.rcpt_tos))
        return "250 OK"

    def __call__(self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"digest-bot", b"s3cret-pw")
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox, auth_require_tls=False)
    controller.start()
    yield inbox, port
    controller.stop()


class Receiver:
    """A webhook endpoint on 127.0.0.1 recording JSON bodies; `status` sets the reply."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.status = 200
        outer = self

        class _H(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.bodies.append((self.path, json.loads(raw), {k.lower(): v for k, v in self.headers.items()}))
                body = b"ok" if outer.status < 300 else b"no such hook"
                self.send_response(outer.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def smtp_target(port: int, **extra: Any) -> Target:
    raw = {"kind": "smtp", "host": "127.0.0.1", "port": port, "security": "none", "from": "Listener <bot@acme.example>",
           "to": ["marketing@acme.example", "pm@acme.example"], "user": "digest-bot",
           "password": {"env": "TEST_SMTP_PASSWORD"}, **extra}
    config = parse_config({"digest": {"deliver": [raw]}})
    return digest_jobs(config)[0].targets[0]


def test_digest_arrives_by_smtp_as_text_html_and_inline_chart(
    tmp_path: Path, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = smtp
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
    store, config = realistic(tmp_path)
    ed = build_email_digest(store, config, until=NOW, link="https://listener.acme.example/")
    result = send(digest_outgoing(ed), smtp_target(port))
    assert result.ok, result.detail
    assert inbox.logins == ["digest-bot"]
    assert inbox.rcpts == [["marketing@acme.example", "pm@acme.example"]]
    msg = inbox.messages[0]
    assert msg["Subject"] == ed.subject and "8 mentions" in msg["Subject"]
    assert msg.get_content_type() == "multipart/alternative"
    text_part, related = msg.iter_parts()
    assert text_part.get_content_type() == "text/plain" and related.get_content_type() == "multipart/related"
    assert "acme sync lost my notes again" in text_part.get_content()
    assert "What customers want" in text_part.get_content()
    html_part, png_part = related.iter_parts()
    assert html_part.get_content_type() == "text/html" and png_part.get_content_type() == "image/png"
    assert png_part["Content-ID"] == f"<{CHART_CID}>"
    assert png_part.get_content()[:8] == b"\x89PNG\r\n\x1a\n"
    soup = BeautifulSoup(html_part.get_content(), "html.parser")
    img = soup.find("img")
    assert img is not None and img["src"] == f"cid:{CHART_CID}"
    hrefs = {a["href"] for a in soup.find_all("a")}
    assert {"https://forum.example/t/1", "https://listener.acme.example/"} <= hrefs
    store.close()


def test_hostile_content_arrives_inert_by_email(
    tmp_path: Path, smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox, port = smtp
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
    store, config = hostile_store(tmp_path)
    result = send(digest_outgoing(build_email_digest(store, config, until=NOW)), smtp_target(port))
    assert result.ok, result.detail
    html_part = inbox.messages[0].get_body(preferencelist=("html",))
    assert html_part is not None
    assert_inert(html_part.get_content())
    store.close()


def test_smtp_failures_are_clear_and_never_show_the_password(
    smtp: tuple[Inbox, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    inbox, port = smtp
    store, config = realistic(tmp_path)
    out = digest_outgoing(build_email_digest(store, config, until=NOW))
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong-pw")
    bad = send(out, smtp_target(port))
    assert not bad.ok and "login refused" in bad.detail and "wrong-pw" not in bad.detail
    monkeypatch.delenv("TEST_SMTP_PASSWORD")
    unset = send(out, smtp_target(port))
    assert not unset.ok and "TEST_SMTP_PASSWORD is not set" in unset.detail
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
    plain = send(out, smtp_target(port, host="mail.acme.example"))  # refused before any connection is made
    assert not plain.ok and "unencrypted" in plain.detail and "s3cret" not in plain.detail
    closed = send(out, smtp_target(free_port()))
    assert not closed.ok and "ConnectionRefusedError" in closed.detail
    assert inbox.messages == []
    store.close()


def test_slack_and_webhook_receive_summary_and_json(tmp_path: Path, receiver: Receiver,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SLACK_URL", f"{receiver.url}/services/T000/B000/XXXXSECRET")
    monkeypatch.setenv("TEST_HOOK_TOKEN", "tok-123")
    config = parse_config({**CONFIG, "digest": [{"name": "marketing", "watches": ["acme"], "link": "https://l.example/",
                                                "deliver": [
                                                    {"kind": "slack", "url": {"env": "TEST_SLACK_URL"}},
                                                    {"kind": "webhook", "url": f"{receiver.url}/hook",
                                                     "headers": {"Authorization": {"env": "TEST_HOOK_TOKEN"}}},
                                                ]}]})
    store, _ = realistic(tmp_path)
    # the daemon's call: a plain Digest + the store → rebuilt per team with its watches
    results = deliver_digest(build_digest(store, config, until=NOW), config, store=store)
    assert [r.ok for r in results] == [True, True], results
    assert "XXXXSECRET" not in results[0].target
    (slack_path, slack, _), (hook_path, data, headers) = receiver.bodies
    assert slack_path == "/services/T000/B000/XXXXSECRET"
    assert slack["blocks"][0]["type"] == "header" and "marketing" in slack["blocks"][0]["text"]["text"]
    assert slack["blocks"][-1]["elements"][0]["url"] == "https://l.example/"
    assert any("acme sync lost my notes again" in json.dumps(b) for b in slack["blocks"])
    assert hook_path == "/hook" and headers["authorization"] == "tok-123"
    assert data["type"] == "digest" and data["name"] == "marketing" and data["total"] == 7  # acme only
    assert {w["key"]: w["count"] for w in data["wants"]} == {"complaints": 3, "requests": 1, "questions": 1}
    store.close()


def test_webhook_errors_name_the_host_not_the_token(receiver: Receiver, tmp_path: Path) -> None:
    store, config = realistic(tmp_path)
    out = digest_outgoing(build_email_digest(store, config, until=NOW))
    receiver.status = 404
    secret_url = f"{receiver.url}/services/T0/B0/TOPSECRET"
    (target,) = parse_targets([{"kind": "slack", "url": secret_url}], "deliver")
    result = send(out, target)
    assert not result.ok and "HTTP 404" in result.detail and "TOPSECRET" not in result.detail + result.target
    (gone,) = parse_targets([{"kind": "webhook", "url": f"http://127.0.0.1:{free_port()}/x/TOPSECRET"}], "d")
    failed = send(out, gone)
    assert not failed.ok and "ConnectError" in failed.detail and "TOPSECRET" not in failed.detail
    store.close()


def test_hostile_content_is_escaped_for_slack(tmp_path: Path) -> None:
    store, config = hostile_store(tmp_path)
    slack = json.dumps(digest_outgoing(build_email_digest(store, config, until=NOW)).slack)
    assert "<script>" not in slack and "&lt;script&gt;" in slack and "javascript:" not in slack.lower()
    store.close()


def test_file_target_writes_standalone_html(tmp_path: Path) -> None:
    store, config = realistic(tmp_path)
    (target,) = parse_targets([{"kind": "file", "path": str(tmp_path / "out" / "{name}-{date}.html")}], "deliver")
    result = send(digest_outgoing(build_email_digest(store, config, until=NOW, name="team")), target)
    assert result.ok, result.detail
    (written,) = (tmp_path / "out").glob("team-*.html")
    assert 'src="data:image/png;base64,' in written.read_text(encoding="utf-8")
    store.close()


@pytest.mark.parametrize(("deliver", "message"), [
    ([{"kind": "fax"}], "kind = one of"),
    ([{"kind": "smtp", "host": "h"}], "needs from, to"),
    ([{"kind": "smtp", "host": "h", "from": "a@b", "to": "c@d", "security": "tls"}], "security must be"),
    ([{"kind": "file", "path": "x", "format": "pdf"}], "format must be"),
    ({"kind": "file"}, "must be a list"),
])
def test_bad_deliver_config_fails_early(deliver: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        digest_jobs(parse_config({"digest": [{"name": "x", "deliver": deliver}]}))


def test_literal_secrets_are_refused_by_the_config() -> None:
    with pytest.raises(ConfigError, match="looks like a secret"):
        parse_config({"digest": {"deliver": [{"kind": "smtp", "host": "h", "from": "a", "to": "b",
                                              "password": "hunter2"}]}})


def test_send_digest_verb_dry_run_and_send(tmp_path: Path, receiver: Receiver) -> None:
    from listener.cli import root
    from listener.cli_digest import register

    store, _ = realistic(tmp_path)
    store.close()
    cfg = tmp_path / "listener.toml"
    cfg.write_text(f"""
[storage]
database = "t.db"
[[watch]]
name = "acme"
terms = "acme"
[[digest]]
name = "marketing"
since = "7d"
deliver = [{{ kind = "webhook", url = "{receiver.url}/hook/SECRETPATH" }},
           {{ kind = "file", path = "{tmp_path}/d/{{name}}.md", format = "md" }}]
""", encoding="utf-8")
    app = typer.Typer()
    app.callback()(root)
    register(app)
    runner = CliRunner()
    dry = runner.invoke(app, ["-c", str(cfg), "send-digest", "--dry-run"], env={"COLUMNS": "200"})
    assert dry.exit_code == 0, dry.output
    assert "would deliver to webhook http://127.0.0.1/…" in dry.output and "SECRETPATH" not in dry.output
    assert receiver.bodies == [] and not (tmp_path / "d").exists()
    sent = runner.invoke(app, ["-c", str(cfg), "send-digest", "--name", "marketing"], env={"COLUMNS": "200"})
    assert sent.exit_code == 0, sent.output
    assert len(receiver.bodies) == 1 and (tmp_path / "d" / "marketing.md").read_text().startswith("# Customer voice")
    receiver.status = 500
    failed = runner.invoke(app, ["-c", str(cfg), "send-digest"], env={"COLUMNS": "200"})
    assert failed.exit_code == 1 and "HTTP 500" in failed.output
    unknown = runner.invoke(app, ["-c", str(cfg), "send-digest", "--name", "nope"])
    assert unknown.exit_code != 0


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (the relay's own CA, as a private relay would have)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return d / "cert.pem", d / "key.pem"


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_smtp_over_tls_verifies_the_server(security: str, cert: tuple[Path, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(*cert)
    inbox = Inbox()
    port = free_port()
    # aiosmtpd does not count implicit TLS as TLS for its AUTH check, hence auth_require_tls=False there
    tls: dict[str, Any] = ({"tls_context": server_ctx, "require_starttls": True} if security == "starttls"
                           else {"ssl_context": server_ctx, "auth_require_tls": False})
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox, **tls)
    controller.start()
    try:
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret-pw")
        store, config = realistic(tmp_path)
        out = digest_outgoing(build_email_digest(store, config, until=NOW))
        untrusted = send(out, smtp_target(port, security=security))  # self-signed and not configured: refused
        assert not untrusted.ok and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
        trusted = send(out, smtp_target(port, security=security, ca_file=str(cert[0])))
        assert trusted.ok, trusted.detail
        assert inbox.logins == ["digest-bot"] and len(inbox.messages) == 1  # login only ever happened over TLS
        store.close()
    finally:
        controller.stop()
