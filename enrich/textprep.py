"""Text normalisation and truncation shared by sentiment training and runtime.

Kept free of torch/transformers so the product can import it cheaply; the
training code calls exactly the same functions, so the model sees identical
input distributions in both places.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable

__all__ = [
    "clean_unicode",
    "compose_title_text",
    "demojize",
    "has_at_least",
    "has_signal",
    "head_tail_ids",
    "lowered_for_ascii_patterns",
    "normalise",
    "smart_truncate_chars",
]

_URL_RE = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION_RE = re.compile(r"(?<![\w@])@\w{1,30}")
_WS_RE = re.compile(r"\s+")
_LETTER_RE = re.compile(r"[^\W\d_]", re.UNICODE)
# Characters that carry no meaning for the classifier: variation selectors,
# zero-width joiners/spaces, skin-tone modifiers, tag characters.
_INVISIBLE = {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0xFE0E, 0xFE0F, 0x20E3}
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
"""Unicode category Cc (U+0000-001F, U+007F-009F) minus tab, newline and carriage return."""
_DEMOJI_CANDIDATE_RE = re.compile(
    "[\u200b-\u200d\u2060\ufeff\ufe0e\ufe0f\u20e3\u2190-\u2bff\u3030-\u303d"
    "\U0001f000-\U0001faff\U000e0020-\U000e007f]"
)
"""Every character `demojize` drops or renames; text without one comes back unchanged (the common case)."""


def clean_unicode(text: str | bytes) -> str:
    """Decode bytes / strip lone surrogates so downstream code never raises.

    Posts arrive from many scrapers; invalid UTF-8 and unpaired surrogates
    (e.g. from JSON ``\\ud83d`` halves) are replaced instead of crashing.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        text = str(text)
    text = text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
    # Drop C0/C1 control characters except whitespace (one regex pass, not a category look-up per character).
    return _CONTROL_RE.sub("", text)


def _is_emoji(ch: str) -> bool:
    cp = ord(ch)
    if cp < 0x2190:
        return False
    cat = unicodedata.category(ch)
    if cat != "So":
        return False
    return (
        0x2190 <= cp <= 0x2BFF  # arrows, misc symbols, dingbats
        or 0x1F000 <= cp <= 0x1FAFF  # emoji blocks
        or 0x3030 <= cp <= 0x303D
    )


def demojize(text: str, max_repeat: int = 2) -> str:
    """Replace emoji with their Unicode names ("face with tears of joy").

    The MiniLM WordPiece vocabulary maps almost every emoji to [UNK], which
    throws away a strong sentiment cue; the Unicode name is a stable,
    dependency-free textual stand-in. Runs of the same emoji are capped at
    ``max_repeat`` so a wall of hearts does not eat the token budget.
    """
    if not _DEMOJI_CANDIDATE_RE.search(text):
        return text
    out: list[str] = []
    last: str | None = None
    run = 0
    for ch in text:
        cp = ord(ch)
        if cp in _INVISIBLE or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
            continue
        if _is_emoji(ch):
            run = run + 1 if ch == last else 1
            last = ch
            if run > max_repeat:
                continue
            name = unicodedata.name(ch, "")
            if name:
                name = name.lower().replace("black ", "").replace("heavy ", "")
                out.append(f" {name} ")
            continue
        last, run = None, 0
        out.append(ch)
    return "".join(out)


def normalise(text: str | bytes) -> str:
    """Canonical model input: clean, unescape, @user/http placeholders, emoji names.

    Mentions become ``@user`` and URLs ``http`` (TweetEval convention) so user
    names and links cannot leak into the decision.
    """
    text = clean_unicode(text)
    text = html.unescape(text)
    text = _URL_RE.sub("http", text)
    text = _MENTION_RE.sub("@user", text)
    text = demojize(text)
    return _WS_RE.sub(" ", text).strip()


