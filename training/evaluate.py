"""Evaluation: seqeval entity P/R/F1 on word IOB2 tags plus exact character-span P/R/F1.

What is served is what is scored: the headline strict IOB2 entity scores (the F1 that
early stopping, gates and `skillloop evaluate` report) and the character-span scores are
computed on the spans a user gets, after the decoder's span-edge trim
(`training.text.tags_to_spans`), with gold and predicted tags on the same words
(`training.text.words`). The model's raw decoded word tags, when given, are scored apart
(strict, and seqeval's lenient default mode), for comparison with reports that score tags.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from training.text import Document, Span, spans_to_tags, words

OVERALL = "overall"
EVAL_CHUNK = 64  # documents per predict call, so a progress bar can move


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    support: int  # gold spans
    predicted: int

    @classmethod
    def from_counts(cls, correct: int, predicted: int, gold: int) -> Score:
        p = correct / predicted if predicted else 0.0
        r = correct / gold if gold else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return cls(p, r, f1, gold, predicted)

    def to_dict(self) -> dict:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "support": self.support,
            "predicted": self.predicted,
        }


@dataclass
class EvalReport:
    """Per label and `overall` (micro average): `entity` is seqeval strict IOB2 on the
    served spans, `entity_model` strict and `entity_default` seqeval's default mode on the
    model's raw word tags (the served spans' tags when none were given), `char` exact
    character spans."""

    labels: list[str]
    entity: dict[str, Score]
    entity_default: dict[str, Score]
    char: dict[str, Score]
    documents: int
    spans: list[list[Span]] = field(default_factory=list, repr=False)  # predicted, per doc
    entity_model: dict[str, Score] = field(default_factory=dict)
    # a layered tagger's (`evaluate_layers`): each layer's overall row, named "layer A+B"
    layer_names: list[str] = field(default_factory=list)

    @property
    def f1(self) -> float:
        """Overall strict entity F1: the figure early stopping and model gates use."""
        return self.entity[OVERALL].f1

    def to_dict(self) -> dict:
        def block(scores: dict[str, Score]) -> dict:
            return {name: s.to_dict() for name, s in scores.items()}

        return {
            "documents": self.documents,
            "labels": self.labels,
            **({"layers": self.layer_names} if self.layer_names else {}),
            "entity_strict": block(self.entity),
            "entity_strict_model_tags": block(self.entity_model),
            "entity_default": block(self.entity_default),
            "char_span": block(self.char),
        }

    def table(self) -> str:
        rows: list[tuple[str, ...]] = [
            ("", "strict P", "R", "F1", "default F1", "char P", "R", "F1", "support")
        ]
        for name in [*self.labels, *self.layer_names, OVERALL]:
            e, d, c = self.entity[name], self.entity_default[name], self.char[name]
            rows.append(
                (
                    name,
                    *(f"{x:.3f}" for x in (e.precision, e.recall, e.f1, d.f1)),
                    *(f"{x:.3f}" for x in (c.precision, c.recall, c.f1)),
                    str(e.support),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


def seqeval_scores(
    gold_tags: Sequence[Sequence[str]],
    predicted_tags: Sequence[Sequence[str]],
    labels: Sequence[str],
    strict: bool,
) -> dict[str, Score]:
    """Entity scores per label and overall from seqeval's classification report."""
    from seqeval.metrics import classification_report
    from seqeval.metrics.sequence_labeling import get_entities
    from seqeval.scheme import IOB2, Entities

    gold = [list(t) for t in gold_tags]
    predicted_lists = [list(t) for t in predicted_tags]
    options = {"mode": "strict", "scheme": IOB2} if strict else {}
    report = classification_report(
        gold, predicted_lists, output_dict=True, zero_division=0, **options
    )
    # the report has no predicted counts; count entities the way each mode reads them
    if strict:
        found = [e.tag for s in Entities(predicted_lists, IOB2).entities for e in s]
    else:
        found = [e[0] for s in predicted_lists for e in get_entities(s)]
    n_predicted = Counter(found)
    scores = {}
    for name in [*labels, OVERALL]:
        row = report.get("micro avg" if name == OVERALL else name)
        predicted = sum(n_predicted[x] for x in labels) if name == OVERALL else n_predicted[name]
        if row is None:  # a label neither in gold nor predicted
            scores[name] = Score(0.0, 0.0, 0.0, 0, predicted)
            continue
        scores[name] = Score(
            float(row["precision"]),
            float(row["recall"]),
            float(row["f1-score"]),
            int(row["support"]),
            predicted,
        )
    return scores


def span_scores(
    gold: Iterable[Iterable[Span]], predicted: Iterable[Iterable[Span]], labels: Sequence[str]
) -> dict[str, Score]:
    """Exact character-span scores: a prediction counts when start, end and label match."""
    correct: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    for gold_spans, predicted_spans in zip(gold, predicted, strict=True):
        g = {s.key() for s in gold_spans}
        p = {s.key() for s in predicted_spans}
        for key in g:
            n_gold[key[2]] += 1
        for key in p:
            n_pred[key[2]] += 1
            correct[key[2]] += key in g
    scores = {
        label: Score.from_counts(correct[label], n_pred[label], n_gold[label]) for label in labels
    }
    scores[OVERALL] = Score.from_counts(
        sum(correct[x] for x in labels),
        sum(n_pred[x] for x in labels),
        sum(n_gold[x] for x in labels),
    )
    return scores


