"""Getting digests and alerts to people: SMTP email, Slack incoming webhook, generic JSON webhook, or a file.

A message is built once as an `Outgoing` (subject, text, HTML with inline PNGs, Slack blocks, JSON)
and each target picks the representation it speaks. Targets are independent: one failing never
stops the others, and each result says what went wrong without ever printing a secret (webhook
URLs carry their token in the path, so only scheme and host are shown).

Config: `[[digest]]` tables (name, watches, since, format, link, deliver = [...]) and
`[alerts] deliver = [...]`. Targets:
  smtp     host, port, security = "starttls"|"ssl"|"none", user, password = { env }, from, to, ca_file
  slack    url = { env = "SLACK_WEBHOOK_URL" }
  webhook  url, headers = { Authorization = { env = … } }   (POSTs the JSON form)
  file     path with {name} {date} {time}, format = "html"|"md"|"text"|"json"
Every network target takes `timeout` (seconds, default 15).
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from listener.config import Config, Secret, parse_duration
from listener.digest import Digest, Quote, change_label, render_markdown, render_text
from listener.digest_html import (
    CHART_CID,
    EmailDigest,
    build_email_digest,
    chart_png,
    from_digest,
    render_html,
    render_standalone,
    safe_url,
)
from listener.digest_topics import as_data as topics_data
from listener.errors import ConfigError, ListenerError
from listener.types import utcnow
from storage import Store

KINDS = ("smtp", "slack", "webhook", "file")
FORMATS = ("html", "md", "text", "json")
DEFAULT_TIMEOUT = 15.0
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class DeliveryError(ListenerError):
    """A target refused or could not be reached. The message names the target, never its secrets."""


@dataclass(frozen=True)
class Target:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    where: str = "deliver"

    def value(self, key: str, default: Any = None) -> Any:
        """A parameter with `{ env = … }` resolved (ConfigError names the variable, not a value)."""
        raw = self.params.get(key, default)
        return raw.get() if isinstance(raw, Secret) else raw

    def describe(self) -> str:
        """Human label safe for logs: hosts and paths, never credentials or webhook tokens."""
        if self.kind == "smtp":
            to = self.params.get("to", [])
            rcpt = ", ".join(to) if isinstance(to, list) else str(to)
            return f"smtp {self.params.get('host')}:{_smtp_port(self)} → {rcpt}"
        if self.kind in ("slack", "webhook"):
            url = self.params.get("url")
            return f"{self.kind} {_redact(url.get_or_none() if isinstance(url, Secret) else url)}"
        return f"file {self.params.get('path')}"


@dataclass(frozen=True)
class DigestJob:
    """One `[[digest]]` table: a team's digest, its watches, period, and where it goes."""

    name: str
    watches: tuple[str, ...] = ()
    since: timedelta = timedelta(hours=24)
    format: str = "html"
    link: str | None = None
    targets: tuple[Target, ...] = ()
    topics: tuple[str, ...] = ()  # the taxonomy topics its "Topics and aspects" section shows (all if empty)
    languages: tuple[str, ...] = ()  # ISO 639-1 codes it counts (all if empty; undetected ones always)


@dataclass
class Outgoing:
    """One message in every shape a target may want."""

    subject: str
    text: str
    html: str | None = None  # references images by cid:
    images: dict[str, bytes] = field(default_factory=dict)  # Content-ID (without <>) → PNG
    documents: dict[str, str] = field(default_factory=dict)  # format → standalone content for files
    slack: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryResult:
    target: str
    ok: bool
    detail: str = ""


def _redact(url: object) -> str:
    if not isinstance(url, str) or not url:
        return "(no url)"
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…" if parts.scheme else "(invalid url)"


def _smtp_port(t: Target) -> int:
    security = t.params.get("security", "starttls")
    return int(t.params.get("port") or {"ssl": 465, "starttls": 587}.get(security, 25))


