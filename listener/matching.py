"""Watch-query language: what a brand/product/competitor looks like in free text.

A query is one or more alternatives joined by ``OR``; inside an alternative every word or
``"quoted phrase"`` must appear (AND). ``-word`` / ``-"phrase"`` anywhere excludes the mention.
Matching is case-insensitive and respects word boundaries, so ``acme`` does not match ``acmeist``.

    acme OR "acme cloud" -hiring -"job offer"
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from listener.errors import ConfigError


def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    words = phrase.split()
    body = r"\s+".join(re.escape(w) for w in words)
    # \w-boundaries that also work when the phrase starts/ends with punctuation (e.g. "c++", ".net").
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Alternative:
    required: tuple[str, ...]
    patterns: tuple[re.Pattern[str], ...] = field(compare=False, repr=False)

    def matches(self, text: str) -> bool:
        return all(p.search(text) for p in self.patterns)


@dataclass(frozen=True)
class QueryExpr:
    """A compiled query expression."""

    source: str
    alternatives: tuple[Alternative, ...]
    excluded: tuple[str, ...]
    exclusion_patterns: tuple[re.Pattern[str], ...] = field(compare=False, repr=False)

    def matches(self, text: str) -> bool:
        if any(p.search(text) for p in self.exclusion_patterns):
            return False
        return any(alt.matches(text) for alt in self.alternatives)

    @property
    def phrases(self) -> tuple[str, ...]:
        """Positive phrases, for highlighting and for building service-side search queries."""
        return tuple(dict.fromkeys(p for alt in self.alternatives for p in alt.required))


def parse_query(text: str) -> QueryExpr:
    """Compile a query string; raises ValueError with a readable message on bad syntax."""
    try:
        tokens = shlex.split(text, posix=True)
    except ValueError as exc:  # unbalanced quotes
        raise ValueError(f"cannot parse query {text!r}: {exc}") from None
    # shlex drops the quotes; recover which tokens were phrases is unnecessary: a phrase is just words.
    alternatives: list[list[str]] = [[]]
    excluded: list[str] = []
    for token in tokens:
        if token == "OR":
            alternatives.append([])
            continue
        if token.startswith("-") and len(token) > 1:
            excluded.append(token[1:].strip())
            continue
        if token.strip():
            alternatives[-1].append(token.strip())
    alts = [a for a in alternatives if a]
    if not alts:
        raise ValueError(f"query {text!r} has no positive term (only exclusions or OR)")
    if len(alts) != len(alternatives):
        raise ValueError(f"query {text!r} has a dangling OR")
    return QueryExpr(
        source=text,
        alternatives=tuple(Alternative(required=tuple(a), patterns=tuple(_phrase_pattern(p) for p in a)) for a in alts),
        excluded=tuple(excluded),
        exclusion_patterns=tuple(_phrase_pattern(p) for p in excluded if p),
    )


@dataclass(frozen=True)
class WatchQuery:
    """A named set of query expressions (OR-ed), e.g. a brand, a product or a competitor."""

    name: str
    terms: tuple[str, ...]
    competitor: bool = False
    expressions: tuple[QueryExpr, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(
        cls, name: str, terms: list[str] | tuple[str, ...], competitor: bool = False, *, path: str | None = None
    ) -> WatchQuery:
        exprs = []
        for i, term in enumerate(terms):
            try:
                exprs.append(parse_query(term))
            except ValueError as exc:
                raise ConfigError(str(exc), path=path, key=f"watch.{name}.terms[{i}]") from None
        if not exprs:
            raise ConfigError("needs at least one term", path=path, key=f"watch.{name}.terms")
        return cls(name=name, terms=tuple(terms), competitor=competitor, expressions=tuple(exprs))

    def matches(self, text: str) -> bool:
        return any(e.matches(text) for e in self.expressions)

    @property
    def phrases(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for e in self.expressions for p in e.phrases))


def match_watches(text: str, watches: tuple[WatchQuery, ...] | list[WatchQuery]) -> tuple[str, ...]:
    """Names of the watch queries that `text` matches, in config order."""
    return tuple(w.name for w in watches if w.matches(text))
