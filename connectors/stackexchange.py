"""Stack Exchange (API 2.3): questions matching watch phrases and/or tags on one site, plus their answers.

Accepted answers are the community's knowledge, so `is_accepted` and `accepted_answer_id` are kept.
Questions are asked for by *activity* since the cursor (within the backfill window), so a new answer
on a question asked weeks ago is still found. Everything is collected before anything is yielded,
then sent oldest-first. The API's `backoff` is passed to the HttpClient; a nearly spent daily quota
ends the run early without moving the cursor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base import Connector, describe, from_epoch, list_of, strict_int, time_batches
from connectors.html import html_to_text
from listener.errors import ParseError, SourceError
from listener.types import Batch, Cursor, Mention, cap_raw, utcnow

log = logging.getLogger(__name__)

API_URL = "https://api.stackexchange.com/2.3"
PAGE_SIZE = 100
QUOTA_FLOOR = 10
BATCH_SIZE = 100


def _when(value: Any) -> datetime | None:
    return from_epoch(value)


def site_url(site: str) -> str:
    """Where a site's pages live: stackoverflow → stackoverflow.com, math → math.stackexchange.com."""
    if "." in site:
        return f"https://{site}"
    if site in ("stackoverflow", "superuser", "serverfault", "askubuntu", "stackapps", "mathoverflow"):
        return f"https://{site}.com" if site != "mathoverflow" else "https://mathoverflow.net"
    return f"https://{site}.stackexchange.com"


def parse_wrapper(payload: Any, *, source: str) -> tuple[list[Any], dict[str, Any]]:
    """The common wrapper → (items, facts: has_more, quota_remaining, backoff, page)."""
    if isinstance(payload, Mapping) and "error_id" in payload:
        raise ParseError(source, f"Stack Exchange error {payload.get('error_name')}: {payload.get('error_message')}")
    if not isinstance(payload, Mapping) or not isinstance(payload.get("items"), list):
        raise ParseError(source, f"expected a JSON object with 'items' but got {describe(payload)}")
    facts = {k: payload.get(k) for k in ("has_more", "quota_remaining", "quota_max", "backoff", "page")}
    return list(payload["items"]), facts


def _post(item: Mapping[str, Any], *, source: str, kind: str, site: str, fetched_at: datetime,
          question: Mapping[str, Any] | None) -> Mention | None:
    is_answer = question is not None or "answer_id" in item
    native = strict_int(item.get("answer_id") if is_answer else item.get("question_id"))
    qid = strict_int(item.get("question_id"))
    created = _when(item.get("creation_date"))
    if native is None or qid is None or created is None:
        return None
    title = None if is_answer else (html_to_text(item.get("title")) or None)
    text = html_to_text(item.get("body"))
    if not title and not text:
        return None
    owner = item["owner"] if isinstance(item.get("owner"), Mapping) else {}
    link = item.get("link") if isinstance(item.get("link"), str) and item["link"].startswith("http") else None
    base = site_url(site)
    extra: dict[str, Any] = {"site": site}
    if is_answer:
        extra["is_accepted"] = bool(item.get("is_accepted"))
        if question and question.get("title"):
            extra["question_title"] = html_to_text(question["title"])
        url = link or f"{base}/a/{native}"
    else:
        extra.update(tags=[str(t) for t in list_of(item.get("tags"))][:20], is_answered=bool(item.get("is_answered")))
        if strict_int(item.get("accepted_answer_id")) is not None:
            extra["accepted_answer_id"] = str(item["accepted_answer_id"])
        if strict_int(item.get("view_count")) is not None:
            extra["view_count"] = item["view_count"]
        url = link or f"{base}/q/{native}"
    raw = {k: v for k, v in item.items() if k not in ("answers", "comments")}
    return Mention(
        source=source,
        kind=kind,
        native_id=f"{'a' if is_answer else 'q'}{native}",
        url=url,
        title=title,
        text=text,
        author=html_to_text(owner.get("display_name")) or None,
        created_at=created,
        fetched_at=fetched_at,
        thread_id=f"q{qid}",
        parent_id=f"q{qid}" if is_answer else None,
        score=float(item["score"]) if strict_int(item.get("score")) is not None else None,
        comments=strict_int(item.get("comment_count" if is_answer else "answer_count")),
        extra=extra,
        raw=cap_raw(raw),
    )


