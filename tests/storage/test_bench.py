"""storage.bench stays runnable (figures come from `listener bench`; tests never assert timings)."""

from __future__ import annotations

from storage.bench import measure_ingest


def test_measure_ingest_reports_rates() -> None:
    result = measure_ingest(batches=2, size=5, rounds=1)
    assert set(result) == {
        "batch_size",
        "new_per_s_wall",
        "new_per_s_cpu",
        "duplicates_per_s_wall",
        "duplicates_per_s_cpu",
    }
    assert all(value > 0 for value in result.values())
