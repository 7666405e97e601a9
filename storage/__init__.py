"""Storage: the only package that talks SQL. Everything else goes through `Store`."""

from __future__ import annotations

from storage.alerts import AlertRecord
from storage.records import RunInfo, SaveResult, SearchPage, SourceState, StoredMention
from storage.store import Store

__all__ = ["AlertRecord", "RunInfo", "SaveResult", "SearchPage", "SourceState", "Store", "StoredMention"]
