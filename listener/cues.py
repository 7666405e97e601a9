"""Heuristic cues for "what customers want" until the insight layer classifies intent properly.

Deliberately simple and explainable: a question is a "?" or a how-do-I style opener, a request
is a wish/please-add phrase. The digest labels these lists as heuristic so nobody mistakes them
for a model's judgement. Every function takes plain text and never raises.
"""

from __future__ import annotations

import re

_QUESTION = re.compile(
    r"\?|\b(?:how (?:do|can|could|would|should) (?:i|we|you)|how to|is there (?:a|any) way|does any(?:one|body) know"
    r"|any(?:one|body) know|can (?:i|we|you|it)|why (?:does|doesn't|is|isn't|can't|won't|do)"
    r"|what(?:'s| is) the best way|where (?:do|can) i)\b",
    re.IGNORECASE,
)
_REQUEST = re.compile(
    r"\b(?:please (?:add|support|make|bring|let|allow|consider)|would love|i'd love|we'd love|wish(?:es|ed|list)?"
    r"|feature request|it would be (?:great|nice|awesome|amazing) if|would be (?:great|nice) to have"
    r"|(?:can|could) you (?:please )?(?:add|support|make)|need a way to|missing (?:a |an )?feature"
    r"|hope (?:you|they) add|really want(?:s|ed)? (?:a|an|to be able))\b",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"^\s*>.*$", re.MULTILINE)
_URL = re.compile(r"https?://\S+")

HEURISTIC_NOTE = (
    "Requests and questions are spotted by simple phrase cues (\u201cplease add\u201d, \u201cwould love\u201d, "
    "\u201chow do I\u201d, a question mark); complaints are mentions the sentiment model rated negative."
)


def _clean(text: str) -> str:
    """Ignore quoted replies and URLs: a '?' inside a link or someone else's quote is not this author asking."""
    return _URL.sub(" ", _QUOTED.sub(" ", text or ""))


def is_question(text: str) -> bool:
    return bool(_QUESTION.search(_clean(text)))


def is_request(text: str) -> bool:
    return bool(_REQUEST.search(_clean(text)))


def intents(text: str) -> frozenset[str]:
    """{"request", "question"} subset; a request phrased as a question counts as a request only."""
    if is_request(text):
        return frozenset({"request"})
    if is_question(text):
        return frozenset({"question"})
    return frozenset()
