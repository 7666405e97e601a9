"""Community knowledge: which questions customers ask, and which ones the community already solved.

Forum and Q&A sources (Stack Exchange, Discourse, Lemmy) carry thread structure: a question (the
thread's first post) and answers/replies. An answer is linked to its question when it is accepted
(Stack Exchange `is_accepted`, the question's `accepted_answer_id`, Discourse `accepted_answer`) or,
failing that, when it is the top-voted reply with a positive score. An answer that contains a
workaround cue ("try …", "workaround", "fixed it by", "instead") makes the question "solved by the
community" — content support can point customers to, or a docs gap to close.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from listener.types import Mention
    from storage import Store

FORUM_KINDS = ("stackexchange", "discourse", "lemmy")
WORKAROUND = re.compile(
    r"\b(?:workaround|work around|try (?:to|this|setting|using|adding|removing|clearing|running)|you can|"
    r"instead|fixed it|fix(?:ed)? (?:it|this) by|solved|solution|the trick is|what worked|turn(?:ing)? off|"
    r"reinstall\w*|clear(?:ing)? (?:the )?cache|downgrad\w*|set \w+ to)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class QA:
    """One question with its best answer (None when unanswered) and how that answer was chosen."""

    question: Mention
    answer: Mention | None
    how: str | None
    """"accepted" | "top_voted" | None"""
    answers: int
    workaround: bool

    @property
    def title(self) -> str:
        return (self.question.title or self.question.text[:120]).strip()

    def as_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question.id,
            "title": self.title,
            "url": self.question.url,
            "score": self.question.score,
            "answers": self.answers,
            "answer_id": self.answer.id if self.answer else None,
            "answer_url": self.answer.url if self.answer else None,
            "how": self.how,
            "workaround": self.workaround,
        }


def _is_question(m: Mention) -> bool:
    if m.parent_id:
        return False
    if m.kind == "stackexchange":
        return m.native_id.startswith("q")
    if m.kind == "discourse":
        return int(m.extra.get("post_number") or 0) == 1
    return m.thread_id in (None, m.native_id)


def _accepted(question: Mention, answer: Mention) -> bool:
    if answer.extra.get("is_accepted") is True or answer.extra.get("accepted_answer") is True:
        return True
    wanted = question.extra.get("accepted_answer_id")
    return wanted is not None and answer.native_id in (str(wanted), f"a{wanted}")


def link_threads(mentions: Iterable[Mention]) -> list[QA]:
    """Group forum mentions by (source, thread) and pair each question with its best answer."""
    threads: dict[tuple[str, str], list[Mention]] = {}
    for m in mentions:
        if m.kind in FORUM_KINDS and m.thread_id:
            threads.setdefault((m.source, m.thread_id), []).append(m)
    out = []
    for thread in threads.values():
        posts = list({p.native_id: p for p in thread}.values())  # a page may repeat an item: count it once
        questions = [p for p in posts if _is_question(p)]
        if not questions:
            continue
        q = min(questions, key=lambda p: p.created_at)
        replies = [p for p in posts if not _is_question(p)]
        accepted = [a for a in replies if _accepted(q, a)]
        best, how = (accepted[0], "accepted") if accepted else (None, None)
        if best is None:
            voted = [a for a in replies if (a.score or 0) > 0]
            if voted:
                best, how = max(voted, key=lambda a: (a.score or 0, -a.created_at.timestamp())), "top_voted"
        work = bool(best and WORKAROUND.search(best.text or ""))
        out.append(QA(q, best, how, len(replies), work))
    return out


def _engagement(qa: QA) -> float:
    q = qa.question
    views = float(q.extra.get("view_count") or 0)
    return (q.score or 0) * 3 + (q.comments or 0) + qa.answers * 2 + views / 1000


def _forum_mentions(store: Store, since: datetime, until: datetime | None) -> list[Mention]:
    from listener.types import utcnow

    end = until or utcnow() + timedelta(seconds=1)
    # Answers may be newer than the window's questions: read a little past `until` is not needed,
    # but questions older than `since` with new answers are out of scope by design.
    return [m for m in store.mentions_between(since, end) if m.kind in FORUM_KINDS]


def top_questions(store: Store, since: datetime, limit: int = 20, until: datetime | None = None) -> list[QA]:
    """Most-engaged questions asked since `since` (votes, answers, comments, views), with best answers."""
    qas = link_threads(_forum_mentions(store, since, until))
    return sorted(qas, key=lambda qa: (-_engagement(qa), qa.question.created_at))[: max(0, limit)]


def solved_by_community(store: Store, since: datetime, until: datetime | None = None) -> list[QA]:
    """Questions whose accepted / top-voted answer offers a workaround: candidates for docs or FAQ."""
    qas = link_threads(_forum_mentions(store, since, until))
    return sorted((qa for qa in qas if qa.answer is not None and qa.workaround), key=lambda qa: -_engagement(qa))


def unanswered(qas: Sequence[QA]) -> list[QA]:
    return [qa for qa in qas if qa.answer is None]