def parse_targets(raw: Any, where: str, path: str | None = None) -> tuple[Target, ...]:
    """Validate `deliver = [...]` up front so a typo fails at config time, not at 7am."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        example = '[{ kind = "file", path = "digest.html" }]'
        raise ConfigError(f"deliver must be a list of tables, e.g. {example}", path=path, key=where)
    out = []
    for i, item in enumerate(raw):
        key = f"{where}[{i}]"
        if not isinstance(item, dict) or item.get("kind") not in KINDS:
            raise ConfigError(f"needs kind = one of {', '.join(KINDS)}", path=path, key=key)
        kind = item["kind"]
        need = {"smtp": ("host", "from", "to"), "slack": ("url",), "webhook": ("url",), "file": ("path",)}[kind]
        missing = [k for k in need if not item.get(k)]
        if missing:
            raise ConfigError(f"{kind} target needs {', '.join(missing)}", path=path, key=key)
        if kind == "smtp":
            if isinstance(item["to"], str):
                item = {**item, "to": [item["to"]]}
            if item.get("security", "starttls") not in ("starttls", "ssl", "none"):
                raise ConfigError('security must be "starttls", "ssl" or "none"', path=path, key=key)
        if item.get("format") is not None and item["format"] not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}", path=path, key=key)
        out.append(Target(kind, {k: v for k, v in item.items() if k != "kind"}, key))
    return tuple(out)


def digest_jobs(config: Config) -> list[DigestJob]:
    """`[[digest]]` (several teams) or a single `[digest]` table; none configured → []."""
    raw = config.sections.get("digest")
    path = str(config.path) if config.path else None
    tables = [raw] if isinstance(raw, dict) else (raw or [])
    jobs = []
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError("must be a table ([[digest]])", path=path, key=f"digest[{i}]")
        name = str(table.get("name") or ("default" if len(tables) == 1 else f"digest-{i + 1}"))
        watches = _names(table, "watches", f"digest.{name}", path)
        fmt = table.get("format", "html")
        if fmt not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}", path=path, key=f"digest.{name}.format")
        try:
            since = parse_duration(table.get("since", "24h"))
        except ValueError as exc:
            raise ConfigError(str(exc), path=path, key=f"digest.{name}.since") from None
        jobs.append(DigestJob(name, watches, since, fmt, table.get("link"),
                              parse_targets(table.get("deliver"), f"digest.{name}.deliver", path),
                              _names(table, "topics", f"digest.{name}", path),
                              _names(table, "languages", f"digest.{name}", path)))
    return jobs


def _names(table: dict[str, Any], key: str, where: str, path: str | None) -> tuple[str, ...]:
    """A string or a list of strings under `key` (watch / topic names, language codes) as a tuple."""
    value = table.get(key) or []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key} must be a list of strings", path=path, key=f"{where}.{key}")
    return tuple(value)


def build_email(out: Outgoing, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """multipart/alternative: text/plain, then multipart/related(text/html + inline image/png by Content-ID)."""
    msg = EmailMessage()
    msg["Subject"] = out.subject
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].strip("> ") or None)
    msg.set_content(out.text)
    if out.html is not None:
        msg.add_alternative(out.html, subtype="html")
        html_part = msg.get_body(preferencelist=("html",))
        assert html_part is not None
        for cid, png in out.images.items():
            html_part.add_related(png, maintype="image", subtype="png", cid=f"<{cid}>", filename=f"{cid}.png",
                                  disposition="inline")
    return msg


def send_smtp(out: Outgoing, target: Target) -> str:
    host = str(target.params["host"])
    port = _smtp_port(target)
    security = target.params.get("security", "starttls")
    user, password = target.value("user"), target.value("password")
    timeout = float(target.params.get("timeout", DEFAULT_TIMEOUT))
    if password and security == "none" and host not in _LOOPBACK:
        raise DeliveryError(f"{target.describe()}: refusing to send a password unencrypted; use starttls or ssl")
    recipients = list(target.params["to"])
    msg = build_email(out, str(target.params["from"]), recipients)
    context = ssl.create_default_context(cafile=target.params.get("ca_file"))  # ca_file: a private relay's CA
    try:
        client: smtplib.SMTP = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if security == "ssl"
                                else smtplib.SMTP(host, port, timeout=timeout))
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if user and password:
                client.login(str(user), str(password))
            refused = client.send_message(msg, to_addrs=recipients)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"{target.describe()}: login refused ({exc.smtp_code})") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"{target.describe()}: {exc.__class__.__name__}: {exc}") from None
    if refused:
        raise DeliveryError(f"{target.describe()}: refused recipients {', '.join(sorted(refused))}")
    return f"sent to {len(recipients)} recipient(s)"


def _post(target: Target, body: dict[str, Any]) -> str:
    url = target.value("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryError(f"{target.describe()}: url must be http(s)")
    raw_headers = target.params.get("headers") or {}
    headers = {str(k): str(v.get() if isinstance(v, Secret) else v) for k, v in raw_headers.items()}
    timeout = float(target.params.get("timeout", DEFAULT_TIMEOUT))
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:  # the exception text can contain the URL: never print it
        raise DeliveryError(f"{target.describe()}: {exc.__class__.__name__}") from None
    if response.status_code >= 300:
        snippet = response.text[:200].replace(url, "…")
        raise DeliveryError(f"{target.describe()}: HTTP {response.status_code} {snippet}".rstrip())
    return f"HTTP {response.status_code}"


def write_file(out: Outgoing, target: Target, default_format: str) -> str:
    fmt = target.params.get("format") or default_format
    content = out.documents.get(fmt)
    if content is None:
        content = json.dumps(out.data, ensure_ascii=False, indent=2, default=str) if fmt == "json" else out.text
    now = utcnow()
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(out.data.get("name") or out.data.get("watch") or "digest")).strip(".")
    path = Path(str(target.params["path"]).replace("{date}", f"{now:%Y-%m-%d}").replace("{time}", f"{now:%H%M}")
                .replace("{name}", name or "digest"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(path)  # readers never see half a file
    except OSError as exc:
        raise DeliveryError(f"file {path}: {exc.strerror or exc}") from None
    return f"wrote {path}"


def send(out: Outgoing, target: Target, *, default_format: str = "html") -> DeliveryResult:
    """Deliver to one target; failures become a result (with a safe message), never an exception."""
    try:
        if target.kind == "smtp":
            detail = send_smtp(out, target)
        elif target.kind == "slack":
            detail = _post(target, out.slack or {"text": out.subject})
        elif target.kind == "webhook":
            detail = _post(target, out.data)
        else:
            detail = write_file(out, target, default_format)
    except ListenerError as exc:  # DeliveryError, or ConfigError for an unset env variable
        return DeliveryResult(target.describe(), False, str(exc))
    return DeliveryResult(target.describe(), True, detail)


def send_all(out: Outgoing, targets: Sequence[Target], *, default_format: str = "html") -> list[DeliveryResult]:
    return [send(out, t, default_format=default_format) for t in targets]


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters: user text must not become <links|…> or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def digest_text(ed: EmailDigest) -> str:
    """The plain-text part: the lead's `render_text` plus the want-lists the HTML shows."""
    lines = [render_text(ed.base).rstrip(), "", "What customers want (heuristic cues):"]
    for w in ed.wants:
        lines.append(f"- {w.title}: {w.count} ({change_label(w.count, w.previous)})")
        lines += [f"    \"{q.text}\" — {q.author or 'someone'} ({q.source}) {safe_url(q.url) or ''}".rstrip()
                  for q in w.quotes]
    if ed.link:
        lines += ["", f"Open the listener: {ed.link}"]
    return "\n".join(lines) + "\n"


