"""Journey-stage stage: where in the customer journey a mention sits.

awareness (first hearing of / announcing a product), consideration (comparing, asking for
recommendations), purchase (buying, plans, checkout), onboarding_use (setting up and using it),
support (asking for or giving help with a problem, contact with support), advocacy_churn
(recommending it, long-time loyalty, or leaving/switching away); "none" when the text is not about a
product or service experience at all — most of what a broad listening query catches.
Same method as the intent stage (prototypes + cues, weights tuned on the dev split only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from enrich.embedding import Encoder, default_encoder
from enrich.intent import PrototypeClassifier, PrototypeStage, words

if TYPE_CHECKING:
    from storage import Store

STAGE = "journey"
NONE = "none"

JOURNEY_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "awareness": (
        "Show HN: we just launched a new tool that does this.",
        "I have written a web app that archives linked pages, here is how it works.",
        "Just heard about this product, never knew it existed.",
        "Announcing version 2.0 of our app.",
    ),
    "consideration": (
        "Which is better for me, this or the competitor?",
        "I'm thinking about switching from the other product, is it worth it?",
        "What are some must-have apps or tools you would recommend?",
        "I really want to replace my current tool but it lacks one feature I need.",
    ),
    "purchase": (
        "I just bought the premium plan.",
        "Is the pro version worth the price before I subscribe?",
        "Checkout failed when I tried to pay for the subscription.",
        "I opened an account and ordered the card.",
    ),
    "onboarding_use": (
        "I use the mobile app every day to deposit checks and transfer money.",
        "Since the latest update the app crashes when I log in.",
        "Easy to use, I like the new design.",
        "I just installed it and set it up on my phone.",
        "The feature works well but the screen is hard to read.",
    ),
    "support": (
        "How do I fix this error? Any help appreciated.",
        "I contacted customer support and they resolved my problem.",
        "Try clearing the cache, that fixed it for me.",
        "Here is how to solve it: change this setting in the options.",
        "I was wondering if this is possible, I'm new and confused about the settings.",
        "Is there an easy way to get this list with the library? I looked at the docs.",
        "That appears to be a bug, I pushed a new version that should fix it.",
        "Problem solved: here is the link to the answer.",
    ),
    "advocacy_churn": (
        "I've been a customer for 20 years and would recommend them to everybody.",
        "Hands down the best, tell all your friends.",
        "I'm cancelling my subscription and switching to a competitor.",
        "This would be a reason to leave and close my account.",
    ),
}

JOURNEY_CUES: dict[str, tuple[str, ...]] = {
    "awareness": (
        words(
            "show hn",
            r"launch\w*",
            r"announc\w*",
            r"introduc\w*",
            "i (?:have )?(?:written|built|made) (?:a|an)",
            "new release",
            "just released",
        ),
    ),
    "consideration": (
        words(
            r"vs\.?",
            "versus",
            "compared? to",
            r"alternative\w*",
            r"recommend(?:ation)?s?\??",
            "worth it",
            "should i (?:buy|get|use)",
            "must have",
            "switch(?:ing)? (?:from|to)",
            "replace",
        ),
    ),
    "purchase": (
        words(
            "bought",
            "buy",
            r"purchas\w*",
            "order(?:ed)?",
            r"subscrib\w*",
            "checkout",
            "pricing",
            "paid",
            "pay for",
            "sign(?:ed)? up",
            "opened an account",
            "applied for",
        ),
    ),
    "onboarding_use": (
        words(
            "app",
            "update",
            "log ?in",
            r"install\w*",
            "set ?up",
            "using",
            "use it",
            "i use",
            "feature",
            "works?",
            "deposit",
            "screen",
            "version",
        ),
    ),
    "support": (
        words(
            "help",
            "support",
            "customer service",
            "fix(?:ed)?",
            r"solv\w*",
            "workaround",
            "try (?:this|setting|to)",
            "issue",
            "how (?:do|can) i",
            "is it possible",
            "tutorial",
            "wiki",
            "docs?",
        ),
    ),
    "advocacy_churn": (
        words(
            r"recommend\w* (?:to|it|them)",
            "would recommend",
            "been with",
            "years",
            r"for \d+ (?:yrs|years)",
            r"cancel\w*",
            r"switch\w*",
            r"leav\w*",
            r"clos\w* (?:my )?account",
            "never again",
            "reason not",
        ),
    ),
}
# From `python -m enrich.evaluate_insight --tune` (dev split only, macro-F1 0.516 on dev; re-tuned for the
# per-token int8 encoder minilm-l6-v2-base-onnx-pt8-2; kept for the static st8-1, whose vectors are as close to fp32).
JOURNEY_WEIGHTS: dict[str, Any] = {
    "cue": 0.25,
    "bias": {"consideration": 0.18, "onboarding_use": 0.14, "support": 0.08},
}
JOURNEY_OTHER_BAR = 0.5


def journey_classifier(encoder: Encoder | None = None, **overrides: Any) -> PrototypeClassifier:
    params: dict[str, Any] = {
        "other_bar": JOURNEY_OTHER_BAR,
        "cue_weight": JOURNEY_WEIGHTS["cue"],
        "bias": JOURNEY_WEIGHTS["bias"],
        "other": NONE,
    }
    params.update(overrides)
    return PrototypeClassifier(JOURNEY_PROTOTYPES, JOURNEY_CUES, encoder=encoder or default_encoder(), **params)


class JourneyStage(PrototypeStage):
    """Stage "journey": one journey-stage label (or "none") per mention."""

    name = STAGE
    tag = "journey1"

    def __init__(self, store: Store | None = None, encoder: Encoder | None = None) -> None:
        super().__init__(journey_classifier(encoder), store)
