"""Data rights: `listener purge` and retention remove mentions everywhere (rows, enrichments, watch
index, full-text index) and keep everything else."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer

from enrich.base import Enrichment
from listener import cli
from listener.config import load_config
from listener.errors import ConfigError
from listener.retention import RetentionPolicy, apply_retention, retention_policy
from listener.types import Cursor, Mention
from storage import Store

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ensure_registered(app: typer.Typer) -> None:
    """`listener purge` lives in listener/cli_admin.py; registered here until cli.py does it."""
    names = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    if "purge" not in names:
        from listener import cli_admin

        cli_admin.register(app)


@pytest.fixture(autouse=True)
def _purge_verb() -> None:
    ensure_registered(cli.app)


def mention(source: str, n: int, *, author: str, age_days: float, text: str = "acme sync") -> Mention:
    return Mention(
        source=source,
        kind="rss",
        native_id=f"{source}-{n}",
        url=None,
        title=f"t{n}",
        text=f"{text} {source} {n}",
        author=author,
        created_at=NOW - timedelta(days=age_days),
        matched=("acme",),
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rights.db"
    with Store.open(path) as store:
        store.save_batch(
            "forum",
            [mention("forum", i, author="alice" if i % 2 else "bob", age_days=i * 100) for i in range(6)],
            Cursor(),
        )
        store.save_batch(
            "reviews", [mention("reviews", i, author="alice", age_days=i * 200) for i in range(4)], Cursor()
        )
        ids = [m.id for m in [mention("forum", i, author="", age_days=0) for i in range(6)]]
        store.save_enrichments([Enrichment(i, "sentiment", "v1", {"label": "neutral"}) for i in ids])
    yield path


def run_cli(
    capsys: pytest.CaptureFixture[str],
    *args: str,
    stdin: str | None = None,
    monkeypatch: pytest.MonkeyPatch | None = None,
) -> tuple[int, str]:
    if stdin is not None and monkeypatch is not None:
        import io

        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out + err


def test_purge_author_removes_from_search_fts_and_enrichments(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store.open(db) as store:
        assert store.count("acme", authors=["alice"]) == 7
    code, out = run_cli(capsys, "--db", str(db), "purge", "--author", "alice", "--yes")
    assert code == 0 and "deleted 7 mention(s)" in out
    with Store.open(db) as store:
        assert store.count(authors=["alice"], include_deleted=True) == 0
        assert store.count("acme") == 3 and {i.mention.author for i in store.search("acme").items} == {"bob"}
        assert store.check() == []
        with store.engine.connect() as conn:
            fts = conn.exec_driver_sql("SELECT count(*) FROM mention_fts WHERE mention_fts MATCH 'alice'").scalar()
            enr = conn.exec_driver_sql("SELECT count(*) FROM enrichment").scalar()
            watch = conn.exec_driver_sql("SELECT count(*) FROM mention_watch").scalar()
        assert fts == 0 and enr == 3 and watch == 3
        totals = {s.source: s.total_mentions for s in store.source_states()}
        assert totals == {"forum": 3, "reviews": 0}


def test_purge_source_before_date(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cutoff = (NOW - timedelta(days=250)).strftime("%Y-%m-%d")
    code, out = run_cli(capsys, "--db", str(db), "purge", "--source", "forum", "--before", cutoff, "--yes")
    assert code == 0 and "deleted 3 mention(s)" in out  # forum mentions 300, 400, 500 days old
    with Store.open(db) as store:
        assert store.count(sources=["forum"]) == 3 and store.count(sources=["reviews"]) == 4
        assert store.check() == []


def test_purge_asks_first_and_refusal_deletes_nothing(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = run_cli(capsys, "--db", str(db), "purge", "--source", "reviews", stdin="n\n", monkeypatch=monkeypatch)
    assert code == 1 and "Delete 4 mention(s)" in out and "nothing deleted" in out
    code, out = run_cli(capsys, "--db", str(db), "purge", "--source", "reviews", stdin="y\n", monkeypatch=monkeypatch)
    assert code == 0 and "deleted 4 mention(s)" in out
    with Store.open(db) as store:
        assert store.count(sources=["reviews"], include_deleted=True) == 0


def test_purge_needs_a_filter_and_a_valid_date(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "--db", str(db), "purge", "--yes")
    assert code == 2 and "at least one of --source, --author or --before" in out
    code, out = run_cli(capsys, "--db", str(db), "purge", "--before", "2026-13-45", "--yes")
    assert code == 2 and "is not a date" in out and "Traceback" not in out


def test_retention_keeps_newer_and_honours_per_source_periods(db: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "listener.toml"
    config_path.write_text(
        '[listener]\nretain = "250d"\n\n'
        '[[source]]\nname = "reviews"\nkind = "rss"\nurl = "http://127.0.0.1:9/x"\nretain = "450d"\n\n'
        '[[source]]\nname = "forum"\nkind = "rss"\nurl = "http://127.0.0.1:9/y"\n',
        encoding="utf-8",
    )
    policy = retention_policy(load_config(config_path))
    assert policy == RetentionPolicy(default=timedelta(days=250), per_source={"reviews": timedelta(days=450)})
    with Store.open(db) as store:
        deleted = apply_retention(store, load_config(config_path), now=NOW)
        assert deleted == {"forum": 3, "reviews": 1}  # forum: the 300, 400, 500 days old; reviews: the 600
        ages = sorted((NOW - i.mention.created_at).days for i in store.search(None, limit=100).items)
        assert all(age < 450 for age in ages)
        assert store.check() == []
        assert apply_retention(store, load_config(config_path), now=NOW) == {}  # idempotent


def test_retention_rejects_a_bad_period(tmp_path: Path) -> None:
    config_path = tmp_path / "listener.toml"
    config_path.write_text('[listener]\nretain = "forever"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"listener\.retain"):
        retention_policy(load_config(config_path))


def test_purge_retention_verb(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "listener.toml"
    config_path.write_text(f'[listener]\nretain = "1000000d"\n[storage]\ndatabase = "{db}"\n', encoding="utf-8")
    code, out = run_cli(capsys, "-c", str(config_path), "purge", "--retention", "--yes")
    assert code == 0 and "deleted 0 mention(s)" in out


def test_purge_reaches_the_quotes_kept_in_alert_history(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from storage.alerts import AlertRecord

    def quote(author: str, source: str) -> dict[str, str]:
        return {"text": f"{author} says", "url": f"https://x.test/{author}", "author": author, "source": source}

    now = datetime.now(UTC)
    old = AlertRecord("a-old", "spike", "watch:acme", "acme spike", now - timedelta(days=400),
                      {"quotes": [quote("carol", "reviews")], "link": "https://x.test/carol", "signals": [1]})
    new = AlertRecord("a-new", "spike", "watch:acme", "acme spike", now,
                      {"quotes": [quote("alice", "forum"), quote("bob", "forum")], "link": "https://x.test/alice"})
    with Store.open(db) as store:
        assert store.import_alerts([old, new]) == 2
    assert run_cli(capsys, "--db", str(db), "purge", "--author", "alice", "--yes")[0] == 0
    with Store.open(db) as store:
        by_id = {a.id: a.data for a in store.alerts_since(now - timedelta(days=999))}
    assert [q["author"] for q in by_id["a-new"]["quotes"]] == ["bob"]
    assert by_id["a-new"]["link"] == "https://x.test/bob"  # the link pointed at the purged quote
    assert by_id["a-old"]["quotes"][0]["author"] == "carol"
    cut = (now - timedelta(days=365)).date().isoformat()
    assert run_cli(capsys, "--db", str(db), "purge", "--before", cut, "--yes")[0] == 0
    with Store.open(db) as store:
        by_id = {a.id: a.data for a in store.alerts_since(now - timedelta(days=999))}
    assert by_id["a-old"]["quotes"] == [] and by_id["a-old"]["signals"] == [1]  # counts stay, names go
    assert [q["author"] for q in by_id["a-new"]["quotes"]] == ["bob"]
