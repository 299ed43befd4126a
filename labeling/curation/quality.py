"""The quality of the labels themselves: agreement between annotators, how much they
changed the model's pre-annotations, and spans the model confidently contradicts.

Everything here reads plain annotation records (`labeling.store.AnnotationRecord` or any
object with the same attributes), so it works on the backend's store and on a Label
Studio export file alike.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from training.text import OUTSIDE, Document, Span, spans_to_tags, split_tag, words

OVERALL = "overall"


def usable(records: Iterable) -> list:
    """Records that hold a real annotation: not cancelled (skipped), not deleted."""
    return [r for r in records if not r.cancelled and not r.deleted]


def latest_per_annotator(records: Iterable) -> dict[int, list]:
    """task id -> its usable annotations, the latest one per annotator, oldest first.

    An annotator who saved twice on one post agrees with themself; only their last word
    counts when comparing annotators.
    """
    by_task: dict[int, dict] = defaultdict(dict)
    for record in sorted(usable(records), key=lambda r: (r.updated_at, r.annotation_id)):
        who = record.annotator if record.annotator is not None else f"#{record.annotation_id}"
        by_task[record.task_id][who] = record
    return {task: list(latest.values()) for task, latest in by_task.items()}


# ---------------------------------------------------------------- span matching


def match_spans(
    a: Sequence[Span], b: Sequence[Span], partial: bool, same_label: bool = True
) -> list[tuple[Span, Span]]:
    """One-to-one pairs of spans: equal offsets and label first, then (partial) spans that
    share a character, largest overlap first, of the same label unless `same_label` is off."""
    exact = {s.key() for s in a} & {s.key() for s in b}
    pairs = [(s, s) for s in sorted(a, key=Span.key) if s.key() in exact]
    if not partial:
        return pairs
    rest_a = [s for s in a if s.key() not in exact]
    rest_b = [s for s in b if s.key() not in exact]
    candidates = sorted(
        (
            (min(x.end, y.end) - max(x.start, y.start), i, j)
            for i, x in enumerate(rest_a)
            for j, y in enumerate(rest_b)
            if (x.label == y.label or not same_label) and x.start < y.end and y.start < x.end
        ),
        key=lambda c: (-c[0], c[1], c[2]),
    )
    used_a, used_b = set(), set()
    for _, i, j in candidates:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((rest_a[i], rest_b[j]))
    return pairs


# ---------------------------------------------------------------- agreement


@dataclass
class AgreementCounts:
    """Summed over annotator pairs: spans on each side and matched pairs."""

    spans: int = 0  # spans of both annotators together
    exact: int = 0
    partial: int = 0

    @property
    def exact_f1(self) -> float:
        return 2 * self.exact / self.spans if self.spans else 0.0

    @property
    def partial_f1(self) -> float:
        return 2 * self.partial / self.spans if self.spans else 0.0


@dataclass
class Agreement:
    posts: int  # posts labelled by two or more annotators
    pairs: int  # annotator pairs compared
    by_label: dict[str, AgreementCounts]  # plus OVERALL
    kappa: float | None  # Cohen's kappa on word IOB2 tags, pooled over pairs
    kappa_by_label: dict[str, float | None]  # kappa on "word is in label L" per label
    annotators: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "posts": self.posts,
            "pairs": self.pairs,
            "annotators": self.annotators,
            "kappa": _round(self.kappa),
            "span_f1": {
                label: {
                    "exact": round(c.exact_f1, 4),
                    "partial": round(c.partial_f1, 4),
                    "spans": c.spans,
                    "kappa": _round(self.kappa_by_label.get(label)),
                }
                for label, c in self.by_label.items()
            },
        }


def agreement(records: Iterable, labels: Sequence[str] | None = None) -> Agreement:
    """Inter-annotator agreement on posts labelled by more than one annotator.

    Span F1 for a pair is 2 * matched / (spans of A + spans of B), symmetric in A and B;
    counts are summed over all pairs before dividing (micro average). Kappa compares the
    two annotators' IOB2 tags word by word.
    """
    counts: dict[str, AgreementCounts] = defaultdict(AgreementCounts)
    tags_a: list[str] = []
    tags_b: list[str] = []
    posts = pairs = 0
    annotators: set[str] = set()
    for group in latest_per_annotator(records).values():
        if len(group) < 2:
            continue
        posts += 1
        offsets = words(group[0].text)
        for a, b in combinations(group, 2):
            pairs += 1
            annotators.update(str(r.annotator) for r in (a, b))
            for label in {s.label for s in [*a.spans, *b.spans]}:
                sa = [s for s in a.spans if s.label == label]
                sb = [s for s in b.spans if s.label == label]
                c = counts[label]
                c.spans += len(sa) + len(sb)
                c.exact += len(match_spans(sa, sb, partial=False))
                c.partial += len(match_spans(sa, sb, partial=True))
            tags_a += spans_to_tags(a.spans, offsets)
            tags_b += spans_to_tags(b.spans, offsets)
    order = list(labels or []) + sorted(set(counts) - set(labels or []))
    by_label = {label: counts.get(label, AgreementCounts()) for label in order}
    overall = AgreementCounts()
    for c in by_label.values():
        overall.spans += c.spans
        overall.exact += c.exact
        overall.partial += c.partial
    by_label[OVERALL] = overall
    kappa_by_label = {}
    for label in order:
        in_a = [split_tag(t)[1] == label for t in tags_a]
        in_b = [split_tag(t)[1] == label for t in tags_b]
        kappa_by_label[label] = cohen_kappa(in_a, in_b)
    return Agreement(
        posts, pairs, by_label, cohen_kappa(tags_a, tags_b), kappa_by_label, sorted(annotators)
    )


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """sklearn's Cohen's kappa; None without data, 1.0 when both say one thing only."""
    if not a:
        return None
    if list(a) == list(b):
        return 1.0  # sklearn answers nan when chance agreement is already total
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(a, b))


# ---------------------------------------------------------------- edits of pre-annotations

EDIT_KINDS = ("accepted", "corrected", "deleted", "added")


@dataclass
class PreannotationEdits:
    """Per label: pre-annotated spans kept as they were (`accepted`), kept with other
    offsets or another label (`corrected`, counted under the predicted label), removed
    (`deleted`), and spans the annotator drew that no prediction overlapped (`added`,
    counted under the annotator's label)."""

    annotations: int  # annotations that started from a pre-annotation
    by_label: dict[str, Counter]  # plus OVERALL
    relabelled: Counter = field(default_factory=Counter)  # (predicted, final) label pairs
    by_model_version: dict[str, Counter] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "annotations": self.annotations,
            "by_label": {
                label: {kind: c[kind] for kind in EDIT_KINDS}
                | {"acceptance": _round(acceptance(c))}
                for label, c in self.by_label.items()
            },
            "relabelled": [
                {"from": a, "to": b, "count": n} for (a, b), n in self.relabelled.most_common()
            ],
            "by_model_version": {
                v: {kind: c[kind] for kind in EDIT_KINDS} | {"acceptance": _round(acceptance(c))}
                for v, c in self.by_model_version.items()
            },
        }


