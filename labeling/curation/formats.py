"""The files of an export, and reading them back: CoNLL IOB2 and JSONL through
`training.datasets`' writers, and a Hugging Face DatasetDict (save_to_disk + parquet)
with `tokens`, `ner_tags` as a ClassLabel over `tag_names(labels)`, and the text.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.datasets import read_conll, read_jsonl, write_conll, write_jsonl
from training.text import Document, spans_to_tags, tag_names, tags_to_spans, words

HF_DIR = "hf"
PARQUET_DIR = "parquet"
SPLITS = ("train", "dev", "test")
PROVENANCE_COLUMNS = ("annotator", "annotated_at", "prediction_model_version", "selected_by")


def to_document(post) -> Document:
    return Document(post.text, list(post.spans), id=post.id, meta=dict(post.provenance))


def write_format(
    splits: dict, out: Path, fmt: str, labels: list[str], layers: list[list[str]] | None = None
) -> list[Path]:
    """The split files; CoNLL with one tag column per label layer (`write_conll`)."""
    if fmt == "hf":
        return write_hf(splits, out, labels)
    files = []
    for name, posts in splits.items():
        path = out / f"{name}.{fmt}"
        docs = [to_document(p) for p in posts]
        if fmt == "conll":
            write_conll(docs, path, layers)
        else:
            write_jsonl(docs, path)
        files.append(path)
    return files


def hf_features(labels: list[str]):
    from datasets import ClassLabel, Features, List, Value

    columns = {
        "id": Value("string"),
        "text": Value("string"),
        "tokens": List(Value("string")),
        "ner_tags": List(ClassLabel(names=tag_names(labels))),
        "spans": List({"start": Value("int32"), "end": Value("int32"), "label": Value("string")}),
    }
    columns |= {name: Value("string") for name in PROVENANCE_COLUMNS}
    return Features(columns)


def hf_row(post) -> dict:
    offsets = words(post.text)
    row = {
        "id": post.id,
        "text": post.text,
        "tokens": [post.text[s:e] for s, e in offsets],
        "ner_tags": spans_to_tags(post.spans, offsets),
        "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in post.spans],
    }
    for name in PROVENANCE_COLUMNS:
        value = post.provenance.get(name)
        row[name] = None if value is None else str(value)
    return row


def write_hf(splits: dict, out: Path, labels: list[str]) -> list[Path]:
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()  # a CLI export prints one summary line, not one bar per split

    features = hf_features(labels)
    # columns, not rows: an empty split (a tiny export) still gets every column
    dataset = DatasetDict(
        {
            name: Dataset.from_dict(
                {column: [row[column] for row in rows] for column in features}, features=features
            )
            for name, rows in ((n, [hf_row(p) for p in posts]) for n, posts in splits.items())
        }
    )
    # an empty split saved with the default zero shards cannot be loaded back
    dataset.save_to_disk(str(out / HF_DIR), num_shards={name: 1 for name in dataset})
    (out / PARQUET_DIR).mkdir(exist_ok=True)
    files = [out / HF_DIR]
    for name, split in dataset.items():
        path = out / PARQUET_DIR / f"{name}.parquet"
        split.to_parquet(str(path))
        files.append(path)
    return files


def read_export(out: str | Path, fmt: str) -> dict[str, list[Document]]:
    """An export read back as documents per split (CoNLL texts are re-joined tokens)."""
    out = Path(out)
    if fmt == "hf":
        from datasets import load_from_disk

        dataset = load_from_disk(str(out / HF_DIR))
        result = {}
        for name, split in dataset.items():
            names = split.features["ner_tags"].feature.names
            result[name] = [
                Document(
                    row["text"],
                    tags_to_spans(
                        [names[t] for t in row["ner_tags"]], words(row["text"]), row["text"]
                    ),
                    id=row["id"],
                )
                for row in split
            ]
        return result
    manifest = out / "export.json"
    names = json.loads(manifest.read_text())["splits"] if manifest.is_file() else SPLITS
    found = [out / f"{name}.{fmt}" for name in names if (out / f"{name}.{fmt}").is_file()]
    if not found:
        raise FileNotFoundError(f"no {fmt} split files in {out}")
    reader = read_conll if fmt == "conll" else read_jsonl
    return {path.stem: reader(path) for path in found}
