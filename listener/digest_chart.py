"""The digest's 14-day volume chart: the daily series by sentiment and its PNG.

Apart from listener/digest_html.py because it is the one part that needs matplotlib (optional: a
digest goes out without its chart when it is missing) and works on a day series, not on mentions.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from listener.types import Mention

if TYPE_CHECKING:
    from listener.digest_html import EmailDigest

log = logging.getLogger("listener.digest_html")
"""The digest's logger, as before the chart had a module of its own."""
CHART_DAYS = 14
COLOURS = {"negative": "#d64545", "neutral": "#a3adb8", "positive": "#2f9e6e", "unrated": "#dfe4ea"}
"""Sentiment colours shared by the chart and the digest's HTML bars."""


@dataclass
class DayVolume:
    """One bar of the chart: a local day's mentions by sentiment."""

    day: date
    counts: Counter[str] = field(default_factory=Counter)  # SENTIMENTS + "unrated"
    in_period: bool = True  # the chart shades the days this digest covers


def daily_volumes(
    window: list[Mention], labels: dict[str, str | None], until: datetime, tz: tzinfo
) -> list[DayVolume]:
    """The last CHART_DAYS local days up to `until`, each mention counted under its sentiment (or "unrated")."""
    last = until.astimezone(tz).date()
    days = {last - timedelta(days=i): DayVolume(last - timedelta(days=i)) for i in range(CHART_DAYS - 1, -1, -1)}
    for m in window:
        slot = days.get(m.created_at.astimezone(tz).date())
        if slot is not None:
            slot.counts[labels.get(m.id) or "unrated"] += 1
    return list(days.values())


def render_chart(daily: Sequence[DayVolume]) -> bytes:
    """Stacked daily bars (negative at the bottom, where the eye starts) as a PNG, via Agg: no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 2.1), dpi=200)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    xs = list(range(len(daily)))
    bottom = [0] * len(daily)
    for key in ("negative", "neutral", "positive", "unrated"):
        values = [d.counts[key] for d in daily]
        if any(values) or key != "unrated":
            ax.bar(xs, values, bottom=bottom, color=COLOURS[key], width=0.72, label=key, linewidth=0)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(xs[::2] if len(xs) > 8 else xs)
    ax.set_xticklabels([f"{d.day:%b} {d.day.day}" for d in daily][:: 2 if len(xs) > 8 else 1], fontsize=7,
                       color="#5b6670")
    ax.tick_params(axis="y", labelsize=7, colors="#5b6670", length=0)
    ax.tick_params(axis="x", length=0)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.spines["bottom"].set_color("#ccd3da")
    ax.yaxis.grid(True, color="#eef1f4", linewidth=0.8)
    ax.set_axisbelow(True)
    inside = [i for i, d in enumerate(daily) if d.in_period]
    if inside and len(inside) < len(daily):
        ax.axvspan(inside[0] - 0.5, inside[-1] + 0.5, color="#eef3fb", zorder=0, linewidth=0)
        ax.text(inside[-1] + 0.45, 1.0, "this digest", transform=ax.get_xaxis_transform(), ha="right", va="top",
                fontsize=6.5, color="#5b7bb0")
    if any(bottom):
        ax.set_ylim(0, max(bottom) * 1.18)
    else:
        ax.text(0.5, 0.5, "no mentions in the last 14 days", transform=ax.transAxes, ha="center", color="#8a949e")
        ax.set_ylim(0, 1)
    ax.legend(loc="upper left", ncols=4, fontsize=7, frameon=False, bbox_to_anchor=(0, 1.2), handlelength=1)
    fig.tight_layout(pad=0.4)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def chart_png(ed: EmailDigest) -> bytes | None:
    """The chart, or None (no series, or matplotlib not installed: the digest goes out without it)."""
    if not ed.daily:
        return None
    try:
        return render_chart(ed.daily)
    except ImportError as exc:
        log.warning("digest chart skipped: %s (pip install matplotlib)", exc)
        return None