def acceptance(c: Counter) -> float | None:
    """Share of pre-annotated spans the annotator kept unchanged."""
    offered = c["accepted"] + c["corrected"] + c["deleted"]
    return c["accepted"] / offered if offered else None


def preannotation_edits(records: Iterable, labels: Sequence[str] | None = None):
    """How annotators changed the pre-annotations they started from.

    Only annotations that carry a pre-annotation count (a prediction model version or
    prediction spans): an annotation drawn from scratch says nothing about the model.
    """
    by_label: dict[str, Counter] = defaultdict(Counter)
    by_version: dict[str, Counter] = defaultdict(Counter)
    relabelled: Counter = Counter()
    n = 0
    for record in usable(records):
        if not record.prediction_spans and not record.prediction_model_version:
            continue
        n += 1
        version = record.prediction_model_version or "unknown"
        pairs = match_spans_any_label(record.prediction_spans, record.spans)
        matched_pred = {p.key() for p, _ in pairs}
        matched_final = {f.key() for _, f in pairs}
        edits = [("accepted" if p.key() == f.key() else "corrected", p.label) for p, f in pairs]
        relabelled.update((p.label, f.label) for p, f in pairs if p.label != f.label)
        edits += [
            ("deleted", p.label) for p in record.prediction_spans if p.key() not in matched_pred
        ]
        edits += [("added", f.label) for f in record.spans if f.key() not in matched_final]
        for kind, label in edits:
            by_label[label][kind] += 1
            by_label[OVERALL][kind] += 1
            by_version[version][kind] += 1
    order = list(labels or []) + sorted(set(by_label) - set(labels or []) - {OVERALL})
    result = {label: by_label.get(label, Counter()) for label in order}
    result[OVERALL] = by_label.get(OVERALL, Counter())
    return PreannotationEdits(n, result, relabelled, dict(by_version))


