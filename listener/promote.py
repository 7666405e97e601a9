"""Promote an emerging cluster into the topic taxonomy: a new `[[topics]]` entry in the user's config.

An emerging cluster (`listener topics --emerging`) is a theme the taxonomy does not cover yet. Promoting
it writes a topic whose seeds are the cluster's most central quotes (the phrasings customers actually
used) and whose keywords are its c-TF-IDF terms, so the topic stage recognises the theme from then on.
The topic stage's version hashes the taxonomy, so the next `listener enrich` re-tags stored mentions.

The file is edited by appending (comments and layout stay as the user wrote them). A config that had no
`[[topics]]` used the built-in default taxonomy: that is copied in first, since one `[[topics]]` entry
would otherwise replace the whole default. The new text is parsed before it replaces the file, and the
replacement is atomic: a failure leaves the config exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from datetime import UTC, datetime
from pathlib import Path

from enrich.emerging import EmergingCluster
from enrich.topics import Topic, default_taxonomy, default_taxonomy_toml, parse_taxonomy
from listener.errors import ConfigError

NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,47}$")
MAX_SEEDS = 5
MAX_SEED_CHARS = 200


def _toml_str(value: str) -> str:
    """A TOML basic string: JSON's escapes are valid TOML ones, and JSON leaves only DEL unescaped of the
    control characters TOML forbids."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _seed(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_SEED_CHARS else flat[: MAX_SEED_CHARS - 1].rsplit(" ", 1)[0] + "…"


def topic_entry(cluster: EmergingCluster, name: str, now: datetime | None = None) -> str:
    """The `[[topics]]` TOML block for `cluster` under `name`."""
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%d")
    keywords = [k.lower() for k in cluster.keywords if k.strip()]
    seeds = list(dict.fromkeys(_seed(q["text"]) for q in cluster.quotes if q.get("text", "").strip()))[:MAX_SEEDS]
    description = f"Emerging theme: {', '.join(keywords[:6])}." if keywords else "Emerging theme."
    lines = [
        "",
        "[[topics]]",
        f"# promoted from emerging cluster {cluster.id} on {when} ({cluster.size} mentions); edit freely",
        f"name = {_toml_str(name)}",
        f"description = {_toml_str(description)}",
        f"seeds = [{', '.join(_toml_str(s) for s in seeds)}]",
        f"keywords = [{', '.join(_toml_str(k) for k in keywords)}]",
    ]
    return "\n".join(lines) + "\n"


def _default_tables() -> str:
    return default_taxonomy_toml(
        "\n# Topic taxonomy: the built-in default, copied here when the first emerging cluster was promoted\n"
        "# (a config with its own [[topics]] replaces the default). Edit, remove or add topics freely.\n"
    )


def promote_cluster(config_path: Path, cluster: EmergingCluster, name: str, now: datetime | None = None) -> Topic:
    """Append `cluster` as topic `name` to the config at `config_path`; returns the new topic."""
    name = name.strip()
    if not NAME.match(name):
        raise ConfigError(
            f"topic name {name!r}: use 1-48 lower-case letters, digits, '_' or '-', starting with a letter or digit"
        )
    try:
        text = config_path.read_text("utf-8")
        tables = tomllib.loads(text).get("topics") or []
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=str(config_path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=str(config_path)) from None
    existing = parse_taxonomy(tables) if tables else default_taxonomy()
    if any(t.name == name for t in existing):
        raise ConfigError(
            f"the taxonomy already has a topic named {name!r}: pick another --name", path=str(config_path)
        )
    new_text = text.rstrip("\n") + "\n" + ("" if tables else _default_tables()) + topic_entry(cluster, name, now)
    try:
        topics = parse_taxonomy(tomllib.loads(new_text)["topics"])  # what the topic stage will read
    except tomllib.TOMLDecodeError as exc:  # a quote the escaping missed: refuse, the file stays as it was
        raise ConfigError(
            f"the new [[topics]] entry would not parse ({exc}); nothing written", path=str(config_path)
        ) from None
    fd, tmp = tempfile.mkstemp(prefix=f".{config_path.name}.", dir=config_path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(new_text)
        os.chmod(tmp, config_path.stat().st_mode & 0o777)
        os.replace(tmp, config_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return next(t for t in topics if t.name == name)
