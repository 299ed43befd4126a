"""What runs inside the Ray actors: one tagger per actor, loaded once, then whole blocks.

Ray Data hands `BlockTagger` batches of block descriptions (one row per block, planned by
`backend.corpus.sources`); the actor reads each block from its file, tags it in chunks of
`CHUNK` texts with the same code as `skillloop predict` (`backend.bulk_predict.tag`), links
the spans when asked, and writes the block's outputs itself (`backend.corpus.outputs`), so
only each block's counts travel back to the driver. The output folder, the model folder
and the input files must therefore be the same paths on every node (docs/ray.md).

The linker's label embeddings are built once by the driver and shipped with `ray.put` as
`LinkerParts`; each actor loads only the sentence encoder for the spans.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from backend.bulk_predict import TaggerSpec, studio_task, tag
from backend.corpus.outputs import BlockWriter, text_hash
from backend.corpus.sources import Block, Row, post_id, read_block

CHUNK = 32  # texts per predict call, as `skillloop predict` (backend/cli/predict.py)


@dataclass
class LinkerParts:
    """A built linker without its encoder's weights: what `ray.put` ships to the actors."""

    taxonomy: Any  # training.taxonomy.Taxonomy
    index: Any  # training.linker.LabelIndex (the label embeddings)
    settings: Any  # training.linker.LinkerSettings
    adapter: np.ndarray | None
    encoder: str  # the sentence encoder's folder
    top_k: int
    cross: str | None = None  # the cross-encoder's folder, where the linker has one

    @classmethod
    def of(cls, linker, top_k: int) -> LinkerParts:
        encoder = str(linker.encoder.folder)
        cross = str(linker.cross.folder) if linker.cross is not None else None
        parts = (linker.taxonomy, linker.index, linker.settings, linker.adapter)
        return cls(*parts, encoder, top_k, cross)

    def build(self):
        from training.link_cross import CrossEncoder
        from training.linker import Linker
        from training.sentence_encoder import SentenceEncoder

        encoder = SentenceEncoder(self.encoder)
        cross = CrossEncoder(self.cross) if self.cross else None
        parts = (self.taxonomy, encoder, self.settings, self.index, self.adapter)
        return Linker.from_index(*parts, cross)


@dataclass(frozen=True)
class JobSettings:
    """What every actor of one predict job shares (picklable)."""

    out: str
    max_chars: int
    studio_config: Any = None  # labeling.studio.config's parsed config, for import tasks
    threads: int = 1  # torch threads per actor


def one_thread(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def blocks_of(batch: dict[str, np.ndarray]) -> list[Block]:
    """Ray Data's numpy batch of block rows back into `Block`s."""
    names = [f.name for f in fields(Block)]
    count = len(batch[names[0]])
    return [Block(*(_plain(batch[name][i]) for name in names)) for i in range(count)]


def _plain(value):
    """A numpy scalar as its Python value (strings come as Python str already)."""
    return value.item() if isinstance(value, np.generic) else value


def batch_of(blocks: Sequence[Block]) -> dict[str, list]:
    return {f.name: [getattr(b, f.name) for b in blocks] for f in fields(Block)}


class BlockActor:
    """What a Ray Data callable class of a corpus job does with its batch: each block's rows
    read, the unreadable ones written to rejects, the rest handed to `chunk` CHUNK at a time,
    and the block's summary returned. Subclasses say how a block is written and read."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        done = [self.block(block) for block in blocks_of(batch)]
        return {name: [d[name] for d in done] for name in done[0]} if done else {}

    def block(self, block: Block) -> dict:
        writer = self.writer(block)
        pending: list[Row] = []
        for row in self.rows(block):
            if row.data is None:
                writer.reject(row)
                continue
            pending.append(row)
            if len(pending) == CHUNK:
                self.chunk(writer, pending)
                pending = []
        if pending:
            self.chunk(writer, pending)
        return writer.close()

    def writer(self, block: Block) -> BlockWriter:
        raise NotImplementedError

    def rows(self, block: Block) -> Iterator[Row]:
        raise NotImplementedError

    def chunk(self, writer: BlockWriter, rows: Sequence[Row]) -> None:
        raise NotImplementedError


class BlockTagger(BlockActor):
    """A Ray Data callable class: one tagger (and linker) per actor."""

    def __init__(self, spec: TaggerSpec, job: JobSettings, linker: list | None = None):
        one_thread(job.threads)
        self.job, self.tagger = job, spec.load()
        self.studio = job.studio_config is not None
        self.label_names: dict = {}
        if self.studio:
            from labeling.studio.config import map_model_labels

            self.label_names = map_model_labels(job.studio_config, spec.labels)
        self.linker, self.top_k = None, 0
        if linker:  # [ObjectRef]: in a list so that Ray hands the reference, not the value
            import ray

            parts: LinkerParts = ray.get(linker[0])
            self.linker, self.top_k = parts.build(), parts.top_k

    def writer(self, block: Block) -> BlockWriter:
        return BlockWriter(Path(self.job.out), block, self.studio)

    def rows(self, block: Block) -> Iterator[Row]:
        return read_block(block, self.job.max_chars)

    def chunk(self, writer: BlockWriter, rows: Sequence[Row]) -> None:
        from training.text import Document

        texts = [row.data["text"] for row in rows if row.data is not None]
        batch = tag(self.tagger, texts)
        results = batch.results
        links = self.links([Document(t, r.spans) for t, r in zip(texts, results, strict=True)])
        posts, spans, tasks = [], [], []
        for row, text, tagged, span_links in zip(rows, texts, batch.results, links, strict=True):
            assert row.data is not None
            pid = post_id(row)
            posts.append(
                {
                    "post_id": pid,
                    "text_hash": text_hash(text),
                    "model_version": batch.version,
                    "task_score": tagged.score,
                    "spans": len(tagged.spans),
                    "text_cut_at": row.data.get("text_cut_at"),
                    "source_file": row.file,
                    "source_row": row.number,
                }
            )
            for span, link in zip(tagged.spans, span_links, strict=True):
                spans.append(
                    {
                        "post_id": pid,
                        "start": span.start,
                        "end": span.end,
                        "label": span.label,
                        "text": span.text or text[span.start : span.end],
                        "confidence": None if span.score is None else float(span.score),
                        "taxonomy_id": link.get("taxonomy_id"),
                        "taxonomy_label": link.get("taxonomy_label"),
                        "link_score": link.get("link_score"),
                    }
                )
            if self.studio:
                data = row.data
                tasks.append(
                    studio_task(
                        data, tagged, batch.version, self.job.studio_config, self.label_names
                    )
                )
        writer.write(posts, spans, tasks)

    def links(self, docs) -> list[list[dict]]:
        if self.linker is None:
            return [[{} for _ in doc.spans] for doc in docs]
        from training.linker import link_fields, link_spans

        return [[link_fields(x) for x in doc] for doc in link_spans(self.linker, docs, self.top_k)]