def match_spans_any_label(predicted: Sequence[Span], final: Sequence[Span]):
    """Pairs of a predicted and a final span: exact keys first, then overlapping spans of
    any label, largest overlap first (a relabelled or resized span is a correction)."""
    return match_spans(predicted, final, partial=True, same_label=False)


# ---------------------------------------------------------------- likely label errors


@dataclass
class LabelIssue:
    """A span worth a second look: the model confidently says something else."""

    doc_id: str | None
    kind: str  # "disputed": the model gives the gold span another label or none;
    #            "missing": the model confidently finds a span the annotation lacks
    span: Span
    model_label: str  # what the model says: a label, or "O" for no span
    confidence: float  # the model's probability for what it says
    context: str = ""

    def to_dict(self) -> dict:
        return {
            "doc_id": self.doc_id,
            "kind": self.kind,
            "start": self.span.start,
            "end": self.span.end,
            "label": self.span.label,
            "text": self.span.text,
            "model_label": self.model_label,
            "confidence": round(self.confidence, 4),
            "context": self.context,
        }


def likely_label_errors(
    tagger, docs: Sequence[Document], threshold: float = 0.9, batch_size: int = 16
) -> list[LabelIssue]:
    """Gold spans the model confidently contradicts, and confident spans the gold lacks.

    A gold span is disputed when the model's mean per-word probability for another label
    (or for no label) reaches `threshold`; label probabilities add the B- and I- tags.
    Sorted by confidence, most confident first.
    """
    issues: list[LabelIssue] = []
    for first in range(0, len(docs), batch_size):
        batch = docs[first : first + batch_size]
        for doc, prediction in zip(batch, tagger.predict([d.text for d in batch]), strict=True):
            issues += _issues(doc, prediction, threshold)
    return sorted(issues, key=lambda i: -i.confidence)


def _issues(doc: Document, prediction, threshold: float) -> list[LabelIssue]:
    probs = np.asarray(prediction.probs, dtype=np.float64)
    if probs.size == 0:
        return []
    names = [split_tag(t)[1] or OUTSIDE for t in prediction.tags]
    options = list(dict.fromkeys(names))
    # per word, probability of each label (B- + I-) and of O
    by_label = np.stack(
        [probs[:, [i for i, n in enumerate(names) if n == o]].sum(axis=1) for o in options], axis=1
    )
    starts = [w[0] for w in prediction.words]
    ends = [w[1] for w in prediction.words]
    issues = []
    for span in doc.spans:
        inside = [
            i
            for i, (s, e) in enumerate(zip(starts, ends, strict=True))
            if s < span.end and span.start < e
        ]
        if not inside:
            continue
        mean = by_label[inside].mean(axis=0)
        best = int(np.argmax(mean))
        if options[best] != span.label and mean[best] >= threshold:
            text = span.text or doc.text[span.start : span.end]
            issues.append(
                LabelIssue(
                    doc.id,
                    "disputed",
                    Span(span.start, span.end, span.label, text),
                    options[best],
                    float(mean[best]),
                    _context(doc.text, span),
                )
            )
    for span in prediction.spans:
        if span.score is None or span.score < threshold:
            continue
        if any(g.start < span.end and span.start < g.end for g in doc.spans):
            continue
        text = span.text or doc.text[span.start : span.end]
        found = Span(span.start, span.end, OUTSIDE, text)
        issues.append(
            LabelIssue(
                doc.id, "missing", found, span.label, float(span.score), _context(doc.text, span)
            )
        )
    return issues


def _context(text: str, span: Span, width: int = 40) -> str:
    left = text[max(0, span.start - width) : span.start]
    right = text[span.end : span.end + width]
    return " ".join(f"{left}[[{text[span.start : span.end]}]]{right}".split())


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