def parse_questions(payload: Any, *, source: str, site: str, kind: str = "stackexchange",
                    fetched_at: datetime | None = None) -> tuple[list[Mention], dict[str, Any], list[str]]:
    """A page of questions (answers embedded when the filter asks for them) → (mentions, facts, notes). Pure."""
    items, facts = parse_wrapper(payload, source=source)
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    notes: list[str] = []
    for item in items:
        question = _post(item, source=source, kind=kind, site=site, fetched_at=now, question=None) \
            if isinstance(item, Mapping) else None
        if question is None:
            notes.append(f"skipped question {_ident(item, 'question_id')}: malformed or empty")
            continue
        mentions.append(question)
        for answer in list_of(item.get("answers")):
            parsed = _post(answer, source=source, kind=kind, site=site, fetched_at=now, question=item) \
                if isinstance(answer, Mapping) else None
            if parsed is None:
                notes.append(f"skipped answer {_ident(answer, 'answer_id')}: malformed or empty")
            else:
                mentions.append(parsed)
    return mentions, facts, notes


def parse_answers(payload: Any, *, source: str, site: str, titles: Mapping[int, str] | None = None,
                  kind: str = "stackexchange", fetched_at: datetime | None = None,
                  ) -> tuple[list[Mention], dict[str, Any], list[str]]:
    """`/questions/{ids}/answers` → (mentions, facts, notes). `titles` maps question id → title for context."""
    items, facts = parse_wrapper(payload, source=source)
    now = fetched_at or utcnow()
    mentions: list[Mention] = []
    notes: list[str] = []
    for item in items:
        qid = strict_int(item.get("question_id")) if isinstance(item, Mapping) else None
        question = {"title": (titles or {}).get(qid)} if qid is not None else {}
        parsed = _post(item, source=source, kind=kind, site=site, fetched_at=now, question=question) \
            if isinstance(item, Mapping) else None
        if parsed is None:
            notes.append(f"skipped answer {_ident(item, 'answer_id')}: malformed or empty")
        else:
            mentions.append(parsed)
    return mentions, facts, notes


