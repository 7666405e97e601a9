"""The one HTTP client every connector uses. Politeness lives here (with listener/http_slots.py, where
each host's request times are booked) and nowhere else.

- a descriptive User-Agent with a contact, so operators of the sites we read can reach us;
- a per-host rate limit (requests/second), shared by all sources talking to that host, and by every
  process using the same database when a `SlotReserver` (the store's; see listener/http_slots.py) is given;
- retries on 408/425/429/5xx and connection errors with exponential backoff + jitter, honouring Retry-After;
- conditional GET (ETag / Last-Modified): an unchanged resource costs a 304 and no body;
- a response size cap enforced while streaming (decompressed), so a gzip bomb cannot fill memory;
- redirects followed by hand: at most 5, never from https down to http;
- robots.txt checks for HTML page fetches.

Tests inject an `httpx.MockTransport` (or point at a local server) and a fake `sleep`.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from protego import Protego

from listener import __version__
from listener.errors import FetchError, RateLimited
from listener.http_slots import HostLimiter, MemorySlots, SlotReserver

SAFE_ACROSS_ORIGINS = frozenset({"accept", "accept-language", "if-none-match", "if-modified-since"})
"""The only request headers kept when a redirect leaves the origin: every other one may carry a credential
(Authorization, Cookie, Discourse's Api-Key/Api-Username, any future connector's own auth header)."""
RETRY_STATUSES = frozenset({408, 425, 429, *range(500, 600)} - {501, 505})
"""Worth another try: timeouts, rate limits and server-side trouble (not "not implemented"/"version")."""
# httpcore's DEBUG trace logs response headers verbatim: a server that echoes Authorization back would put
# the token into our logs. Its INFO and above carry no headers.
logging.getLogger("httpcore").setLevel(logging.INFO)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_RATE = 1.0
MAX_REDIRECTS = 5


def build_user_agent(contact: str | None = None, product: str = "customer-voice-listener") -> str:
    base = f"{product}/{__version__} (+https://github.com/customer-voice/listener"
    return f"{base}; {contact})" if contact else f"{base})"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date. Returns seconds to wait, or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass
class Response:
    url: str
    status: int
    headers: Mapping[str, str]
    content: bytes = b""
    not_modified: bool = False

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def validators(self) -> dict[str, str]:
        """``etag`` / ``last_modified`` the server sent, for the next conditional `HttpClient.get`."""
        return {k: v for k, v in (("etag", self.etag), ("last_modified", self.last_modified)) if v}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        charset = "utf-8"
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, val = part.partition("=")
            if key.strip().lower() == "charset" and val.strip():
                charset = val.strip().strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """Parse JSON, failing with a message that says what came instead (an HTML login page, a truncated body …)."""
        try:
            return json.loads(self.content)
        except (ValueError, UnicodeDecodeError) as exc:
            head = self.content[:80].decode("utf-8", errors="replace").strip()
            kind = "HTML" if head.lstrip().startswith("<") else (self.content_type or "non-JSON")
            raise FetchError(
                self.url, f"expected JSON but got {kind} ({exc.__class__.__name__}: {head[:60]!r})", status=self.status
            ) from None


@dataclass
class HostStats:
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    rate_limited: int = 0
    not_modified: int = 0
    errors: int = 0


class HttpClient:
    """Polite, capped, retrying GET client. Thread-safe; one per process is enough."""

    def __init__(
        self,
        user_agent: str | None = None,
        *,
        timeout: float = 20.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 300.0,
        default_rate: float = DEFAULT_RATE,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
        slots: SlotReserver | None = None,
    ) -> None:
        """`slots`: where each host's next request time is booked (default: this process only). `clock`
        defaults to the wall clock with shared slots (other processes read the times) and to
        `time.monotonic` without."""
        self.user_agent = user_agent or build_user_agent()
        self.max_bytes = max_bytes
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.default_rate = default_rate
        self._sleep = sleep
        self._clock = clock
        self._slots: SlotReserver = slots or MemorySlots()
        self.shares_slots = slots is not None
        self._limiters: dict[str, HostLimiter] = {}
        self._limiters_lock = threading.Lock()
        self._robots: dict[str, Protego | None] = {}
        self.stats: dict[str, HostStats] = {}
        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip, deflate"},
            follow_redirects=False,
        )

    # -- rate limiting -------------------------------------------------------------------------
    def set_rate(self, host: str, per_second: float) -> None:
        """Requests per second allowed to `host`. The strictest setting wins when sources share a host."""
        interval = 1.0 / per_second if per_second > 0 else 0.0
        with self._limiters_lock:
            limiter = self._limiters.get(host)
            if limiter is None:
                self._limiters[host] = HostLimiter(interval)
            else:
                limiter.interval = max(limiter.interval, interval)

    def share_slots(self, slots: SlotReserver) -> None:
        """From now on book request slots in `slots` (e.g. the store's), shared with other processes."""
        self._slots = slots
        self.shares_slots = True

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return time.time() if self.shares_slots else time.monotonic()

    def _interval(self, host: str) -> float:
        with self._limiters_lock:
            limiter = self._limiters.get(host)
            if limiter is None:
                limiter = self._limiters[host] = HostLimiter(1.0 / self.default_rate)
            return limiter.interval

    def _wait_turn(self, host: str) -> None:
        slot = self._slots.reserve(host, self._interval(host), self._now)
        wait = slot - self._now()  # after the booking: time spent booking is not added to the wait
        if wait > 0:
            self._sleep(wait)

    def defer(self, host: str, seconds: float) -> None:
        """Hold every request to `host` for `seconds` (a service's own back-off, e.g. Stack Exchange's `backoff`)."""
        self._delay_host(host, seconds)

    def _delay_host(self, host: str, seconds: float) -> None:
        """After a 429/Retry-After every source sharing the host waits, not just the one that was told."""
        self._slots.defer(host, self._now() + seconds)

    def _stats(self, host: str) -> HostStats:
        return self.stats.setdefault(host, HostStats())

    # -- requests ------------------------------------------------------------------------------
    def get(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        max_bytes: int | None = None,
    ) -> Response:
        """GET with retries. 304 → Response(not_modified=True). Other 4xx → FetchError naming the status."""
        request_headers = dict(headers or {})
        if etag:
            request_headers["If-None-Match"] = etag
        if last_modified:
            request_headers["If-Modified-Since"] = last_modified
        cap = max_bytes or self.max_bytes
        attempt = 0
        while True:
            try:
                response = self._get_following_redirects(url, params, request_headers, cap)
            except httpx.UnsupportedProtocol as exc:  # e.g. a redirect to ftp://: retrying cannot help
                raise FetchError(url, f"unsupported URL scheme: {exc}") from None
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                host = urlsplit(url).netloc
                self._stats(host).errors += 1
                if attempt >= self.retries:
                    raise FetchError(
                        url, f"{exc.__class__.__name__}: {exc or 'no response'} (after {attempt + 1} attempts)"
                    ) from None
                self._stats(host).retries += 1
                self._sleep(self._backoff(attempt))
                attempt += 1
                continue
            if response.status in RETRY_STATUSES:
                host = urlsplit(response.url).netloc
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                if response.status == 429:
                    self._stats(host).rate_limited += 1
                if retry_after is not None and retry_after > self.max_retry_after:
                    raise RateLimited(
                        url,
                        f"HTTP {response.status}; asked to retry after {retry_after:.0f}s",
                        retry_after=retry_after,
                        status=response.status,
                    )
                if attempt >= self.retries:
                    if retry_after is not None:
                        self._delay_host(host, retry_after)  # other sources sharing the host honour it too
                    if response.status == 429:
                        raise RateLimited(url, f"HTTP 429 after {attempt + 1} attempts", retry_after=retry_after)
                    raise FetchError(
                        url, f"HTTP {response.status} after {attempt + 1} attempts", status=response.status
                    )
                wait = retry_after if retry_after is not None else self._backoff(attempt)
                self._stats(host).retries += 1
                self._delay_host(host, wait)
                attempt += 1
                continue
            if response.status == 304:
                self._stats(urlsplit(response.url).netloc).not_modified += 1
                response.not_modified = True
                return response
            if response.status >= 400:
                raise FetchError(url, f"HTTP {response.status}", status=response.status)
            return response

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_max, self.backoff_base * (2**attempt))
        return base / 2 + random.uniform(0, base / 2)

    def _get_following_redirects(
        self, url: str, params: Mapping[str, Any] | None, headers: dict[str, str], cap: int
    ) -> Response:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            host = urlsplit(current).netloc
            self._wait_turn(host)
            stats = self._stats(host)
            stats.requests += 1
            with self._client.stream("GET", current, params=params, headers=headers) as raw:
                if raw.status_code in (301, 302, 303, 307, 308):
                    location = raw.headers.get("location")
                    if not location:
                        raise FetchError(current, f"HTTP {raw.status_code} redirect without Location")
                    target = urljoin(str(raw.url), location)
                    if urlsplit(current).scheme == "https" and urlsplit(target).scheme != "https":
                        raise FetchError(current, f"refused redirect from https to {urlsplit(target).scheme}: {target}")
                    if urlsplit(target)[:2] != urlsplit(current)[:2]:  # another origin: never forward credentials
                        headers = {k: v for k, v in headers.items() if k.lower() in SAFE_ACROSS_ORIGINS}
                    current, params = target, None
                    continue
                body = b""
                if raw.status_code not in (304,) and raw.status_code < 400:
                    body = self._read_capped(raw, cap, current)
                stats.bytes += len(body)
                return Response(url=str(raw.url), status=raw.status_code, headers=dict(raw.headers), content=body)
        raise FetchError(url, f"more than {MAX_REDIRECTS} redirects")

    @staticmethod
    def _read_capped(raw: httpx.Response, cap: int, url: str) -> bytes:
        declared = raw.headers.get("content-length")
        encoded = raw.headers.get("content-encoding")
        if declared and declared.isdigit() and not encoded and int(declared) > cap:
            raise FetchError(url, f"response of {int(declared)} bytes exceeds the {cap}-byte cap")
        coding = (encoded or "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib-wrapped deflate (auto-detects gzip too)
        elif coding == "identity":
            inflater = None
        else:
            raise FetchError(url, f"unsupported Content-Encoding {coding!r}")
        if raw.is_stream_consumed:  # already read and decoded (e.g. a MockTransport reply built from bytes)
            inflater = None
        source = iter([raw.content]) if raw.is_stream_consumed else raw.iter_raw()
        chunks: list[bytes] = []
        size = 0
        try:
            for data in source:  # still compressed: inflate no more than the cap allows
                while data:
                    if inflater is None:
                        out, data = data, b""
                    else:
                        out = inflater.decompress(data, cap + 1 - size)
                        data = inflater.unconsumed_tail
                    size += len(out)
                    if size > cap:
                        raise FetchError(url, f"response exceeds the {cap}-byte cap (decompressed)")
                    chunks.append(out)
            rest = inflater.flush() if inflater is not None else b""
            if size + len(rest) > cap:
                raise FetchError(url, f"response exceeds the {cap}-byte cap (decompressed)")
            chunks.append(rest)
        except zlib.error as exc:
            raise FetchError(url, f"corrupt compressed body: {exc}") from None
        return b"".join(chunks)

    # -- robots.txt ----------------------------------------------------------------------------
    def robots_allowed(self, url: str) -> bool:
        """Whether robots.txt lets our User-Agent fetch `url`. An absent robots.txt (4xx) allows all."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._robots:
            # Protego follows RFC 9309 (longest match wins); urllib.robotparser applies the first match.
            parser: Protego | None
            try:
                resp = self.get(f"{origin}/robots.txt", max_bytes=512 * 1024)
                parser = Protego.parse(resp.text)
            except FetchError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    parser = None  # no robots.txt: everything allowed
                else:
                    raise
            self._robots[origin] = parser
        parser = self._robots[origin]
        return True if parser is None else bool(parser.can_fetch(url, self.user_agent))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
