"""The one interface every enrichment stage implements: a list of mentions in, their enrichments out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from listener.types import Mention

ENRICH_BATCH = 256
"""Mentions per enrichment batch (one transaction) unless told otherwise. Larger batches give the encoder
better length groups: six insight stages on 2 cores, same run, 64 → 387-397, 128 → 422, 256 → 434-447
mentions/s; a stop still loses under a second of work."""


@dataclass(frozen=True)
class Enrichment:
    """One stage's result for one mention, stored keyed by (mention_id, stage, model_version)."""

    mention_id: str
    stage: str
    model_version: str
    data: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    """A batch-first enrichment stage.

    A stage may also set ``independent = True``: it reads nothing that other stages leave in this
    process (vectors, clause caches), so `listener.pipeline` runs it on a second thread beside them.
    A stage that sets ``runs_ahead = True`` reads nothing that other stages leave either, and the later
    stages read what it leaves (the embedding stage): `listener.pipeline.BatchRunner` starts it on the
    next batch while this batch's other stages run.
    """

    name: str

    @property
    def version(self) -> str: ...

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]: ...
