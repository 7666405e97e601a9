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
from listener.pipeline import BatchRunner, run_batch
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


class Ahead(Recording):
    """A ``runs_ahead`` stage (like the embedding) that records which batch it ran on."""

    runs_ahead = True

    def __init__(self, log: list[str], *, started: dict[str, threading.Event] | None = None,
                 fails_on: str | None = None) -> None:  # fmt: skip
        super().__init__("embedding", log)
        self.started, self.fails_on = started or {}, fails_on

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
        batch = mentions[0].native_id
        if batch in self.started:
            self.started[batch].set()
        if batch == self.fails_on:
            raise RuntimeError(f"embedding failed on batch {batch}")
        self.log.append(f"embedding {batch}")
        return [Enrichment(m.id, self.name, "v1", {"batch": batch}) for m in mentions]


BATCHES = [[Mention(source="s", kind="rss", native_id=f"{b}", url=None, title=None, text=f"batch {b} item {i}",
                    author=None, created_at=datetime(2026, 3, 1, tzinfo=UTC)) for i in range(2)] for b in range(4)]  # fmt: skip


def test_the_next_batch_is_embedded_while_this_one_finishes_and_results_come_in_order() -> None:
    log: list[str] = []
    next_started = {str(b): threading.Event() for b in range(1, 4)}
    embed = Ahead(log, started=next_started)

    class Topics(Recording):
        def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
            following = str(int(mentions[0].native_id) + 1)
            # run strictly one batch after the other, batch b's topics would wait for b+1's embedding forever
            if following in next_started and not next_started[following].wait(5):
                raise AssertionError(f"batch {following} was not embedded while batch {mentions[0].native_id} finished")
            return super().run(mentions)

    topics = Topics("topics", log)
    with BatchRunner() as runner:
        out = list(runner.run((b, [(embed, b), (topics, b)]) for b in BATCHES))
    assert [mentions for mentions, _ in out] == BATCHES
    for mentions, results in out:  # every batch gets its own results, the ahead stage's first
        assert [(e.stage, e.mention_id) for e in results] == [
            (s, m.id) for s in ("embedding", "topics") for m in mentions
        ]
    assert embed.thread != topics.thread == threading.get_ident()


def test_a_stop_keeps_the_batch_in_hand_and_drops_the_one_started_ahead() -> None:
    log: list[str] = []
    stop = threading.Event()

    class StopsAfterFirst(Recording):
        def run(self, mentions: Sequence[Mention]) -> list[Enrichment]:
            stop.set()
            return super().run(mentions)

    with BatchRunner() as runner:
        out = list(
            runner.run(((b, [(Ahead(log), b), (StopsAfterFirst("topics", log), b)]) for b in BATCHES), stop.is_set)
        )
        assert runner.started == []  # nothing left half-done
    assert [mentions for mentions, _ in out] == BATCHES[:1]
    assert sorted(log) == ["embedding 0", "embedding 1", "topics"]  # batch 1's embedding ran, was waited for, dropped


def test_an_ahead_stage_failure_is_raised_with_its_batch_after_the_earlier_batches() -> None:
    log: list[str] = []
    embed = Ahead(log, fails_on="2")
    got: list[Sequence[Mention]] = []
    with BatchRunner() as runner, pytest.raises(RuntimeError, match="failed on batch 2"):
        for mentions, _ in runner.run((b, [(embed, b), (Recording("topics", log), b)]) for b in BATCHES):
            got.append(mentions)
    assert got == BATCHES[:2]


def test_batches_must_be_finished_in_the_order_they_were_started() -> None:
    with BatchRunner() as runner:
        first = runner.start(BATCHES[0], [(Ahead([]), BATCHES[0])])
        second = runner.start(BATCHES[1], [(Ahead([]), BATCHES[1])])
        with pytest.raises(ValueError, match="order they were started"):
            runner.finish(second)
        assert runner.finish(first)[0].data == {"batch": "0"}
        assert runner.finish(second)[0].data == {"batch": "1"}
