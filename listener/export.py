"""Mentions out of the store as csv / json / ndjson / parquet, in constant memory.

One row shape for every surface (CLI search and export, REST API): the mention, its id, its
sentiment label and, for text searches, the highlighted snippet.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from enum import Enum
from pathlib import Path
from typing import IO, Any

from listener.query import MentionQuery, run_query
from storage import Store, StoredMention

CSV_FIELDS = (
    "id",
    "source",
    "kind",
    "created_at",
    "author",
    "title",
    "text",
    "url",
    "score",
    "rating",
    "matched",
    "sentiment",
)


def csv_fields(semantic: bool) -> tuple[str, ...]:
    """Flat (CSV, Parquet) columns: `CSV_FIELDS`, plus `similarity` for a semantic search."""
    return (*CSV_FIELDS, "similarity") if semantic else CSV_FIELDS


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"
    ndjson = "ndjson"
    parquet = "parquet"


def mention_row(item: StoredMention, sentiment: str | None) -> dict[str, Any]:
    data = item.mention.to_dict()
    data["id"] = item.id
    data["sentiment"] = sentiment
    if item.snippet:
        data["snippet"] = item.snippet
    if item.similarity is not None:
        data["similarity"] = item.similarity
    return data


def rows_with_sentiment(store: Store, items: list[StoredMention]) -> list[dict[str, Any]]:
    found = store.enrichments_for([i.id for i in items], stage="sentiment") if items else {}
    return [mention_row(i, (found.get(i.id, {}).get("sentiment") or {}).get("label")) for i in items]


def csv_line(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "matched": ";".join(row.get("matched") or [])}


def write_rows(
    rows: list[dict[str, Any]],
    fmt: str,
    out: IO[str],
    *,
    header: bool,
    first: bool = True,
    fields: Sequence[str] = CSV_FIELDS,
) -> None:
    """Write one chunk of rows; `header`/`first` let a caller stream many chunks as one document; `fields`
    are the CSV columns (`csv_fields`)."""
    if fmt == "ndjson":
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    elif fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=list(fields), extrasaction="ignore")
        if header:
            writer.writeheader()
        for r in rows:
            writer.writerow(csv_line(r))
    elif fmt == "json":
        if header:
            out.write(json.dumps(rows, ensure_ascii=False, indent=2, default=str) + "\n")
        else:
            for i, r in enumerate(rows):
                out.write(("" if first and i == 0 else ",\n") + json.dumps(r, ensure_ascii=False, default=str))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def iter_pages(store: Store, q: MentionQuery) -> Iterator[list[dict[str, Any]]]:
    after = q.after
    while True:
        page = run_query(store, replace(q, after=after))
        if page.items:
            yield rows_with_sentiment(store, page.items)
        after = page.next_after
        if after is None:
            return


def export_mentions(
    store: Store, q: MentionQuery, fmt: ExportFormat, out_path: Path | None, stdout: IO[str] | None = None
) -> int:
    """Stream every mention the query matches; returns how many were written."""
    if fmt is ExportFormat.parquet:
        return _export_parquet(store, q, out_path)
    import sys

    handle: IO[str] = open(out_path, "w", encoding="utf-8", newline="") if out_path else (stdout or sys.stdout)  # noqa: SIM115
    count = 0
    fields = csv_fields(q.semantic is not None)
    try:
        if fmt is ExportFormat.json:
            handle.write("[\n")
        for rows in iter_pages(store, q):
            csv_header = fmt is ExportFormat.csv and count == 0
            write_rows(rows, fmt.value, handle, header=csv_header, first=count == 0, fields=fields)
            count += len(rows)
        if fmt is ExportFormat.csv and count == 0:
            write_rows([], "csv", handle, header=True, fields=fields)
        if fmt is ExportFormat.json:
            handle.write("\n]\n")
    finally:
        if out_path:
            handle.close()
    return count


def _export_parquet(store: Store, q: MentionQuery, out_path: Path | None) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(
            "parquet export needs the optional extra: pip install 'customer-voice-listener[parquet]'"
        ) from None
    if out_path is None:
        raise ValueError("parquet export needs --out FILE")
    fields = csv_fields(q.semantic is not None)
    schema = pa.schema([(f, pa.string()) for f in fields])
    count = 0
    with pq.ParquetWriter(str(out_path), schema) as writer:
        for rows in iter_pages(store, q):
            columns = {f: [None if r.get(f) is None else str(csv_line(r)[f]) for r in rows] for f in fields}
            writer.write_table(pa.table(columns, schema=schema))
            count += len(rows)
    return count
