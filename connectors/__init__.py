"""Connectors, one module per source kind. Imported lazily so one broken optional dependency
(e.g. praw) never stops the other sources."""

from __future__ import annotations

import importlib

from connectors.base import Connector
from listener.config import Config
from listener.errors import ConfigError

REGISTRY: dict[str, str] = {
    "rss": "connectors.rss:RSSConnector",
    "reddit": "connectors.reddit:RedditConnector",
    "hackernews": "connectors.hackernews:HackerNewsConnector",
    "discourse": "connectors.discourse:DiscourseConnector",
    "stackexchange": "connectors.stackexchange:StackExchangeConnector",
    "lemmy": "connectors.lemmy:LemmyConnector",
    "mastodon": "connectors.mastodon:MastodonConnector",
    "appstore": "connectors.appstore:AppStoreConnector",
    "googleplay": "connectors.googleplay:GooglePlayConnector",
    "reviews": "connectors.reviews:ReviewPageConnector",
}


def connector_class(kind: str) -> type[Connector]:
    try:
        target = REGISTRY[kind]
    except KeyError:
        raise KeyError(f"no connector for kind {kind!r}") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Connector] = getattr(module, attr)
    return cls


def validate_sources(config: Config) -> None:
    """Fail fast on a source key its connector does not read (a typo would otherwise be silently ignored)."""
    for source in config.sources:
        try:
            connector_class(source.kind).check_params(source)
        except ConfigError as exc:
            raise ConfigError(exc.message, path=str(config.path) if config.path else None, key=exc.key) from None


__all__ = ["REGISTRY", "Connector", "connector_class", "validate_sources"]
