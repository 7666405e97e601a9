"""Property-based API tests from the OpenAPI spec (schemathesis, in-process ASGI).

Every operation gets a bounded number of generated requests (valid and invalid parameters) with a fixed
seed, against a small real SQLite store. Each response must not be a 5xx and must conform to the spec:
declared status code, content type, headers and body schema (422s included).

Two acceptance checks are left out. "Every schema-valid request is accepted" fails on rules that OpenAPI
cannot express: since before until, an opaque page token from a previous page, a query with a word to look
for. Those get a 422 in the declared validation-error shape, which the conformance checks cover. "Every
schema-violating request is rejected" fails on query strings, which carry no types: a generated boolean
`true` or a repeated `semantic=` is also a valid string. Negative cases still have to avoid 5xx and keep
to the spec. Runs in well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis import BaseSchema, Case, GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from enrich.base import Enrichment
from listener.api import create_app
from listener.config import Config, SourceConfig
from listener.matching import WatchQuery
from listener.types import Mention
from storage import Store

NOW = datetime.now(UTC).replace(microsecond=0)


def _mentions() -> list[Mention]:
    out = []
    for i in range(40):
        source = ("forum", "hn", "store")[i % 3]
        out.append(
            Mention(
                source=source,
                kind={"forum": "discourse", "hn": "hackernews", "store": "appstore"}[source],
                native_id=str(i),
                url=f"https://{source}.example.com/{i}",
                title=f"Acme sync issue {i}" if i % 2 else None,
                text=f'acme notes sync {"crash" if i % 4 else "works great"} <b>{i}</b> "quoted" ü',
                author=f"user{i % 9}",
                created_at=NOW - timedelta(hours=7 * i),
                thread_id=f"t{i // 4}" if source != "store" else None,
                score=float(i % 11) if source != "store" else None,
                rating=float(1 + i % 5) if source == "store" else None,
                matched=("acme",) if i % 5 else ("acme", "notably"),
            )
        )
    return out


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    store = Store.open(Path(tmp_path_factory.mktemp("schema")) / "api.db")
    items = _mentions()
    for source in ("forum", "hn", "store"):
        store.save_batch(source, [m for m in items if m.source == source], None)
    labels = ("negative", "neutral", "positive")
    store.save_enrichments(
        [Enrichment(m.id, "sentiment", "v1", {"label": labels[i % 3], "score": 0.8}) for i, m in enumerate(items)]
    )
    run = store.start_run("forum")
    store.finish_run(run, status="failed", new=0, duplicates=0, error="HTTP 503 from forum.example.com")
    config = Config(
        path=None,
        watches=(WatchQuery.build("acme", ["acme"]), WatchQuery.build("notably", ["notably"], competitor=True)),
        sources=(SourceConfig("forum", "discourse"), SourceConfig("hn", "hackernews"), SourceConfig("rss", "rss")),
    )
    yield create_app(store, config)
    store.close()


OPERATIONS = ["/api/mentions", "/api/mentions/{mention_id}", "/api/stats", "/api/sources", "/api/watches"]
SETTINGS = settings(
    max_examples=30,
    derandomize=True,  # deterministic: the same examples on every run and machine
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> BaseSchema:
    return schemathesis.openapi.from_asgi("/api/openapi.json", app)


def test_every_operation_is_covered(app: FastAPI) -> None:
    assert sorted(app.openapi()["paths"]) == sorted(OPERATIONS)


CASES = [(path, GenerationMode.POSITIVE) for path in OPERATIONS] + [
    (path, GenerationMode.NEGATIVE)
    for path in OPERATIONS[:3]  # the others take no parameter to get wrong
]


@pytest.mark.parametrize(("path", "mode"), CASES, ids=[f"{p}-{m.value}" for p, m in CASES])
def test_operation_conforms_to_spec(api_schema: BaseSchema, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path]["GET"]

    @SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Case) -> None:
        case.call_and_validate(excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()
