"""HTML → clean text for every connector (feeds, forums, reviews all carry HTML fragments)."""

from __future__ import annotations

import re
import warnings

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning

_BLOCK = ("p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre")
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")


def html_to_text(fragment: str | None) -> str:
    """Visible text of an HTML fragment: scripts/styles dropped, blocks become line breaks, whitespace folded.

    Plain text passes through unchanged apart from whitespace folding, so callers need not know which they have.
    """
    if not isinstance(fragment, str) or not fragment:
        return ""  # a payload field of another type (number, list, object) has no text
    if "<" not in fragment and "&" not in fragment:
        return _fold(fragment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(fragment, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    for tag in soup.find_all(_BLOCK):
        tag.insert_before("\n")
        tag.insert_after("\n")
    return _fold(soup.get_text())


def _fold(text: str) -> str:
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()