def digest_data(ed: EmailDigest) -> dict[str, Any]:
    """JSON for generic webhooks and `format = "json"` files: numbers and quotes, no markup."""
    d = ed.base

    def quote(q: Quote) -> dict[str, Any]:
        return {"text": q.text, "url": safe_url(q.url), "author": q.author, "source": q.source,
                "created_at": q.created_at.isoformat(), "sentiment": q.sentiment}

    return {
        "type": "digest", "name": ed.name, "subject": ed.subject, "since": d.since.isoformat(),
        "until": d.until.isoformat(), "total": d.total, "previous_total": d.previous_total,
        "sentiment": dict(d.sentiment), "net_sentiment": d.net_sentiment, "by_kind": dict(d.by_kind),
        "by_source": dict(d.by_source),
        "watches": [{"name": w.name, "competitor": w.competitor, "count": w.count, "previous": w.previous,
                     "sentiment": dict(w.sentiment), "quotes": [quote(q) for q in w.quotes]} for w in d.watches],
        "wants": [{"key": w.key, "count": w.count, "previous": w.previous, "quotes": [quote(q) for q in w.quotes]}
                  for w in ed.wants],
        "health": [{"source": h.source, "problem": h.problem} for h in d.health],
        "topics": topics_data(d.topics),
        "link": ed.link,
    }


