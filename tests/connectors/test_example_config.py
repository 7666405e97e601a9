"""`listener init`'s example config must be true: every key it sets (or suggests in a comment) is one the
connector reads, every connector builds from it, and each `params` table documents only keys its code reads."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

import connectors.base
from connectors import REGISTRY, connector_class
from listener.config import _SOURCE_COMMON, Config, load_config, parse_config
from listener.errors import ConfigError
from listener.http import HttpClient
from listener.types import SOURCE_KINDS

EXAMPLE = Path(__file__).resolve().parents[2] / "listener" / "example.toml"
SUGGESTED = re.compile(r"^# ?([a-z_]+ = .+)$", re.MULTILINE)
"""A commented-out `key = value` line: an optional setting the example suggests."""
READS = r"""(?:param|secret|required_url)\(\s*["']{key}["']"""


def with_suggestions() -> Config:
    """The example with every suggested `# key = value` line of its [[source]] tables switched on."""
    head, *tables = EXAMPLE.read_text(encoding="utf-8").split("[[source]]")
    assert any(SUGGESTED.search(table) for table in tables), "the example suggests no optional keys any more"
    text = "[[source]]".join([head, *(SUGGESTED.sub(r"\1", table) for table in tables)])
    return parse_config(tomllib.loads(text), str(EXAMPLE))


def test_every_example_source_builds_and_sets_only_keys_it_reads(http: HttpClient) -> None:
    config = load_config(EXAMPLE)
    assert sorted(s.kind for s in config.sources) == sorted(SOURCE_KINDS)  # one example per kind
    for source in config.sources:
        cls = connector_class(source.kind)
        unread = sorted(set(source.params) - set(cls.params))
        assert not unread, f"source.{source.name}: {unread} are not keys a {source.kind} connector reads"
        status = cls(source, http, config.watches).status()
        assert isinstance(status, str) and status, f"source.{source.name}: status() gave {status!r}"


def test_suggested_settings_are_real_keys_too(http: HttpClient) -> None:
    config = with_suggestions()
    for source in config.sources:
        cls = connector_class(source.kind)
        assert set(source.params) <= set(cls.params), f"source.{source.name}: {set(source.params) - set(cls.params)}"
        assert isinstance(cls(source, http, config.watches).status(), str)


def test_the_examples_mention_the_important_keys() -> None:
    """The keys people most often need are shown (set or suggested) in the example of their kind."""
    important = {
        "reddit": {"subreddits", "search", "comments", "client_id", "client_secret"},
        "appstore": {"app_id", "countries"},
        "mastodon": {"base_url", "hashtags", "access_token"},
        "stackexchange": {"site", "tagged", "key"},
        "discourse": {"base_url", "api_key", "api_username", "category"},
        "lemmy": {"base_url", "communities"},
        "googleplay": {"package", "lang", "country"},
        "reviews": {"urls"},
    }
    shown = {s.kind: set(s.params) for s in with_suggestions().sources}
    for kind, keys in important.items():
        assert keys <= shown[kind], f"the {kind} example does not show {sorted(keys - shown[kind])}"


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_params_document_only_keys_the_code_reads(kind: str) -> None:
    cls = connector_class(kind)
    assert cls.params, f"{kind}: no `params` table"
    code = inspect.getsource(inspect.getmodule(cls)) + inspect.getsource(connectors.base)  # type: ignore[arg-type]
    for key, description in cls.params.items():
        assert description.strip(), f"{kind}.{key}: empty description"
        assert key not in _SOURCE_COMMON, f"{kind}.{key} is a common key, not the connector's"
        assert re.search(READS.format(key=re.escape(key)), code), f"{kind}: `{key}` is documented but never read"


def test_unknown_key_is_refused_with_its_name(http: HttpClient) -> None:
    source = next(s for s in load_config(EXAMPLE).sources if s.kind == "reddit")
    typo = replace(source, params={**source.params, "subredits": ["python"]})
    with pytest.raises(ConfigError, match=r"source\.reddit\.subredits: .*did you mean 'subreddits'\?"):
        connector_class("reddit")(typo, http)
    other_kind = replace(source, params={**source.params, "hashtags": ["python"]})
    with pytest.raises(ConfigError, match=r"source\.reddit\.hashtags: reddit sources have no key 'hashtags'"):
        connector_class("reddit")(other_kind, http)
