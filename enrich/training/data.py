"""Sentiment data loading, label mapping and fixed-seed splits.

Sources (read-only, never copied into the repo):
- SemEval 2013-2016 Twitter (training pool; 2,000 stratified tweets held back for calibration)
- TweetEval sentiment validation (model selection only, never trained on)
- Sentiment140 manual test (evaluation only)
- Hutto & Gilbert ICWSM-2014 ground truth (tweets, Amazon review sentences, movie snippets,
  NYT snippets) from the vaderSentiment 3.3.2 sdist, fetched with ``pip download``;
  each domain split 70/10/20 train/calib/test (grouped by review/article where ids allow).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import random
import subprocess
import sys
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from enrich.textprep import normalise

LABELS = ("negative", "neutral", "positive")
LABEL2ID = {name: i for i, name in enumerate(LABELS)}
SEED = 13
NEUTRAL_BAND = 0.5  # |mean rating| < 0.5 on the -4..+4 scale -> neutral (see neutral_band_study)
REPO = Path(__file__).resolve().parents[2]
CORPORA = Path(os.environ.get("LISTENER_CORPORA", REPO.parent / "shared" / "corpora"))  # ../shared beside the clone
CACHE = Path(os.environ.get("LISTENER_TRAIN_CACHE", REPO / ".cache"))
VADER_VERSION = "3.3.2"
FIRST_TEACHER = "mpnet-teacher-v1"
SOFT_LABELS = REPO / "enrich" / "training" / "data" / "teacher_soft_labels.npz"
"""The first teacher's soft labels (committed); later teachers' sit beside it (`soft_labels_path`)."""
ICWSM_DOMAINS = {
    "icwsm_tweets": "tweets",
    "icwsm_products": "amazonReviewSnippets",
    "icwsm_movies": "movieReviewSnippets",
    "icwsm_news": "nytEditorialSnippets",
}
TRAIN_DOMAINS = {"semeval", *ICWSM_DOMAINS}


def soft_labels_path(run: str) -> Path:
    """Where a teacher run's soft labels are committed (the first teacher keeps the historical name)."""
    return SOFT_LABELS if run == FIRST_TEACHER else SOFT_LABELS.with_name(f"teacher_soft_labels-{run}.npz")


@dataclass(frozen=True)
class Example:
    """One normalised, labelled text with its provenance."""

    uid: str
    text: str
    label: int
    domain: str
    split: str
    rating: float | None = None


def ensure_vader_sdist(cache: Path = CACHE) -> Path:
    """Fetch the vaderSentiment sdist (PyPI) once and unpack the ICWSM-2014 ground truth."""
    root = cache / "vader"
    gt_dir = root / "icwsm" / "hutto_ICWSM_2014"
    if (gt_dir / "tweets_GroundTruth.txt").exists():
        return gt_dir
    root.mkdir(parents=True, exist_ok=True)
    sdist = root / f"vaderSentiment-{VADER_VERSION}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"vaderSentiment=={VADER_VERSION}",
                "-d",
                str(root),
            ],
            check=True,
        )
    with tarfile.open(sdist) as tf:
        member = tf.getmember(f"vaderSentiment-{VADER_VERSION}/additional_resources/hutto_ICWSM_2014.tar.gz")
        fobj = tf.extractfile(member)
        assert fobj is not None
        (root / "icwsm").mkdir(exist_ok=True)
        with tarfile.open(fileobj=fobj) as inner:
            inner.extractall(root / "icwsm", filter="data")
    return gt_dir


def rating_to_label(mean: float, band: float = NEUTRAL_BAND) -> int:
    """Map a mean human rating (-4..+4) to negative/neutral/positive."""
    if abs(mean) < band:
        return LABEL2ID["neutral"]
    return LABEL2ID["positive"] if mean > 0 else LABEL2ID["negative"]