def has_signal(text: str) -> bool:
    """True when normalised text contains letters (any script) or emoji names.

    Emoji are already words after :func:`normalise`, so "no letters" means the
    post is only digits/punctuation/placeholders and the model would guess.
    """
    stripped = text.replace("@user", " ").replace("http", " ")
    return bool(_LETTER_RE.search(stripped))


def has_at_least(text: str, need: int, test: Callable[[str], bool] = str.isalpha) -> bool:
    """At least `need` characters of `text` pass `test` (letters by default).

    Stops at the `need`-th hit: the stages only ask "are there 3 letters?", which a post answers within
    its first few characters, so counting all of them was wasted work on every long post.
    """
    found = 0
    if need <= 0:
        return True
    for ch in text:
        if test(ch):
            found += 1
            if found >= need:
                return True
    return False


IGNORECASE_ASCII_TWINS = "\u0130\u0131\u212a\u017f"
"""The non-ASCII characters re.IGNORECASE equates with an ASCII letter: dotted capital I, dotless i,
Kelvin sign, long s (tests/enrich/test_insight_invariance.py checks this against every code point)."""


def lowered_for_ascii_patterns(text: str) -> str | None:
    """`text.lower()` when case-sensitive search with lowercase-ASCII patterns finds there exactly what
    IGNORECASE search finds in `text`, else None.

    Case-sensitive matching is about twice as fast. It is equivalent unless the text holds one of
    `IGNORECASE_ASCII_TWINS` (U+0130 is also the only character whose lowercase is two characters);
    lowercasing changes no character's \\w, \\d or \\s class (both checked over every code point).
    """
    if any(ch in text for ch in IGNORECASE_ASCII_TWINS):
        return None
    return text.lower()


def caseless_ascii_pattern(pattern: str) -> bool:
    """True when `pattern` (meant for IGNORECASE) can run case-sensitively on lowered text instead:
    its literal letters are lowercase ASCII, it sets no inline flags, and its escapes are classes,
    anchors or punctuation (an escape such as \\x41 could spell an uppercase letter)."""
    if re.search(r"\(\?[a-zA-Z-]", pattern):
        return False
    bare = re.sub(r"\\[bBwWdDsSAZntrfv]|\\[^0-9a-zA-Z]", "", pattern)
    return "\\" not in bare and bare.isascii() and not any(ch.isupper() for ch in bare)


def compose_title_text(title: str | None, text: str | None) -> str:
    """Join a post's title and body the way the stage feeds the classifier."""
    parts = [p.strip() for p in (title or "", text or "") if p and p.strip()]
    if len(parts) < 2:
        return parts[0] if parts else ""
    head, body = parts
    if body.startswith(head):  # many feeds repeat the title as the first line
        return body
    sep = " " if head[-1] in ".!?:;" else ". "
    return head + sep + body


def smart_truncate_chars(text: str, head: int = 2000, tail: int = 1000) -> str:
    """Cheap character pre-cut for huge posts before tokenisation.

    Keeps the start (topic, title) and the end (conclusion/verdict) which is
    where reviews state their opinion; the tokenizer then never sees 100 kB.
    """
    if len(text) <= head + tail + 5:
        return text
    return text[:head] + " ... " + text[-tail:]


def head_tail_ids(ids: list[int], max_len: int, cls_id: int, sep_id: int, head_frac: float = 0.5) -> list[int]:
    """Token-level head+tail truncation of an encoded sequence (with specials).

    ``ids`` must start with [CLS] and end with [SEP]. Keeps ``head_frac`` of the
    budget from the start and the rest from the end of the content.
    """
    if len(ids) <= max_len:
        return ids
    body = ids[1:-1]
    budget = max_len - 2
    n_head = max(1, round(budget * head_frac))
    n_tail = budget - n_head
    kept = body[:n_head] + (body[-n_tail:] if n_tail > 0 else [])
    return [cls_id, *kept, sep_id]