def digest_slack(ed: EmailDigest) -> dict[str, Any]:
    """Block Kit summary: headline numbers, the top complaint and request, health warnings, a link."""
    fields = [{"type": "mrkdwn", "text": f"*{h.label}*\n{h.value}  _{h.change}_"} for h in ed.headlines]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"Customer voice · {ed.name}"[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{ed.base.since:%b %d %H:%M} – "
                                                                    f"{ed.base.until:%b %d %H:%M} UTC"}]},
        {"type": "section", "fields": fields},
    ]
    if ed.base.health:
        warn = "\n".join(f"• *{slack_escape(h.source)}*: {slack_escape(h.problem)}" for h in ed.base.health)
        warn = f":warning: *Source problems*\n{warn}"[:2900]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": warn}})
    for w in ed.wants[:2]:
        if w.quotes:
            q = w.quotes[0]
            url = safe_url(q.url)
            who = slack_escape(q.author or "someone") + (f" · <{url}|{slack_escape(q.source)}>" if url else "")
            text = f"*{w.title}* ({w.count})\n>{slack_escape(q.text)}\n— {who}"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}})
    movers = ed.base.topics.movers if ed.base.topics else []
    if movers:
        lines = [f"• *{slack_escape(t.name)}* {t.previous} → {t.count}" for t in movers]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": ("*Biggest topic movers*\n"
                                                                              + "\n".join(lines))[:2900]}})
    if ed.link:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open the full digest"}, "url": ed.link}]})
    return {"text": ed.subject, "blocks": blocks}


def digest_outgoing(ed: EmailDigest) -> Outgoing:
    """Every shape of this digest, chart rendered once (none when there is no series to draw)."""
    png = chart_png(ed)
    return Outgoing(
        subject=ed.subject, text=digest_text(ed), html=render_html(ed, f"cid:{CHART_CID}" if png else ""),
        images={CHART_CID: png} if png else {},
        documents={"html": render_standalone(ed, png), "md": render_markdown(ed.base), "text": digest_text(ed)},
        slack=digest_slack(ed), data=digest_data(ed),
    )


def deliver_digest(digest: Digest | EmailDigest, config: Config, *, store: Store | None = None,
                   targets: Sequence[Target] | None = None) -> list[DeliveryResult]:
    """The daemon's hook: send a digest to every configured `[[digest]]` (or to `targets`).

    An `EmailDigest` goes to its own job's targets. A plain `Digest` (what the daemon builds) is rebuilt
    per job with `store` for the same period, so each team gets its watches, chart and want-lists;
    without a store it is sent as is (numbers and quotes only).
    """
    jobs = digest_jobs(config)
    if isinstance(digest, EmailDigest):
        job = next((j for j in jobs if j.name == digest.name), None)
        chosen = targets if targets is not None else (job.targets if job else ())
        if not chosen:
            raise ConfigError(f"no [[digest]] named {digest.name!r} with deliver targets")
        return send_all(digest_outgoing(digest), chosen, default_format=job.format if job else "html")
    results: list[DeliveryResult] = []
    for job in jobs if targets is None else [DigestJob("default", targets=tuple(targets))]:
        if not job.targets:
            continue
        if store is not None:
            ed = build_email_digest(store, config, since=digest.since, until=digest.until, watches=job.watches,
                                    name=job.name, link=job.link, topics=job.topics, languages=job.languages)
        else:
            ed = from_digest(digest, job.name, job.link)
        results += send_all(digest_outgoing(ed), job.targets, default_format=job.format)
    return results
