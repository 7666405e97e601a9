"""Near-duplicate stage: exact and near copies group together, the earliest is canonical, groups span batches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from enrich.duplicates import DuplicateIndex, DuplicateStage, canonical_members, jaccard, minhash, normalise_for_hash
from listener.types import utcnow
from storage import Store
from tests.enrich.helpers import T0, appstore_reviews, mention


def reviews(corpora: Path) -> dict[str, str]:
    return appstore_reviews(corpora)


def test_exact_near_and_distinct(corpora: Path) -> None:
    r = reviews(corpora)
    crash, deposit = r["Crash"], r["Mobile Deposit"]
    ms = [
        mention(1, crash, minutes=30),
        mention(2, "  " + crash.upper() + "  https://example.com/x @someone", minutes=10),  # exact after normalising
        mention(3, crash.replace("please fix", "PLEASE fix this asap"), minutes=50),  # near copy
        mention(4, deposit, minutes=5),
        mention(5, r["Trash"], minutes=1),
    ]
    out = {e.mention_id: e.data for e in DuplicateStage().run(ms)}
    g = out[ms[0].id]["group"]
    # m2 is processed first (earliest), so it opens the group and m1 is its exact copy
    assert out[ms[1].id]["group"] == g and out[ms[1].id]["match"] == "none" and out[ms[0].id]["match"] == "exact"
    assert out[ms[2].id]["group"] == g and out[ms[2].id]["match"] == "near" and out[ms[2].id]["similarity"] >= 0.7
    assert out[ms[3].id]["group"] != g and out[ms[4].id]["group"] not in (g, out[ms[3].id]["group"])
    # earliest member (m2, 10 minutes) is canonical; the others point at it
    assert out[ms[1].id]["canonical"] is True and out[ms[0].id]["canonical"] is False
    assert {out[m.id]["canonical_id"] for m in ms[:3]} == {ms[1].id}
    assert out[ms[3].id]["canonical"] and out[ms[4].id]["canonical"]


def test_groups_span_batches_and_earlier_backfill() -> None:
    stage = DuplicateStage()
    text = "The app logs me out every single time I switch to another app and back, please fix"
    [first] = stage.run([mention(1, text, minutes=100)])
    [later] = stage.run([mention(2, text + "!!", minutes=200)])
    [backfill] = stage.run([mention(3, text.lower(), minutes=0)])
    assert first.data["group"] == later.data["group"] == backfill.data["group"] == f"dup-{mention(1, '').id}"
    assert later.data["canonical"] is False and backfill.data["canonical"] is True


def test_bad_input_and_minhash() -> None:
    texts = ["", "🙂🙂", "x" * 100_000, "broken \ud83d \x00 surrogate", "!!"]
    out = DuplicateStage().run([mention(i, t) for i, t in enumerate(texts)])
    assert len(out) == 5 and out[0].data["group"] is None and out[0].data["canonical"] is True
    assert out[2].data["group"]
    a = minhash(normalise_for_hash("Battery dies in an hour since the update"))
    b = minhash(normalise_for_hash("battery dies in an hour since the last update!"))
    c = minhash(normalise_for_hash("Customer support never answered my ticket"))
    assert jaccard(a, b) > 0.6 > 0.2 > jaccard(a, c)
    assert (minhash("same text") == minhash("same text")).all()


def test_index_is_bounded() -> None:
    index = DuplicateIndex(max_groups=50)
    for i in range(200):
        index.add(f"id{i}", T0, f"unique post number {i} about topic {i * 7919} and nothing else")
    assert len(index) == 50


def test_warm_start_from_store(tmp_path: Path) -> None:
    now = utcnow() - timedelta(hours=2)
    text = "Sync between my phone and laptop has been broken for a week, notes are missing"
    with Store.open(tmp_path / "l.db") as store:
        old = mention(1, text, when=now)
        store.save_batch("t", [old], None)
        store.save_enrichments(DuplicateStage(store).run([old]))
        fresh = DuplicateStage(store)  # a new process: index rebuilt from the store
        new = mention(2, text + " again", when=now)
        store.save_batch("t", [new], None)
        [e] = fresh.run([new])
        assert e.data["group"] == f"dup-{old.id}" and e.data["canonical"] is False
        store.save_enrichments([e])
        assert canonical_members(store, [old.id, new.id]) == {f"dup-{old.id}": [old.id, new.id]}


def test_numpy_shingle_hashes_cover_every_shingle() -> None:
    """One hash per distinct character 5-gram (or word 3-gram for long posts), as `shingles` defines them."""
    from enrich.duplicates import _gram_hashes, shingles

    for text in ["abc", "abcde", "the app the app the app crashes", "é😀 mixed ünïcode text " * 3, "word " * 300]:
        norm = normalise_for_hash(text)
        assert len(_gram_hashes(norm)) == len(shingles(norm))
    assert (minhash("") == minhash("")).all() and not (minhash("abc") == minhash("abd")).all()
