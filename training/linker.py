"""Linking spans to taxonomy entries with a sentence-embedding model.

Every label of the taxonomy (preferred and alternative) is embedded once per linker
version and cached; a span is embedded, mixed with a little of its sentence, and ranked in
two stages. First every entry scores its best label's cosine, mixed with its preferred
label's (`preferred_weight`: ESCO's alternative labels include loose synonyms that win ties
they should not): brute-force NumPy over ~96.5k labels x 384 dimensions, milliseconds per
span (beyond a few million labels an approximate index, FAISS or hnswlib, would take its
place). Then the top 20 are re-scored by the sentence's cosine with their best label and by
the span's character trigrams (training/link_rerank.py). A trained linker adds an adapter:
a 384x384 matrix applied to the span's embedding only (`q + qW`, renormalised), so the
label embeddings of the plain encoder, and their cache, serve every adapter version
(training/linker_adapter.py).

A linker version is a folder with `linker.json` (its settings, tuned on validation data:
training/linker_settings.py), the adapter's `.npy` if it has one, for a fine-tuned
encoder its weights, and for a cross-encoder stage (the top 20 re-scored by the span and
each entry's label read together: training/link_cross.py) that model's subfolder. The
plain linker is the offline MiniLM backbone with the default settings, chosen on one ESCO
validation set and reported on the other (docs/linking.md).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.embedding_progress import PROGRESS_FILE, EmbeddingProgress
from training.link_cross import SCALE_FILE, CrossEncoder, squash
from training.link_rerank import LexicalIndex, best_first, rerank, sentence_scores
from training.linker_settings import LinkerSettings
from training.sentence_encoder import SentenceEncoder
from training.taxonomy import Taxonomy, TaxonomyEntry, with_additions

log = logging.getLogger(__name__)

# The precision the plain backbone embeds a taxonomy's labels in (spans stay fp32): on
# ESCO int8 embedded 2.2x as fast as fp32 at the same accuracy within noise (accuracy@1
# 0.626 / 0.533 against 0.607 / 0.495 on TECH / HOUSE, 8 discordant pairs each; 0.898 vs
# 0.901 on 5,000 alternative labels as queries: benchmarks/label_precision.py,
# docs/linking.md "ESCO's first use"). Linker folders say their own (`label_precision`,
# fp32 unless set).
BACKBONE_LABEL_PRECISION = "int8"
MAX_CONTEXT_TOKENS = 128
SENTENCE_END = re.compile(r"[.!?;\n]")


@dataclass(slots=True)
class Candidate:
    id: str
    label: str  # the entry's preferred label
    score: float  # the entry's score: its labels' cosines, re-ranked (at most 1)
    matched_label: str = ""  # that label (an alternative label when it was one)

    def to_dict(self) -> dict:
        out = {"id": self.id, "label": self.label, "score": round(self.score, 4)}
        if self.matched_label and self.matched_label != self.label:
            out["matched_label"] = self.matched_label
        return out


@dataclass(slots=True)
class Link:
    """One span's top-k candidates; `best` is None when the top score is below threshold."""

    candidates: list[Candidate]
    threshold: float

    @property
    def best(self) -> Candidate | None:
        if self.candidates and self.candidates[0].score >= self.threshold:
            return self.candidates[0]
        return None