def neutral_band_study(gt_dir: Path, bands: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> dict[str, dict[str, float]]:
    """Per domain and band: share of individual rater votes whose sign agrees with the item class.

    The chosen band is the one that best reproduces what individual raters said
    (a rating of 0 counts as a neutral vote).
    """
    out: dict[str, dict[str, float]] = {}
    for domain, stem in ICWSM_DOMAINS.items():
        rows = []
        for line in (gt_dir / f"{stem}_anonDataRatings.txt").read_text("utf-8-sig", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) >= 4:
                rows.append((float(parts[1]), ast.literal_eval(parts[3])))
        res: dict[str, float] = {}
        for band in bands:
            agree = total = 0
            for mean, votes in rows:
                cls = rating_to_label(mean, band) - 1
                for v in votes:
                    agree += (v > 0) - (v < 0) == cls
                    total += 1
            res[f"{band:g}"] = round(agree / total, 4)
        out[domain] = res
    return out


def _split_groups(keys: list[str], rng: random.Random, fracs: tuple[float, float]) -> dict[str, str]:
    uniq = sorted(set(keys))
    rng.shuffle(uniq)
    n_train = int(len(uniq) * fracs[0])
    n_cal = int(len(uniq) * fracs[1])
    assign = {}
    for i, k in enumerate(uniq):
        assign[k] = "train" if i < n_train else ("calib" if i < n_train + n_cal else "test")
    return assign


def load_icwsm(gt_dir: Path | None = None) -> list[Example]:
    """ICWSM-2014 sentences with 70/10/20 splits per domain (grouped by document id)."""
    gt_dir = gt_dir or ensure_vader_sdist()
    out: list[Example] = []
    for domain, stem in ICWSM_DOMAINS.items():
        rng = random.Random(f"{SEED}-{domain}")
        rows = []
        for line in (gt_dir / f"{stem}_GroundTruth.txt").read_text("utf-8-sig", errors="replace").splitlines():
            parts = line.split("\t")
            if len(parts) < 3 or not parts[2].strip():
                continue
            rows.append((parts[0].strip(), float(parts[1]), parts[2]))
        groups = [uid.split("_")[0] for uid, _, _ in rows]  # "12_3" = document 12, sentence 3
        assign = _split_groups(groups, rng, (0.7, 0.1))
        for (uid, mean, text), grp in zip(rows, groups, strict=True):
            out.append(Example(f"{domain}:{uid}", normalise(text), rating_to_label(mean), domain, assign[grp], mean))
    return out


def load_semeval(calib_size: int = 2000) -> list[Example]:
    """SemEval pool; a stratified ``calib_size`` subset is held back for temperature scaling."""
    path = CORPORA / "sentiment_semeval_twitter" / "train.tsv"
    rows: list[Example] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for i, r in enumerate(reader):
            rows.append(Example(f"semeval:{i}", normalise(r["text"]), LABEL2ID[r["label"]], "semeval", "train"))
    rng = random.Random(f"{SEED}-semeval")
    idx = list(range(len(rows)))
    rng.shuffle(idx)
    calib = set(idx[:calib_size])
    return [Example(e.uid, e.text, e.label, e.domain, "calib" if i in calib else "train") for i, e in enumerate(rows)]


def load_tweeteval_val() -> list[Example]:
    """TweetEval validation (model selection only)."""
    d = CORPORA / "sentiment_tweeteval"
    texts = (d / "val_text.txt").read_text("utf-8").splitlines()
    labels = (d / "val_labels.txt").read_text("utf-8").split()
    return [
        Example(f"tweeteval:{i}", normalise(t), int(y), "tweeteval_val", "val")
        for i, (t, y) in enumerate(zip(texts, labels, strict=True))
    ]


def load_sentiment140() -> list[Example]:
    """Sentiment140 manual test set (498 tweets; evaluation only)."""
    path = CORPORA / "sentiment_sentiment140_test" / "sentiment140_testdata_manual_2009_06_14_with_header.csv"
    mapping = {"0": 0, "2": 1, "4": 2}
    with path.open(encoding="latin-1", newline="") as fh:
        return [
            Example(f"s140:{r['tweet_id']}", normalise(r["text"]), mapping[r["polarity"]], "sentiment140", "test")
            for r in csv.DictReader(fh)
        ]


def load_app_reviews() -> list[Example]:
    """App Store + Google Play reviews from the shared corpora, star rating as a weak label (evaluation only).

    1-2 stars negative, 3 neutral, 4-5 positive: the reviewer's own verdict on the app, which is what a
    product team reads these reviews for. Parsed with the product's own connectors. 91 reviews (86 not 3-star).
    """
    from connectors.appstore import parse_appstore_feed
    from connectors.googleplay import parse_play_page

    mentions = []
    feed = CORPORA / "appstore_reviews" / "customerreviews_id1321994487_us.json"
    if feed.exists():
        mentions += parse_appstore_feed(json.loads(feed.read_text("utf-8")), source="appstore")[0]
    for page in sorted((CORPORA / "google_play").glob("*.html")):
        mentions += parse_play_page(page.read_text("utf-8"), source="googleplay", package=page.stem)[0]
    out = []
    for m in mentions:
        if m.rating is None:
            continue
        label = 0 if m.rating <= 2 else 1 if m.rating == 3 else 2
        text = normalise(" ".join(x for x in (m.title, m.text) if x))
        out.append(Example(f"app:{m.source}:{m.native_id}", text, label, "app_reviews", "test"))
    return out


def load_all() -> list[Example]:
    """Every example from every source, with its split."""
    return load_semeval() + load_icwsm() + load_tweeteval_val() + load_sentiment140()


def select(examples: list[Example], split: str, domains: set[str] | None = None) -> list[Example]:
    return [e for e in examples if e.split == split and (domains is None or e.domain in domains)]


def reweight_domains(examples: list[Example], weights: dict[str, float], rng: random.Random) -> list[Example]:
    """`examples` with each domain repeated (integer part) and sampled (fractional part) by its weight."""
    out: list[Example] = []
    for e in examples:
        factor = weights.get(e.domain, 1.0)
        if factor < 0:
            raise ValueError(f"domain weight for {e.domain} must be >= 0, got {factor}")
        whole = int(factor)
        out.extend([e] * (whole + (rng.random() < factor - whole)))
    return out


def split_sizes(examples: list[Example]) -> dict[str, dict[str, int]]:
    sizes: dict[str, Counter[str]] = {}
    for e in examples:
        sizes.setdefault(f"{e.domain}/{e.split}", Counter())[LABELS[e.label]] += 1
    return {k: dict(sorted(v.items())) | {"total": sum(v.values())} for k, v in sorted(sizes.items())}


def prepare(out_dir: Path = CACHE / "train" / "data") -> dict[str, object]:
    """Materialise all splits as JSONL under the cache and write a manifest (sizes, band study)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = load_all()
    with (out_dir / "examples.jsonl").open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    manifest: dict[str, object] = {
        "seed": SEED,
        "neutral_band": NEUTRAL_BAND,
        "neutral_band_rater_agreement": neutral_band_study(ensure_vader_sdist()),
        "split_sizes": split_sizes(examples),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_prepared(out_dir: Path = CACHE / "train" / "data") -> list[Example]:
    """Read the JSONL written by :func:`prepare` (running it first if needed)."""
    path = out_dir / "examples.jsonl"
    if not path.exists():
        prepare(out_dir)
    with path.open(encoding="utf-8") as fh:
        return [Example(**json.loads(line)) for line in fh]
