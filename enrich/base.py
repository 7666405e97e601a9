"""The one interface every enrichment stage implements: a list of mentions in, their enrichments out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from listener.types import Mention


@dataclass(frozen=True)
class Enrichment:
    """One stage's result for one mention, stored keyed by (mention_id, stage, model_version)."""

    mention_id: str
    stage: str
    model_version: str
    data: dict[str, Any] = field(default_factory=dict)


class Stage(Protocol):
    name: str

    @property
    def version(self) -> str: ...

    def run(self, mentions: Sequence[Mention]) -> list[Enrichment]: ...
