"""What the tagger makes of a text: its windows, its reading, and the prediction reported.

`Tagger.read` turns each text into a `WindowedText` (its words, subwords and windows, and
the per-word emission probabilities the model fills in) and a `Reading` (those decoded);
`Tagger.score` turns readings into `Prediction`s, whose span scores are probabilities
under the lattice that decoded them (`prediction_of`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from training.crf import Posterior
from training.text import Span, TagSet, Word, tags_to_spans
from training.windows import Encoding, Window


@dataclass(slots=True)
class Prediction:
    """What the tagger says about one text.

    `probs[i, j]` is the probability that word `words[i]` has tag `tags[j]` under the
    model that decoded it (a CRF's marginals, or the emission softmax of a plain model;
    see `training.tagger`); `tags` is `tag_names(labels)`, the same for every
    prediction of a tagger. `word_tags` is the decoded tag of each word, and `spans` the
    decoded spans (text filled; score: the span's probability). `path_log_prob` is
    log P(word_tags) under a CRF lattice (None for independent words, where it is the
    sum of the words' own log-probabilities).
    """

    text: str
    words: list[Word]
    tags: list[str]
    probs: np.ndarray  # (n_words, n_tags) float32, rows sum to 1
    spans: list[Span] = field(default_factory=list)
    word_tags: list[str] = field(default_factory=list)
    # (n_words, hidden) float32: what the classifier reads per word (`predict(hidden=True)`)
    hidden: np.ndarray | None = None
    path_log_prob: float | None = None


class Predictor(Protocol):
    """What the service holds to answer /predict: a `training.tagger.Tagger`, or, before a
    project's first model, the taxonomy dictionary's `training.dictionary.DictionaryTagger`."""

    version: str
    labels: list[str]

    def predict(self, texts: Sequence[str]) -> list[Prediction]: ...


@dataclass(slots=True)
class WindowedText:
    text: str
    words: list[Word]
    encoding: Encoding
    windows: list[Window]
    probs: np.ndarray
    hidden: np.ndarray | None = None


@dataclass(slots=True)
class Reading:
    """A text run through the model and decoded (`Tagger.read`): the emission
    probabilities and line rule in `doc.probs` / `decode_probs`, and the decoded tags."""

    doc: WindowedText
    decode_probs: np.ndarray  # what the decoder read: doc.probs with the line rule
    word_tags: list[str]
    decoding: str


def prediction_of(
    doc: WindowedText, word_tags: list[str], posterior: Posterior, tags: Sequence[str]
) -> Prediction:
    """The prediction for a decoded text: spans scored by their probability under
    `posterior`'s lattice, and the path's log-probability where words are not independent."""
    spans = [
        replace(span, score=span_probability(posterior, doc.words, span))
        for span in tags_to_spans(word_tags, doc.words, doc.text)
    ]
    path_log_prob = None
    if not posterior.lattice.free:
        column = {tag: j for j, tag in enumerate(tags)}
        path_log_prob = posterior.path_log_probability([column[t] for t in word_tags])
    probs = posterior.marginals.astype(np.float32)
    return Prediction(
        doc.text, doc.words, list(tags), probs, spans, word_tags, doc.hidden, path_log_prob
    )


def span_probability(posterior: Posterior, offsets: Sequence[Word], span: Span) -> float:
    """The probability of `span` (whose offsets are its first word's start and its last
    word's end) as exactly that span, B- opening it (`Posterior.span_probability`)."""
    starts = [start for start, _ in offsets]
    first = bisect_left(starts, span.start)
    last = bisect_left(starts, span.end, lo=first) - 1  # the last word starting inside
    return posterior.span_probability(first, last, span.label)


def continue_orphans(doc: WindowedText, tags: TagSet) -> None:
    """A word without a subword of its own that touches the previous word (a tokenizer
    dropped the character between them, as in "ingre\u00addients") continues it: it takes
    the previous word's probabilities with each B- share moved to the label's I-
    (`tags.b_to_i`, the columns of `doc.probs`)."""
    begin = list(tags.b_to_i)
    inside = [tags.b_to_i[b] for b in begin]
    orphans = np.flatnonzero(doc.encoding.first_token < 0)
    for i in orphans[orphans > 0]:
        if doc.words[i - 1][1] == doc.words[i][0]:
            row = doc.probs[i - 1].copy()
            row[inside] += row[begin]
            row[begin] = 0.0
            doc.probs[i] = row


def check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("predict takes a list of texts, not a single string: use predict([text])")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"predict takes a list of texts, got {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, not str")
    return texts
