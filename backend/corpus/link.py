"""`skillloop link` on Ray (`--ray-address`): the rows `skillloop link` reads, out of JSONL
and Parquet files, linked by one `BlockLinker` per actor into an output folder, resumable
block by block (the driver is `backend.corpus.predict.run_job`, predict's).

A row is one of `skillloop link`'s: {"span": "K8s"}, {"text", "spans": [{"start", "end",
...}]} (a predictions JSONL, or Parquet with a list-of-structs `spans` column), or
{"text"} (tagged first when a model is given, else linked whole). The row rules and how a
row becomes a document and takes its links are this module's, used by the single-process
command too (backend/cli/link.py), so both give the same rows. The label embeddings are
built once by the driver and shipped (`LinkerParts`), as for `predict --link`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from backend.bulk_predict import TaggerSpec, tag
from backend.corpus.actors import BlockActor, JobSettings, one_thread
from backend.corpus.outputs import BlockWriter, text_hash
from backend.corpus.predict import CorpusJob, run_job, say
from backend.corpus.sources import Block, Row, post_id, read_block


def link_row_problem(row: dict) -> str:
    """Why `skillloop link` cannot read the row ("" when it can)."""
    if isinstance(row.get("span"), str):
        return ""
    text = row.get("text")
    if not isinstance(text, str):
        return 'each line needs a "span" or a "text" string'
    spans = row.get("spans")
    if spans is None:
        return ""
    if not isinstance(spans, list):
        return '"spans" must be a list'
    if not all(_valid_span(span, len(text)) for span in spans):
        return "each span needs integer start < end within the text"
    return ""


def _valid_span(span, length: int) -> bool:
    if not isinstance(span, dict):
        return False
    start, end = span.get("start"), span.get("end")
    return isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length


def is_phrase(row: dict) -> bool:
    return isinstance(row.get("span"), str)


def needs_tagging(row: dict) -> bool:
    return not is_phrase(row) and row.get("spans") is None


def link_document(row: dict):
    """The document whose spans get linked: the phrase, the text's spans, or the whole
    text as one phrase (a text row nobody tagged)."""
    from training.text import Document, Span

    if is_phrase(row):
        text = row["span"]
        return Document(text, [Span(0, len(text), "", text)])
    text = row["text"]
    if row.get("spans") is None:
        return Document(text, [Span(0, len(text), "", text)])
    return Document(text, [Span(s["start"], s["end"], "") for s in row["spans"]])


def apply_links(row: dict, links: Sequence) -> None:
    """The row as `skillloop link` writes it: link fields on the row (a phrase), in
    `text_link` (a whole text) or on each span."""
    from training.linker import link_fields

    if is_phrase(row):
        row |= link_fields(links[0])
    elif row.get("spans") is None:
        row["text_link"] = link_fields(links[0])
    else:
        for span, link in zip(row["spans"], links, strict=True):
            if span.get("text") is None:
                span["text"] = row["text"][span["start"] : span["end"]]
            span |= link_fields(link)


def span_rows(pid: str, row: dict) -> list[dict]:
    """The linked row's spans as rows of the spans Parquet (backend/corpus/outputs.SPANS)."""
    columns = ("taxonomy_id", "taxonomy_label", "link_score")
    if is_phrase(row) or row.get("spans") is None:
        text = row["span"] if is_phrase(row) else row["text"]
        fields = row if is_phrase(row) else row["text_link"]
        whole = {"start": 0, "end": len(text), "label": row.get("label"), "text": text}
        return [{"post_id": pid, **whole, "confidence": None} | {c: fields[c] for c in columns}]
    return [
        {
            "post_id": pid,
            "start": s["start"],
            "end": s["end"],
            "label": s.get("label"),
            "text": s["text"],
            "confidence": s.get("score"),
        }
        | {c: s[c] for c in columns}
        for s in row["spans"]
    ]


class BlockLinker(BlockActor):
    """A Ray Data callable class: the shipped linker (and a tagger for text-only rows)."""

    def __init__(self, spec: TaggerSpec | None, job: JobSettings, linker: list):
        import ray

        from backend.corpus.actors import LinkerParts

        one_thread(job.threads)
        self.job = job
        self.tagger = spec.load() if spec is not None else None
        parts: LinkerParts = ray.get(linker[0])  # [ObjectRef]: the reference, not the value
        self.linker, self.top_k = parts.build(), parts.top_k

    def writer(self, block: Block) -> BlockWriter:
        return BlockWriter(Path(self.job.out), block, studio=False, linked=True)

    def rows(self, block: Block) -> Iterator[Row]:
        return read_block(block, None, link_row_problem)  # never cut, as `link`

    def chunk(self, writer: BlockWriter, rows: Sequence[Row]) -> None:
        from training.datasets import span_dict
        from training.linker import link_spans

        datas = [dict(row.data or {}) for row in rows]
        tagged: dict[int, tuple[str, float]] = {}
        untagged = [i for i, d in enumerate(datas) if needs_tagging(d)]
        if untagged and self.tagger is not None:
            batch = tag(self.tagger, [datas[i]["text"] for i in untagged])
            for i, result in zip(untagged, batch.results, strict=True):
                datas[i]["spans"] = [span_dict(s) for s in result.spans]
                tagged[i] = (batch.version, result.score)
        links = link_spans(self.linker, [link_document(d) for d in datas], self.top_k)
        posts, spans = [], []
        for i, (row, data, doc_links) in enumerate(zip(rows, datas, links, strict=True)):
            apply_links(data, doc_links)
            pid = post_id(Row(row.file, row.number, data))
            version, score = tagged.get(i, (None, None))
            text = data["span"] if is_phrase(data) else data["text"]
            rows_of = span_rows(pid, data)
            posts.append(
                {
                    "post_id": pid,
                    "text_hash": text_hash(text),
                    "model_version": version,
                    "task_score": score,
                    "spans": len(rows_of),
                    "text_cut_at": None,
                    "source_file": row.file,
                    "source_row": row.number,
                }
            )
            spans += rows_of
        writer.write(posts, spans, datas)


def run_link(job: CorpusJob, linker, top_k: int, spec: TaggerSpec | None = None) -> dict:
    """Link every planned block not already done; returns the summary over all blocks."""
    settings = JobSettings(str(job.out.resolve()), 0)
    summary = run_job(job, BlockLinker, (spec, settings), linker, top_k, "linking", True)
    say(
        f"linked {summary['posts']} rows ({summary['spans']} spans, {summary['linked']} "
        f"above the threshold) in {summary['blocks']} blocks; {summary['rejects']} rejected "
        f"rows (-> {job.out / 'rejects.jsonl'}); {summary['skipped_blocks']} blocks done "
        f"before; {summary['seconds']} s on Ray {summary['ray']}"
    )
    return summary