@dataclass
class LabelIndex:
    """All labels' embeddings, grouped by entry: rows `offsets[e]:offsets[e+1]` are entry e's."""

    vectors: np.ndarray  # (n_labels, dim), L2-normalised
    offsets: np.ndarray  # (n_entries,), the first row of each entry
    texts: list[str]

    @classmethod
    def build(
        cls,
        taxonomy: Taxonomy,
        encoder: SentenceEncoder,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        preferred_only: bool = False,
        precision: str = "fp32",
    ) -> LabelIndex:
        texts: list[str] = []
        offsets: list[int] = []
        for entry in taxonomy.entries:
            offsets.append(len(texts))
            texts.extend(entry.labels[:1] if preferred_only else entry.labels)
        cache = None
        if cache_dir is not None:
            name = f"labels-{encoder.key()}-{taxonomy.fingerprint()}"
            if precision != "fp32":  # other numbers: another cache
                name += f"-{precision}"
            cache = Path(cache_dir) / f"{name}{'-preferred' if preferred_only else ''}.npy"
            if cache.is_file():
                vectors = np.load(cache)
                if vectors.shape[0] == len(texts):
                    log.info("label embeddings from %s", cache)
                    return cls(vectors, np.asarray(offsets), texts)
        log.info("embedding %d labels of %s", len(texts), taxonomy.name)
        report = EmbeddingProgress(
            taxonomy.name, Path(cache_dir) / PROGRESS_FILE if cache_dir is not None else None
        )
        vectors = encoder.encode(
            texts,
            progress=progress,
            desc=f"embedding {taxonomy.name}",
            precision=precision,
            on_progress=report,
        )
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_suffix(".tmp.npy")
            np.save(partial, vectors)
            partial.replace(cache)  # a killed run never leaves a half-written cache
        return cls(vectors, np.asarray(offsets), texts)

    @property
    def entry_of_row(self) -> np.ndarray:
        """The entry index of every label row."""
        sizes = np.diff(np.append(self.offsets, len(self.vectors)))
        return np.repeat(np.arange(len(self.offsets)), sizes)

    def entry_scores(
        self, queries: np.ndarray, preferred_weight: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n_queries, n_entries) entry scores, and the label cosines behind them: the best
        label's cosine, mixed with the preferred label's by `preferred_weight`."""
        sims = queries @ self.vectors.T
        best = np.maximum.reduceat(sims, self.offsets, axis=1)
        if preferred_weight:
            best = (1 - preferred_weight) * best + preferred_weight * sims[:, self.offsets]
        return best, sims

    def best_row(self, sims: np.ndarray, entry: int) -> int:
        """The row of entry's best-matching label, given one query's label cosines."""
        start = int(self.offsets[entry])
        end = int(self.offsets[entry + 1]) if entry + 1 < len(self.offsets) else len(sims)
        return start + int(sims[start:end].argmax())


def apply_adapter(vectors: np.ndarray, adapter: np.ndarray | None) -> np.ndarray:
    """`q + qW`, renormalised: W = 0 is the plain ranking, so training starts from it."""
    if adapter is None:
        return vectors
    out = vectors + vectors @ adapter
    return (out / np.linalg.norm(out, axis=1, keepdims=True).clip(min=1e-9)).astype(np.float32)


def sentence_around(text: str, start: int, end: int, limit: int = 300) -> str:
    """The sentence holding text[start:end] (bounded by . ! ? ; or a newline), at most
    `limit` characters on each side: the context a span is embedded with."""
    left = max(0, start - limit)
    ends = [m.end() for m in SENTENCE_END.finditer(text, left, start)]
    begin = ends[-1] if ends else left
    match = SENTENCE_END.search(text, end, min(len(text), end + limit))
    stop = match.end() if match else min(len(text), end + limit)
    return text[begin:stop].strip()


class Linker:
    # a label's written form -> its entries, and the labels' trigram index, made when first
    # asked (also for linkers made without __init__: training.linker_round.with_index)
    _exact: dict[str, set[int]] | None = None
    _lexical: LexicalIndex | None = None
    # the settings' cross-encoder, loaded from the linker folder (None: that stage is off)
    cross: CrossEncoder | None = None

    def __init__(
        self,
        taxonomy: Taxonomy,
        encoder: SentenceEncoder,
        settings: LinkerSettings | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = False,
        preferred_only: bool = False,
    ):
        self.taxonomy = taxonomy
        self.encoder = encoder
        self.settings = settings or LinkerSettings()
        self.index = LabelIndex.build(
            taxonomy, encoder, cache_dir, progress, preferred_only, self.settings.label_precision
        )
        self.adapter: np.ndarray | None = None  # (dim, dim), applied to span embeddings

    @classmethod
    def load(
        cls,
        taxonomy: Taxonomy,
        folder: str | Path | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ) -> Linker:
        """A linker version's folder, or None for the plain backbone with defaults."""
        if folder is None or str(folder) == "backbone":
            settings = LinkerSettings(label_precision=BACKBONE_LABEL_PRECISION)
            encoder = SentenceEncoder(None)
        else:
            settings = LinkerSettings.read(folder)
            source = folder if settings.encoder == "." else settings.encoder
            encoder = SentenceEncoder(source)
        linker = cls(taxonomy, encoder, settings, cache_dir, progress)
        if folder is not None and settings.adapter:
            linker.adapter = np.load(Path(folder) / settings.adapter)
        if folder is not None and settings.crosses:
            linker.cross = CrossEncoder(Path(folder) / settings.cross)
        if settings.lexical_weight:
            _ = linker.lexical  # built with the linker, not in its first request (5 s on ESCO)
        return linker

    @classmethod
    def from_index(
        cls,
        taxonomy: Taxonomy,
        encoder: SentenceEncoder,
        settings: LinkerSettings,
        index: LabelIndex,
        adapter: np.ndarray | None = None,
        cross: CrossEncoder | None = None,
    ) -> Linker:
        """A linker around label embeddings built elsewhere (built once and shipped to the
        Ray actors, backend/corpus): no label is embedded again."""
        linker = cls.__new__(cls)
        linker.taxonomy, linker.encoder, linker.settings = taxonomy, encoder, settings
        linker.index, linker.adapter, linker.cross = index, adapter, cross
        return linker

    @property
    def threshold(self) -> float:
        return self.settings.threshold

    def add_entries(self, entries: Sequence[TaxonomyEntry]) -> int:
        """Entries annotators added, linkable from now on: only their labels are embedded
        (the taxonomy's stay cached). Returns how many were new to this linker."""
        fresh = [e for e in entries if e.id not in {x.id for x in self.taxonomy.entries}]
        if not fresh:
            return 0
        texts = [label for entry in fresh for label in entry.labels]
        offsets = np.cumsum([0] + [len(entry.labels) for entry in fresh[:-1]])
        vectors = self.encoder.encode(texts, precision=self.settings.label_precision)
        self.index = LabelIndex(
            np.vstack([self.index.vectors, vectors]),
            np.concatenate([self.index.offsets, offsets + len(self.index.vectors)]),
            [*self.index.texts, *texts],
        )
        self.taxonomy = with_additions(self.taxonomy, fresh)
        self._exact = None
        if self._lexical is not None:  # built already: rebuilt now, with the new labels
            self._lexical = LexicalIndex(self.index.texts, self.index.offsets)
        return len(fresh)

    def exact_entries(self, text: str) -> set[int]:
        """The entries with a label written like `text` (case and spacing aside)."""
        if self._exact is None:
            self._exact = {}
            for row, entry in enumerate(self.index.entry_of_row):
                self._exact.setdefault(written(self.index.texts[row]), set()).add(int(entry))
        return self._exact.get(written(text), set())

    @property
    def lexical(self) -> LexicalIndex:
        if self._lexical is None:
            self._lexical = LexicalIndex(self.index.texts, self.index.offsets)
        return self._lexical

    def encode(
        self, spans: Sequence[str], contexts: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The spans' embeddings and their sentences' (a span stands for a sentence it lacks;
        the spans' own when the settings use no sentence). Each distinct sentence is
        embedded once: a post's spans often share one."""
        vectors = self.encoder.encode(list(spans))
        uses = self.settings.context_weight > 0 or self.settings.sentence_weight > 0
        if contexts is None or not uses:
            return vectors, vectors
        texts = [context or span for span, context in zip(spans, contexts, strict=True)]
        distinct = {text: n for n, text in enumerate(dict.fromkeys(texts))}
        sentences = self.encoder.encode(list(distinct), max_tokens=MAX_CONTEXT_TOKENS)
        return vectors, sentences[[distinct[text] for text in texts]]

    def queries(self, spans: np.ndarray, sentences: np.ndarray) -> np.ndarray:
        """`(1-w) span + w sentence`, renormalised, through the adapter."""
        weight = self.settings.context_weight
        if weight > 0 and sentences is not spans:
            spans = (1 - weight) * spans + weight * sentences
            spans /= np.linalg.norm(spans, axis=1, keepdims=True).clip(min=1e-9)
        return self.adapt(spans)

    def embed(self, spans: Sequence[str], contexts: Sequence[str] | None = None) -> np.ndarray:
        return self.queries(*self.encode(spans, contexts))

    def adapt(self, vectors: np.ndarray) -> np.ndarray:
        """Span embeddings through the adapter (unchanged without one)."""
        return apply_adapter(vectors, self.adapter)

    def rank(
        self,
        queries: np.ndarray,
        k: int = 5,
        texts: Sequence[str] | None = None,
        sentences: np.ndarray | None = None,
    ) -> list[list[Candidate]]:
        """The top k entries of each query: the first stage over all entries, its top
        `rerank_top` re-scored (training/link_rerank.py) with the `sentences`' embeddings
        (the queries stand in without them) and the `texts`' trigrams (none without texts).

        With the `texts`, an entry that has a label written exactly like the text (case and
        spacing aside) scores at least 1.0, as an fp32 label embedding of the same words
        does: int8 label embeddings (cosine 0.987 with the fp32 ones on average) lost such
        matches to near neighbours ("SQL" -> "database management systems";
        docs/linking.md). Ties go to the score without that rule."""
        sentences = queries if sentences is None else sentences
        out = []
        for start in range(0, len(queries), 64):  # bounds the (queries x labels) matrix
            scores, sims = self.index.entry_scores(
                queries[start : start + 64], self.settings.preferred_weight
            )
            for n, (q_scores, q_sims) in enumerate(zip(scores, sims, strict=True)):
                at = start + n
                text = texts[at] if texts is not None else None
                preferred = q_sims[self.index.offsets]  # each entry's preferred label's cosine
                top, score = self.top_entries(q_scores, k, sentences[at], text, preferred)
                out.append(
                    [
                        Candidate(
                            self.taxonomy.entries[e].id,
                            self.taxonomy.entries[e].preferred_label,
                            float(x),
                            self.index.texts[self.index.best_row(q_sims, e)],
                        )
                        for e, x in zip(top, score, strict=True)
                    ]
                )
        return out

    def top_entries(
        self,
        first: np.ndarray,
        k: int,
        sentence: np.ndarray,
        text: str | None,
        preferred: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One query's top k entries, best first, and their scores, from the first stage's
        scores of every entry (see `rank`); `preferred`: each entry's preferred label's
        cosine, which breaks ties among entries sharing the span's label."""
        s = self.settings
        exact = self.exact_entries(text) if text is not None and s.exact_rule else set()
        top = best_first(first, max(k, s.rerank_top) if s.reranks else k, exact, preferred)
        score = first[top]
        floor = np.isin(top, list(exact))
        if s.reranks:
            lexical = self.lexical.scores([text], top[None])[0] if text is not None else 0.0
            index = self.index
            on_sentence = sentence_scores(index.vectors, index.offsets, sentence[None], top[None])
            cross = self.cross_scores(text, top)
            score = rerank(
                score, on_sentence[0], lexical, s.sentence_weight, s.lexical_weight, *cross
            )
            ties = None if preferred is None else preferred[top]
            order = best_first(score, k, set(np.flatnonzero(floor).tolist()), ties)
            top, score, floor = top[order], score[order], floor[order]
        return top[:k], np.where(floor, np.maximum(score, 1.0), score)[:k]

    def cross_scores(self, text: str | None, top: np.ndarray) -> tuple[np.ndarray | float, float]:
        """The cross-encoder's squashed scores of `text` with each `top` entry's preferred
        label, and their weight; (0, 0) where the settings use none or there is no text."""
        if self.cross is None or not self.settings.crosses or text is None:
            return 0.0, 0.0
        labels = [self.taxonomy.entries[int(e)].preferred_label for e in top]
        if self.cross.scale is None:
            raise ValueError(f"{self.cross.folder} has no {SCALE_FILE}: train it again")
        logits = self.cross.score([text] * len(labels), labels)
        return squash(logits, self.cross.scale), self.settings.cross_weight

    def link(
        self, spans: Sequence[str], contexts: Sequence[str] | None = None, k: int = 5
    ) -> list[Link]:
        if not spans:
            return []
        vectors, sentences = self.encode(spans, contexts)
        ranked = self.rank(self.queries(vectors, sentences), k, spans, sentences)
        return [Link(candidates, self.threshold) for candidates in ranked]


def written(text: str) -> str:
    """A label's written form: case-folded, runs of spaces as one."""
    return " ".join(text.casefold().split())


def link_spans(linker: Linker, docs: Sequence, k: int = 5) -> list[list[Link]]:
    """Links for every span of every document (training.text.Document), each span with its
    sentence as context (mixed into its query and re-ranking its candidates)."""
    spans, contexts, sizes = [], [], []
    for doc in docs:
        sizes.append(len(doc.spans))
        for span in doc.spans:
            spans.append(span.text or doc.text[span.start : span.end])
            contexts.append(sentence_around(doc.text, span.start, span.end))
    links = linker.link(spans, contexts, k)
    out, at = [], 0
    for size in sizes:
        out.append(links[at : at + size])
        at += size
    return out


def link_fields(link: Link) -> dict:
    """The fields a linked span carries in JSON (CLI output, predictions, exports):
    taxonomy_id/taxonomy_label/link_score are None for "no match"; candidates always."""
    best = link.best
    return {
        "taxonomy_id": best.id if best else None,
        "taxonomy_label": best.label if best else None,
        "link_score": round(best.score, 4) if best else None,
        "link_candidates": [c.to_dict() for c in link.candidates],
    }
