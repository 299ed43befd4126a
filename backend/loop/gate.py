"""The promotion gate: does a round's candidate replace the serving model (the champion)?

Both models are scored in the same round on the same held-out posts, and each post keeps
its own strict-entity counts (true positives, false positives, false negatives). The gate
resamples posts with replacement (a paired bootstrap: one draw of posts, both models
scored on it), recomputes the corpus F1 of each model from the summed counts of the draw,
and looks at the distribution of F1(candidate) - F1(champion) over BOOTSTRAP_RESAMPLES
draws (seeded, so a round's decision is reproducible).

Rule: promote when the candidate is not worse than the champion with 90% confidence:
the 10th percentile of that distribution is >= -margin, where the margin is the
project's `[retrain] tolerance` (the F1 loss it accepts as "no worse"). Two identical
models have a difference of exactly 0 in every draw, so an equal candidate is promoted
(it was trained on at least the champion's data). With no champion (the first model, or
a base without a head for the labels) a candidate that trained is promoted. Below
MIN_BOOTSTRAP_POSTS held-out posts a bootstrap measures nothing: the decision falls back to
the point F1s (candidate >= champion - margin) and its reason says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20261201
CONFIDENCE = 0.9  # one-sided: the lower bound is the (1 - CONFIDENCE) quantile
MIN_BOOTSTRAP_POSTS = 10

Counts = Sequence[Sequence[int]]  # per post: (true positives, false positives, false negatives)


def post_counts(gold_tags: Sequence[Sequence[str]], predicted_tags: Sequence[Sequence[str]]):
    """Per-post strict IOB2 entity counts, read the way `training.evaluate` reads them for
    its overall strict F1 (so the counts of all posts give back exactly that F1)."""
    from seqeval.scheme import IOB2, Entities

    counts = []
    for gold, predicted in zip(gold_tags, predicted_tags, strict=True):
        g = {e.to_tuple()[1:] for e in Entities([list(gold)], IOB2).entities[0]}
        p = {e.to_tuple()[1:] for e in Entities([list(predicted)], IOB2).entities[0]}
        tp = len(g & p)
        counts.append([tp, len(p) - tp, len(g) - tp])
    return counts


def corpus_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed counts along the last-but-one axis ([..., posts, 3])."""
    tp, fp, fn = (counts[..., i].sum(axis=-1) for i in range(3))
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


@dataclass
class Comparison:
    """A paired bootstrap of F1(candidate) - F1(champion) over the same posts."""

    posts: int
    candidate_f1: float
    champion_f1: float
    difference: float  # on all posts
    low: float  # the (1 - CONFIDENCE) quantile of the resampled differences
    high: float  # the CONFIDENCE quantile
    resamples: int
    seed: int

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def paired_bootstrap(
    candidate: Counts,
    champion: Counts,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Comparison:
    a, b = np.asarray(candidate, dtype=np.int64), np.asarray(champion, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3 or len(a) == 0:
        raise ValueError(f"per-post counts of different posts: {a.shape} and {b.shape}")
    n = len(a)
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    differences = corpus_f1(a[draws]) - corpus_f1(b[draws])
    point_a, point_b = float(corpus_f1(a)), float(corpus_f1(b))
    return Comparison(
        posts=n,
        candidate_f1=point_a,
        champion_f1=point_b,
        difference=point_a - point_b,
        low=float(np.quantile(differences, 1 - CONFIDENCE)),
        high=float(np.quantile(differences, CONFIDENCE)),
        resamples=resamples,
        seed=seed,
    )


@dataclass
class Decision:
    promote: bool
    reason: str
    details: dict  # recorded with the round and the version ("gate")


def decide(result: dict, margin: float, heldout: int) -> Decision:
    """The gate for a trained round's `result.json` (backend.loop.child.run)."""
    candidate, champion = result.get("candidate") or {}, result.get("baseline") or {}
    details: dict = {"rule": "paired-bootstrap", "margin": margin, "posts": heldout}
    if heldout == 0:
        details["measured"] = False
        return Decision(
            True, "no held-out posts yet: promoted without comparison (nothing to measure)", details
        )
    f1 = candidate.get("f1")
    if f1 is None:
        details["measured"] = False
        why = candidate.get("error", "no result")
        return Decision(False, f"the candidate could not be scored: {why}", details)
    if champion.get("f1") is None:
        details.update(measured=False, first=True)
        name, error = champion.get("version"), str(champion.get("error") or "")
        why = ""
        if error:  # the full error is in the round's result.json
            why = (
                " (the project base has no head for these labels)"
                if name == "base"
                else f" ({name} cannot be scored: {error.split(':')[0][:100]})"
            )
        return Decision(
            True,
            f"first model: nothing to compare with{why}; held-out F1 {f1:.4f} on {heldout} posts",
            details,
        )
    name, champion_f1 = champion.get("version", "the serving model"), float(champion["f1"])
    details["champion"] = name
    versus = f"held-out F1 {f1:.4f} vs {name} {champion_f1:.4f} on {heldout} posts"
    a, b = candidate.get("per_post"), champion.get("per_post")
    if heldout < MIN_BOOTSTRAP_POSTS or not a or not b or len(a) != len(b):
        details["measured"] = False
        promote = f1 >= champion_f1 - margin
        why = (
            f"only {heldout} held-out posts (fewer than {MIN_BOOTSTRAP_POSTS}): too few to "
            "tell a gain from noise"
            if heldout < MIN_BOOTSTRAP_POSTS
            else "no per-post counts to resample"
        )
        verdict = "promoted" if promote else "refused"
        sign = ">=" if promote else "<"
        return Decision(
            promote,
            f"{why}; {verdict} on the point F1 alone ({f1:.4f} {sign} {champion_f1:.4f} - "
            f"margin {margin}); {versus}",
            details,
        )
    comparison = paired_bootstrap(a, b)
    details.update(measured=True, confidence=CONFIDENCE, **comparison.to_dict())
    interval = (
        f"paired bootstrap over posts ({comparison.resamples} resamples): difference "
        f"{comparison.difference:+.4f}, {round(200 * CONFIDENCE - 100)}% interval "
        f"[{comparison.low:+.4f}, {comparison.high:+.4f}]"
    )
    if comparison.low >= -margin:
        return Decision(
            True,
            f"not worse than {name} with {CONFIDENCE:.0%} confidence (lower bound "
            f"{comparison.low:+.4f} >= -{margin}); {versus}; {interval}",
            details,
        )
    return Decision(
        False,
        f"may be worse than {name} (lower bound {comparison.low:+.4f} < -{margin} at "
        f"{CONFIDENCE:.0%} confidence); {versus}; {interval}",
        details,
    )


def summary(details: dict | None) -> str:
    """One short line for status and the report: the interval, or why there is none."""
    if not details:
        return "-"
    if details.get("first"):
        return f"first model: nothing to compare ({details.get('posts')} held-out posts)"
    if not details.get("measured"):
        posts = details.get("posts")
        return "not measured" + (f" ({posts} held-out posts)" if posts is not None else "")
    return (
        f"{details['difference']:+.3f} [{details['low']:+.3f}, {details['high']:+.3f}] "
        f"on {details['posts']} posts"
    )
