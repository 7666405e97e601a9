"""Normalisation/truncation shared by training and runtime: must be deterministic and total."""

from __future__ import annotations

import random
import unicodedata

from enrich import textprep
from enrich.textprep import (
    clean_unicode,
    compose_title_text,
    demojize,
    has_at_least,
    has_signal,
    head_tail_ids,
    normalise,
    smart_truncate_chars,
)


def test_mentions_and_urls_use_tweeteval_placeholders() -> None:
    text = "@Bob_99 see https://t.co/abc?x=1 and www.example.com/page, mail me@example.com"
    assert normalise(text) == "@user see http and http mail me@example.com"


def test_html_entities_unescaped_and_whitespace_collapsed() -> None:
    assert normalise("  rock &amp; roll\n\n&lt;3  ") == "rock & roll <3"


def test_normalise_is_idempotent_on_its_output() -> None:
    once = normalise("@x loved it 😍😍😍 http://a.b #great")
    assert normalise(once) == once


def test_demojize_names_and_caps_repeats() -> None:
    out = demojize("ok 😂😂😂😂")
    assert out.count("face with tears of joy") == 2
    assert "heart" in demojize("❤️")  # variation selector dropped, "heavy black" stripped
    assert "thumbs up" in demojize("👍🏽")  # skin tone modifier dropped
    assert demojize("plain text, no emoji") == "plain text, no emoji"


def test_clean_unicode_handles_bytes_and_lone_surrogates() -> None:
    assert clean_unicode(b"caf\xc3\xa9 \xff\xfe ok") == "café \ufffd\ufffd ok"
    cleaned = clean_unicode("bad \ud83d half")
    cleaned.encode("utf-8")  # must not raise
    assert cleaned.startswith("bad ") and cleaned.endswith(" half")
    assert clean_unicode("a\x00b\x07c\td") == "abc\td"


def test_has_signal() -> None:
    assert has_signal(normalise("great"))
    assert has_signal(normalise("😡"))
    assert has_signal(normalise("Привет мир"))
    assert not has_signal(normalise("!!! 123 ..."))
    assert not has_signal(normalise("@someone https://x.y"))


def test_compose_title_text() -> None:
    assert compose_title_text("Great app", "Works well") == "Great app. Works well"
    assert compose_title_text("Great app!", "Works well") == "Great app! Works well"
    assert compose_title_text(None, "only body") == "only body"
    assert compose_title_text("Title", "Title and more") == "Title and more"
    assert compose_title_text("  ", "") == ""


def test_smart_truncate_chars_keeps_head_and_tail() -> None:
    text = "START " + "x" * 100_000 + " END"
    out = smart_truncate_chars(text, head=100, tail=50)
    assert out.startswith("START ") and out.endswith(" END") and len(out) == 155
    assert smart_truncate_chars("short") == "short"


def test_head_tail_ids() -> None:
    ids = [101, *range(1, 301), 102]
    out = head_tail_ids(ids, 10, 101, 102, head_frac=0.5)
    assert out == [101, 1, 2, 3, 4, 297, 298, 299, 300, 102]
    assert head_tail_ids([101, 5, 102], 10, 101, 102) == [101, 5, 102]
    assert head_tail_ids(ids, 10, 101, 102, head_frac=1.0) == [101, *range(1, 9), 102]


def _reference_clean(text: str) -> str:
    """The per-character implementation the regex fast path replaced."""
    text = text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")
    return "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch) != "Cc")


def _reference_demojize(text: str, max_repeat: int = 2) -> str:
    """demojize without its early return for text holding no candidate character."""
    out: list[str] = []
    last, run = None, 0
    for ch in text:
        cp = ord(ch)
        if cp in textprep._INVISIBLE or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F:
            continue
        if textprep._is_emoji(ch):
            run = run + 1 if ch == last else 1
            last = ch
            if run <= max_repeat and (name := unicodedata.name(ch, "")):
                out.append(f" {name.lower().replace('black ', '').replace('heavy ', '')} ")
            continue
        last, run = None, 0
        out.append(ch)
    return "".join(out)


def test_fast_paths_match_the_per_character_rules() -> None:
    """clean_unicode's regex and demojize's early return change nothing: checked on random mixed text."""
    rng = random.Random(7)
    ranges = [(0, 0x250), (0x2000, 0x2100), (0x2180, 0x2C10), (0x3020, 0x3040), (0xFE00, 0xFF00)]
    ranges += [(0x1F000, 0x1FB00), (0xE0000, 0xE0100)]
    pool = [chr(c) for a, b in ranges for c in range(a, b)] + ["\ud83d"]
    for _ in range(3000):
        text = "".join(
            rng.choice(pool) if rng.random() < 0.3 else rng.choice("ab cd") for _ in range(rng.randint(0, 40))
        )
        cleaned = clean_unicode(text)
        assert cleaned == _reference_clean(text)
        assert demojize(cleaned) == _reference_demojize(cleaned)
    assert demojize("plain ascii, nothing to do") == "plain ascii, nothing to do"


def test_has_at_least_matches_counting() -> None:
    """The early-exit count answers like counting every character (letters, or any predicate)."""
    rng = random.Random(3)
    pool = [*"ab1 _-é٣", "\u00b2", "日", "🙂"]
    for _ in range(2000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 12)))
        for need in (0, 1, 3):
            assert has_at_least(text, need) == (sum(ch.isalpha() for ch in text) >= need)
            assert has_at_least(text, need, str.isalnum) == (sum(ch.isalnum() for ch in text) >= need)