def _ident(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else None


class _QuotaLow(Exception):
    def __init__(self, remaining: int) -> None:
        self.remaining = remaining


class StackExchangeConnector(Connector):
    """Questions (by activity, so new answers on old questions count) and their answers on one site."""

    kind = "stackexchange"
    default_rate = 1.0  # the API throttles above 30 requests/second per IP; `backoff` asks for more.
    auth = "optional API key"
    params: ClassVar[dict[str, str]] = {
        "site": "API site name: stackoverflow (default), superuser, serverfault, math, …",
        "tagged": 'only questions with these tags, ";"-separated ("python;pandas")',
        "queries": "searches (default: one per watch alternative; none with only `tagged` lists its questions)",
        "key": "API key as { env = … }: raises the daily quota from 300 to 10,000 requests",
        "max_pages": "pages per search before a capped note (default 10)",
        "batch_size": "mentions per committed batch (default 100)",
        "base_url": f"API address (default {API_URL})",
    }

    @property
    def base_url(self) -> str:
        return str(self.source.param("base_url") or API_URL).rstrip("/")

    def hosts(self) -> list[str]:
        return [urlsplit(self.base_url).netloc]

    def status(self) -> str:
        if not self.source.secret("key"):
            return "ok (no `key`: the API allows 300 requests/day per IP instead of 10,000)"
        return "ok"

    @property
    def site(self) -> str:
        return str(self.source.param("site") or "stackoverflow")

    def fetch(self, cursor: Cursor) -> Iterator[Batch]:
        # No search at all (None) lists the `tagged` questions.
        queries: list[str | None] = [*self.queries()] or ([None] if self.source.param("tagged") else [])
        if not queries:
            raise SourceError(self.name, "stackexchange needs `tagged`, `queries` or watch queries")
        since = self.since(cursor)
        notes: list[str] = []
        self._quota: int | None = None
        try:
            found: dict[str, Mention] = {}
            for query in queries:
                for m in self._questions(query, since, notes):
                    found.setdefault(m.native_id, m)
            titles = {int(m.native_id[1:]): m.title or "" for m in found.values() if m.native_id.startswith("q")}
            for m in self._answers(sorted(titles), titles, since, notes):
                found.setdefault(m.native_id, m)
        except _QuotaLow as low:
            note = f"quota low: {low.remaining} requests left today; run stopped early"
            yield Batch([], cursor, notes=(*notes, note))
            return
        if self._quota is not None and self._quota < QUOTA_FLOOR:
            notes.append(f"quota low: {self._quota} requests left today")
        fresh = [m for m in found.values() if m.created_at > since]
        yield from time_batches(fresh, cursor, int(self.source.param("batch_size", BATCH_SIZE)), notes)

    def _params(self, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"site": self.site, "filter": "withbody", "pagesize": PAGE_SIZE, **extra}
        key = self.source.secret("key")
        if key:
            params["key"] = key
        return params

    def _pages(self, url: str, params: dict[str, Any], notes: list[str]) -> Iterator[Any]:
        max_pages = int(self.source.param("max_pages", 10))
        for page in range(1, max_pages + 1):
            if self._quota is not None and self._quota < QUOTA_FLOOR:
                raise _QuotaLow(self._quota)
            payload = self.http.get(url, params={**params, "page": page}).json()
            _, facts = parse_wrapper(payload, source=self.name)
            self._obey(facts, notes)
            self._quota = strict_int(facts.get("quota_remaining"))
            yield payload
            if not facts.get("has_more"):
                return
        notes.append(f"capped at {max_pages} pages: {urlsplit(url).path}")

    def _obey(self, facts: Mapping[str, Any], notes: list[str]) -> None:
        backoff = facts.get("backoff")
        if isinstance(backoff, int | float) and backoff > 0:
            # The next request to this method must wait `backoff` seconds; HttpClient holds the whole host.
            self.http.defer(urlsplit(self.base_url).netloc, float(backoff))
            notes.append(f"backoff {backoff}s requested by the API")

    def _questions(self, query: str | None, since: datetime, notes: list[str]) -> Iterator[Mention]:
        horizon = int((utcnow() - self.source.backfill).timestamp())
        params = self._params(sort="activity", order="desc", min=int(since.timestamp()), fromdate=horizon)
        if self.source.param("tagged"):
            params["tagged"] = self.source.param("tagged")
        if query is not None:
            params["q"] = query
        url = f"{self.base_url}/search/advanced" if query is not None else f"{self.base_url}/questions"
        for payload in self._pages(url, params, notes):
            mentions, _, more = parse_questions(payload, source=self.name, site=self.site, kind=self.kind)
            notes.extend(more)
            yield from mentions

    def _answers(self, ids: list[int], titles: Mapping[int, str], since: datetime,
                 notes: list[str]) -> Iterator[Mention]:
        for start in range(0, len(ids), 100):  # {ids} is capped at 100 per request
            joined = ";".join(str(i) for i in ids[start:start + 100])
            params = self._params(sort="creation", order="desc", fromdate=int(since.timestamp()))
            for payload in self._pages(f"{self.base_url}/questions/{joined}/answers", params, notes):
                mentions, _, more = parse_answers(payload, source=self.name, site=self.site, titles=titles,
                                                  kind=self.kind)
                notes.extend(more)
                yield from mentions
