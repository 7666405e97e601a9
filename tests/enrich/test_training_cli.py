"""Training command plumbing that a session relies on: stop times and where teacher outputs go."""

from __future__ import annotations

import calendar
import time

import pytest

from enrich.training.__main__ import next_utc_time
from enrich.training.teacher import SOFT_LABELS, soft_labels_path


def _utc(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


@pytest.mark.parametrize(
    ("now", "hhmm", "expected"),
    [
        ("2026-11-25 23:30", "01:25", "2026-11-26 01:25"),  # past midnight: tomorrow, not a time already gone
        ("2026-11-25 20:00", "21:08", "2026-11-25 21:08"),
        ("2026-11-25 21:08", "21:08", "2026-11-26 21:08"),
    ],
)
def test_stop_at_is_the_next_occurrence_of_that_utc_time(now: str, hhmm: str, expected: str) -> None:
    assert next_utc_time(hhmm, now=_utc(now)) == _utc(expected)


def test_each_teacher_run_writes_its_own_soft_labels_and_the_first_keeps_its_committed_name() -> None:
    assert soft_labels_path("mpnet-teacher-v1") == SOFT_LABELS
    second = soft_labels_path("mpnet-teacher-v2")
    assert second.parent == SOFT_LABELS.parent and second != SOFT_LABELS
    assert "mpnet-teacher-v2" in second.name
