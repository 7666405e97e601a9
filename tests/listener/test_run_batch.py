"""Independent stages run beside the encoder stages (listener.pipeline.run_batch): every result kept,
order kept where it matters, failures never lost and never left running."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from enrich.base import Enrichment
from listener.pipeline import run_batch
from listener.types import Mention

MENTIONS = [
    Mention(source="s", kind="rss", native_id=str(i), url=None, title=None, text=f"text {i}", author=None,
            created_at=datetime(2026, 3, 1, tzinfo=UTC))
    for i in range(3)
]  # fmt: skip


class Recording:
    def __init__(self, name: str, log: list[str], *, independent: bool = False, wait_for: threading.Event | None = None,
                 sets: threading.Event | None = None, fails: bool = False) -> None:  # fmt: skip
        self.name, self.log, self.independent = name, log, independent
        self.wait_for, self.sets, self.fails = wait_for, sets, fails
        self.thread: int | None = None

    @property
    def version(self) -> str:
        return "v1"

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        self.thread = threading.get_ident()
        if self.sets is not None:
            self.sets.set()
        if self.wait_for is not None and not self.wait_for.wait(5):
            raise AssertionError(f"{self.name} never ran beside the stage it waits for")
        if self.fails:
            raise RuntimeError(f"{self.name} failed")
        self.log.append(self.name)
        return [Enrichment(m.id, self.name, "v1", {}) for m in mentions]


def test_independent_stages_run_beside_the_ordered_ones() -> None:
    log: list[str] = []
    side_started = threading.Event()
    # The ordered stage waits until the independent one has started: run one after the other, it would time out.
    lead = Recording("sentiment", log, independent=True, sets=side_started)
    embed = Recording("embedding", log, wait_for=side_started)
    topics = Recording("topics", log)
    lang = Recording("language", log, independent=True)
    with ThreadPoolExecutor(1) as side:
        out = run_batch([(lead, MENTIONS), (embed, MENTIONS), (topics, MENTIONS[:1]), (lang, MENTIONS)], side)
    assert sorted((e.stage, e.mention_id) for e in out) == sorted(
        [(s, m.id) for s in ("sentiment", "embedding", "language") for m in MENTIONS] + [("topics", MENTIONS[0].id)]
    )
    assert log.index("embedding") < log.index("topics") and log.index("sentiment") < log.index("language")
    assert embed.thread == topics.thread == threading.get_ident() and lead.thread == lang.thread != embed.thread


def test_a_failing_independent_stage_fails_the_batch() -> None:
    with ThreadPoolExecutor(1) as side, pytest.raises(RuntimeError, match="language failed"):
        run_batch([(Recording("embedding", []), MENTIONS), (Recording("language", [], independent=True, fails=True),
                                                            MENTIONS)], side)  # fmt: skip


def test_when_an_ordered_stage_fails_the_independent_one_is_waited_for_and_its_error_is_the_one_raised() -> None:
    log: list[str] = []
    finished = threading.Event()

    class Slow(Recording):
        def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
            time.sleep(0.2)
            out = super().run(mentions)
            finished.set()
            return out

    with ThreadPoolExecutor(1) as side, pytest.raises(RuntimeError, match="topics failed"):
        run_batch([(Slow("duplicates", log, independent=True), MENTIONS), (Recording("topics", log, fails=True),
                                                                          MENTIONS)], side)  # fmt: skip
    assert finished.is_set() and log == ["duplicates"]  # not left running after run_batch returned