def evaluate_predictions(
    gold_docs: Sequence[Document],
    predicted_span_lists: Sequence[Sequence[Span]],
    labels: Sequence[str] | None = None,
    predicted_tag_lists: Sequence[Sequence[str]] | None = None,
) -> EvalReport:
    """Score predicted spans against the gold documents.

    Entity scores use word tags derived from the predicted spans (what is served); pass
    `predicted_tag_lists` (one tag per `words(text)` word: the model's raw decoded tags) to
    score those too, as `entity_model` and `entity_default`, where seqeval's strict and
    default modes differ.
    """
    if len(gold_docs) != len(predicted_span_lists):
        raise ValueError(f"{len(predicted_span_lists)} predictions for {len(gold_docs)} documents")
    if labels is None:
        seen = [s.label for d in gold_docs for s in d.spans]
        seen += [s.label for spans in predicted_span_lists for s in spans]
        labels = list(dict.fromkeys(seen))
    labels = list(labels)
    gold_tags, served_tags, model_tags = [], [], []
    for n, (doc, spans) in enumerate(zip(gold_docs, predicted_span_lists, strict=True)):
        word_offsets = words(doc.text)
        gold_tags.append(spans_to_tags(doc.spans, word_offsets))
        served_tags.append(spans_to_tags(spans, word_offsets))
        if predicted_tag_lists is not None:
            tags = list(predicted_tag_lists[n])
            if len(tags) != len(word_offsets):
                raise ValueError(f"document {n}: {len(tags)} tags for {len(word_offsets)} words")
            model_tags.append(tags)
    if predicted_tag_lists is None:
        model_tags = served_tags
    return EvalReport(
        labels=labels,
        entity=seqeval_scores(gold_tags, served_tags, labels, strict=True),
        entity_default=seqeval_scores(gold_tags, model_tags, labels, strict=False),
        char=span_scores([d.spans for d in gold_docs], predicted_span_lists, labels),
        documents=len(gold_docs),
        spans=[list(s) for s in predicted_span_lists],
        entity_model=seqeval_scores(gold_tags, model_tags, labels, strict=True),
    )


def evaluate(
    tagger, docs: Sequence[Document], decoding: str | None = None, progress: bool = False
) -> EvalReport:
    """Predict `docs` with a `training.tagger.Tagger` and score its word tags and spans
    against the gold documents (a layered tagger's per layer: `evaluate_layers`)."""
    from tqdm.auto import tqdm

    if getattr(tagger, "layered", None) is not None:
        return evaluate_layers(tagger.layered, docs, decoding, progress)

    predictions = []
    with tqdm(total=len(docs), disable=not progress, desc="evaluating", unit="doc") as bar:
        for i in range(0, len(docs), EVAL_CHUNK):
            chunk = docs[i : i + EVAL_CHUNK]
            predictions += tagger.predict([doc.text for doc in chunk], decoding=decoding)
            bar.update(len(chunk))
    return evaluate_predictions(
        docs,
        [p.spans for p in predictions],
        labels=tagger.labels,
        predicted_tag_lists=[p.word_tags for p in predictions],
    )


def evaluate_layers(
    layered, docs: Sequence[Document], decoding: str | None = None, progress: bool = False
) -> EvalReport:
    """Score a `training.layered_tagger.LayeredTagger` layer by layer, each against the
    full gold of its labels (overlaps with other layers kept, `training.layers`), with
    seqeval on that layer's tags. Labels belong to one layer each, so their rows are their
    layer's; "layer A+B" rows are each layer's overall, `overall` the micro average."""
    from tqdm.auto import tqdm

    from training.layers import layer_documents

    per_layer: list[list] = [[] for _ in layered.layers]
    with tqdm(total=len(docs), disable=not progress, desc="evaluating", unit="doc") as bar:
        for i in range(0, len(docs), EVAL_CHUNK):
            chunk = docs[i : i + EVAL_CHUNK]
            texts = [doc.text for doc in chunk]
            for n, predictions in enumerate(layered.predict_layers(texts, decoding)):
                per_layer[n] += predictions
            bar.update(len(chunk))
    reports = [
        evaluate_predictions(
            layer_documents(docs, layer),
            [p.spans for p in predictions],
            labels=layer,
            predicted_tag_lists=[p.word_tags for p in predictions],
        )
        for layer, predictions in zip(layered.layers, per_layer, strict=True)
    ]
    names = ["layer " + "+".join(layer) for layer in layered.layers]
    labels = [label for layer in layered.layers for label in layer]

    def combined(kind: str) -> dict[str, Score]:
        blocks = [getattr(report, kind) for report in reports]
        scores = {label: b[label] for b in blocks for label in b if label != OVERALL}
        scores.update({name: b[OVERALL] for name, b in zip(names, blocks, strict=True)})
        overall = [b[OVERALL] for b in blocks]
        correct = sum(round(s.recall * s.support) for s in overall)
        scores[OVERALL] = Score.from_counts(
            correct, sum(s.predicted for s in overall), sum(s.support for s in overall)
        )
        return scores

    return EvalReport(
        labels=labels,
        entity=combined("entity"),
        entity_default=combined("entity_default"),
        char=combined("char"),
        documents=len(docs),
        spans=[
            sorted(sum(spans, []), key=lambda s: s.key())
            for spans in zip(*(r.spans for r in reports), strict=True)
        ],
        entity_model=combined("entity_model"),
        layer_names=names,
    )
