"""Training command plumbing that a session relies on: stop times and where teacher outputs go."""

from __future__ import annotations

import calendar
import time
from collections import Counter
from pathlib import Path

import pytest

from enrich.training.__main__ import next_utc_time, parse_domain_weights, parse_review_domains
from enrich.training.data import SOFT_LABELS, soft_labels_path


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


def test_reproducing_runs_the_teachers_up_to_the_one_whose_labels_a_student_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A student distilled from a continued teacher needs the first teacher trained (its labels are not
    needed) and then the second one with its labels; labels already on disk skip the teachers."""
    torch = pytest.importorskip("torch")  # the chain's modules import it; CI's dev install has no torch
    from enrich.training import __main__ as chain
    from enrich.training import data, soup, teacher, train

    second = tmp_path / "teacher_soft_labels-t2.npz"
    calls: list[tuple[str, bool]] = []

    def fake_teacher(stop: object, *, run: str, labels: bool, **kwargs: object) -> bool:
        calls.append((run, labels))
        if labels:
            second.write_bytes(b"labels")
        return True

    monkeypatch.setattr(chain, "TEACHERS", [("t1", {}), ("t2", {"init_from": "t1"}), ("t3", {})])
    monkeypatch.setattr(chain, "STUDENTS", [("s", {"soft_labels": str(second)})])
    monkeypatch.setattr(teacher, "run_teacher", fake_teacher)
    monkeypatch.setattr(data, "soft_labels_path", lambda run: tmp_path / f"teacher_soft_labels-{run}.npz")
    state = tmp_path / "s" / "state.pt"
    state.parent.mkdir()
    torch.save({"done": True}, state)
    monkeypatch.setattr(train, "train", lambda recipe, stop_at=None: tmp_path / recipe.run)
    monkeypatch.setattr(soup, "soup", lambda runs, out: None)
    assert chain._reproduce_chain(None)
    assert calls == [("t1", False), ("t2", True)]
    calls.clear()
    assert chain._reproduce_chain(None) and calls == []


def test_domain_weights_parse_and_bad_ones_get_a_clear_error() -> None:
    assert parse_domain_weights(["icwsm_products=4", "semeval=0.25"]) == {"icwsm_products": 4.0, "semeval": 0.25}
    for bad, says in [("products=4", "DOMAIN one of"), ("semeval", "DOMAIN=FACTOR"), ("semeval=x", "must be a number"),
                      ("semeval=-1", ">= 0")]:  # fmt: skip
        with pytest.raises(SystemExit, match=says):
            parse_domain_weights([bad])


def test_review_domains_take_training_and_augmented_domains_and_refuse_others() -> None:
    assert parse_review_domains(["icwsm_products", "aug_icwsm_products", "icwsm_products"]) == [
        "aug_icwsm_products",
        "icwsm_products",
    ]
    with pytest.raises(SystemExit, match="expected one of"):
        parse_review_domains(["tweeteval_val"])  # val is never tagged or trained on


def test_domain_weights_repeat_and_sample_a_domain_and_leave_the_others() -> None:
    import random

    from enrich.training.data import Example, reweight_domains

    pool = [
        Example(f"{d}:{i}", "t", 0, d, "train") for d in ("semeval", "icwsm_products", "icwsm_news") for i in range(400)
    ]
    out = reweight_domains(pool, {"icwsm_products": 3, "semeval": 0.25}, random.Random(13))
    counts = Counter(e.domain for e in out)
    assert counts["icwsm_products"] == 1200 and counts["icwsm_news"] == 400
    assert 60 < counts["semeval"] < 140  # a random quarter of 400
    assert Counter(e.uid for e in out if e.domain == "icwsm_products") == {f"icwsm_products:{i}": 3 for i in range(400)}
    assert out == reweight_domains(pool, {"icwsm_products": 3, "semeval": 0.25}, random.Random(13))  # seeded
    with pytest.raises(ValueError, match=">= 0"):
        reweight_domains(pool, {"icwsm_news": -1}, random.Random(0))


def test_head_seed_gives_runs_of_other_seeds_the_same_head_init(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")  # train.py imports it; CI's dev install has no torch
    from enrich.training.train import Recipe, build

    def head(**kw: object) -> object:
        torch.manual_seed(kw.get("seed", 13))  # as train() seeds before build()
        model, _, _ = build(Recipe(**kw), tmp_path)  # type: ignore[arg-type]
        weight = model.get_submodule("classifier").weight
        assert isinstance(weight, torch.Tensor)
        return weight.detach().clone()

    first = head(seed=13)
    assert torch.equal(head(seed=31, head_seed=13), first)
    assert not torch.equal(head(seed=31), first)
