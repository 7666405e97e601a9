"""Hypothesis building blocks for the reliability suite: JSON-like values, mutated captures, mutated bytes.

Every property test in this package is bounded (`BOUNDED`: 200 examples, no deadline, derandomized so a
strict xfail for a known bug is reproducible run after run, no example database written into the repo).
"""

from __future__ import annotations

import copy
import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from listener.errors import ListenerError
from listener.types import Mention

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
SOURCE = "fuzz-src"

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["2024-01-02T03:04:05Z", "<p>a &amp; b</p>", "gp:x", "1", "", "0.1.2"])
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


def _get(root: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        root = root[key]
    return root


def _same_type(value: Any) -> st.SearchStrategy[Any]:
    """A random value of the JSON type `value` already has (the schema holds, the content is hostile)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(min_value=-(2**63), max_value=2**63)
    if isinstance(value, float):
        return st.floats()
    if isinstance(value, str):
        return st.text(max_size=40) | st.sampled_from(["", "<b>", "&#0;", "\x00", "2999-99-99T99:99:99Z"])
    if isinstance(value, list):
        return st.lists(json_values, max_size=2) | st.just([])
    if isinstance(value, dict):
        return st.just({})
    return st.none()


@st.composite
def mutated_json(draw: st.DrawFn, base: Any, *, keep_types: bool) -> Any:
    """`base` (a real capture) with 1-4 nodes replaced or deleted. keep_types: replacements keep the JSON type."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(doc))))
        old = _get(doc, path)
        new = draw(_same_type(old) if keep_types else json_values)
        if not path:
            doc = new
            continue
        parent = _get(doc, path[:-1])
        if not keep_types and isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = new
    return doc


@st.composite
def mutated_bytes(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with bytes flipped, runs cut, syntax fragments inserted, or the tail truncated."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 200))]
        elif op == "insert":
            data[i:i] = draw(
                st.binary(max_size=16)
                | st.sampled_from(
                    [b"<", b"&", b"]]>", b"<![CDATA[", b"\x00", b'"', b"{", b"[", b"\xff\xfe", b"</script>"]
                )
            )
        else:
            del data[i:]
    return bytes(data)


@dataclass(frozen=True)
class KnownBug:
    """A crash the fuzzer found that is pinned by a strict-xfail reproducer (test_known_bug_reproducer).

    Property tests tolerate it so they keep guarding against *new* bugs; when the fix lands the
    reproducer XPASSes (strict) and the entry is deleted here."""

    name: str
    types: tuple[type[BaseException], ...]
    where: tuple[str, ...]
    """Function names (innermost project frame) or, for AssertionError, message prefixes."""
    contains: str = ""
    """Instead of `where`: any connector frame, with this text in the message."""

    def matches(self, exc: BaseException) -> bool:
        if not isinstance(exc, self.types):
            return False
        if isinstance(exc, AssertionError):
            return str(exc).startswith(self.where)
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/connectors/" in f.filename]
        if self.contains:
            return bool(frames) and self.contains in str(exc)
        return bool(frames) and frames[-1].name in self.where


KNOWN_BUGS: tuple[KnownBug, ...] = ()
"""Crashes found by fuzzing and not yet fixed (tolerated by the property tests, pinned by a reproducer)."""


def check_outcome(call: Any, *, tolerate_known: bool = True) -> list[Mention]:
    """Run a parser: it returns well-typed mentions, or raises a ListenerError naming SOURCE. Anything else fails."""
    try:
        result = call()
        found = result[0] if isinstance(result, tuple) else result
        mentions = [m for m in found if isinstance(m, Mention)] if isinstance(found, list) else []
        for m in mentions:
            assert_well_typed(m)
    except ListenerError as exc:
        assert SOURCE in str(exc), f"error does not name the source: {exc}"
        return []
    except Exception as exc:
        if tolerate_known and any(bug.matches(exc) for bug in KNOWN_BUGS):
            return []
        raise
    return mentions


def assert_well_typed(m: Mention) -> None:
    """What storage and every surface rely on: strings where strings go, numbers where numbers go."""
    assert m.source == SOURCE and isinstance(m.native_id, str) and m.native_id
    assert isinstance(m.text, str), f"text is {m.text!r}"
    for name in ("title", "author", "url", "thread_id", "parent_id", "language"):
        value = getattr(m, name)
        assert value is None or isinstance(value, str), f"{name} is {type(value).__name__}: {value!r}"
    for name in ("score", "rating"):
        value = getattr(m, name)
        assert value is None or (isinstance(value, float | int) and not isinstance(value, bool)), f"{name}={value!r}"
    assert m.comments is None or (isinstance(m.comments, int) and not isinstance(m.comments, bool)), m.comments
    assert m.created_at.tzinfo is not None
    json.dumps(m.to_dict(), default=str)  # serialisable for the API/exports
