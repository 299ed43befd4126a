"""Curated exports: round trips in all formats, splits by post, duplicates, policies."""

from __future__ import annotations

import json

import pytest

from labeling.curation.duplicates import deduplicate, jaccard
from labeling.curation.export import (
    CuratedPost,
    ExportSettings,
    export_dataset,
    resolve,
    stratified_split,
)
from labeling.curation.formats import read_export
from labeling.project import load_project
from labeling.store import AnnotationRecord
from labeling.studio.export_file import read_studio_export
from training.text import WORD_EXAMPLES, Span, words

LABELS = ["Technology", "Technical", "Soft"]
TOOLS = ["Python", "SQL", "Spark", "Docker", "Excel", "Tableau", "Airflow", "Kafka"]
METHODS = ["machine learning", "data modelling", "ETL design", "statistics"]
SOFT = ["communication", "mentoring", "teamwork"]


def span(text: str, part: str, label: str) -> Span:
    start = text.index(part)
    return Span(start, start + len(part), label, part)


def rec(aid, task, text, spans, who="ann", at=None, **extra) -> AnnotationRecord:
    at = at or f"2026-01-01T00:{aid // 60:02d}:{aid % 60:02d}"
    return AnnotationRecord(
        aid, task, "1", text, spans, annotator=who, created_at=at, updated_at=at, **extra
    )


def post_text(n: int) -> tuple[str, list[tuple[str, str]]]:
    tool, method = TOOLS[n % len(TOOLS)], METHODS[n % len(METHODS)]
    parts = [(tool, "Technology"), (method, "Technical")]
    text = (
        f"Job {n}: the {['Berlin', 'Paris', 'Oslo'][n % 3]} team {n * 17} wants {tool} "
        f"and {method} for project {n * 31}."
    )
    if n % 4 == 0:  # Soft is the rare label
        text += f" You enjoy {SOFT[n % 3]}."
        parts.append((SOFT[n % 3], "Soft"))
    return text, parts


@pytest.fixture
def records() -> list[AnnotationRecord]:
    out = []
    for n in range(40):
        text, parts = post_text(n)
        spans = [span(text, p, label) for p, label in parts]
        out.append(
            rec(
                n + 1,
                n + 1,
                text,
                spans,
                who=["ann", "bob"][n % 2],
                prediction_model_version="v0001",
                selected_by="mnlp",
            )
        )
    # an exact repost (other case and spacing) and a near-duplicate of post 1
    text1, _ = post_text(1)
    out.append(rec(100, 100, "  " + text1.upper().replace(" ", "  "), [], who="cat"))
    out.append(rec(101, 101, text1.replace("for project 31.", "for project 31 now."), []))
    # a second annotator on task 2 who disagrees, and a skipped annotation
    text2, parts2 = post_text(2)
    out.append(rec(102, 3, text2, [span(text2, "Spark", "Technical")], who="dan"))
    out.append(rec(103, 4, "skipped", [], cancelled=True))
    return out


def spans_by_id(splits) -> dict[str, set]:
    return {
        doc.id: {(s.start, s.end, s.label) for s in doc.spans}
        for docs in splits.values()
        for doc in docs
    }


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "conll"])
def test_export_round_trips(records, tmp_path, fmt):
    result = export_dataset(records, tmp_path, ExportSettings(fmt, LABELS, seed=3))
    back = read_export(tmp_path, fmt)
    assert set(back) == {"train", "dev", "test"}
    for name, posts in result.splits.items():
        assert len(back[name]) == len(posts)
        for post, doc in zip(posts, back[name], strict=True):
            if fmt == "conll":  # CoNLL keeps tokens, not the text: compare span tokens

                def tokens(text, spans):
                    parts = [(text[s.start : s.end], s.label) for s in spans]
                    return [([p[a:b] for a, b in words(p)], label) for p, label in parts]

                assert tokens(doc.text, doc.spans) == tokens(post.text, post.spans)
                assert doc.text.split() == [post.text[a:b] for a, b in words(post.text)]
            else:
                assert doc.id == post.id and doc.text == post.text
                assert [s.key() for s in doc.spans] == [s.key() for s in post.spans]
    card = (tmp_path / "README.md").read_text()
    assert "license: unspecified" in card and "Span length" in card
    assert (tmp_path / "provenance.jsonl").is_file()


def test_exports_keep_the_tasks_own_post_id(tmp_path):
    text, parts = post_text(5)
    spans = [span(text, p, label) for p, label in parts]
    with_id = rec(
        1, 41, text, spans, raw={"task": {"id": 41, "data": {"text": text, "post_id": "post-005"}}}
    )
    other, _ = post_text(6)
    without = rec(2, 42, other, [], raw={"task": {"id": 42, "data": {"text": other}}})
    posts, _ = resolve([with_id, without])
    assert {p.id for p in posts} == {"post-005", "42"}
    export_dataset([with_id, without], tmp_path, ExportSettings("jsonl", LABELS, shares=(1, 0, 0)))
    back = read_export(tmp_path, "jsonl")
    assert {d.id for docs in back.values() for d in docs} == {"post-005", "42"}


def test_hf_export_has_tokens_classlabel_tags_and_provenance(records, tmp_path):
    from datasets import load_dataset, load_from_disk

    export_dataset(records, tmp_path, ExportSettings("hf", LABELS))
    dataset = load_from_disk(str(tmp_path / "hf"))
    tags = dataset["train"].features["ner_tags"].feature
    assert tags.names == [
        "O",
        "B-Technology",
        "I-Technology",
        "B-Technical",
        "I-Technical",
        "B-Soft",
        "I-Soft",
    ]
    row = dataset["train"][0]
    assert len(row["tokens"]) == len(row["ner_tags"]) == len(words(row["text"]))
    assert row["prediction_model_version"] == "v0001" and row["selected_by"] == "mnlp"
    parquet = load_dataset("parquet", data_files=str(tmp_path / "parquet" / "test.parquet"))
    assert parquet["train"].num_rows == dataset["test"].num_rows


def test_splits_never_share_a_post_and_cover_every_label(records, tmp_path):
    result = export_dataset(records, tmp_path, ExportSettings("jsonl", LABELS, seed=5))
    ids = [p.id for posts in result.splits.values() for p in posts]
    assert len(ids) == len(set(ids))
    for name, posts in result.splits.items():
        assert {lb for p in posts for lb in p.labels} == set(LABELS), name
    sizes = {name: len(posts) for name, posts in result.splits.items()}
    assert sizes["train"] > sizes["dev"] > 0 and sizes["test"] > 0
    again = export_dataset(records, tmp_path / "again", ExportSettings("jsonl", LABELS, seed=5))
    assert {k: [p.id for p in v] for k, v in again.splits.items()} == {
        k: [p.id for p in v] for k, v in result.splits.items()
    }
    other = export_dataset(records, tmp_path / "other", ExportSettings("jsonl", LABELS, seed=6))
    assert [p.id for p in other.splits["test"]] != [p.id for p in result.splits["test"]]


def test_duplicates_are_collapsed(records, tmp_path):
    result = export_dataset(records, tmp_path, ExportSettings("jsonl", LABELS))
    dups = {d.id: d for d in result.duplicates}
    assert set(dups) == {"100", "101"}
    assert dups["100"].kind == "exact" and dups["100"].kept == "2"
    assert dups["101"].kind == "near" and dups["101"].similarity >= 0.9
    exported = {p.id for posts in result.splits.values() for p in posts}
    assert not exported & {"100", "101"}
    assert len(exported) == 40
    lines = (tmp_path / "duplicates.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert {r["id"] for r in rows} == {"100", "101"}


def test_near_duplicate_threshold_keeps_different_posts():
    base = " ".join(f"word{i}" for i in range(60))
    posts = [
        CuratedPost("1", base, []),
        CuratedPost("2", base + " extra tail here", []),
        CuratedPost("3", " ".join(f"other{i}" for i in range(60)), []),
    ]
    kept, dups = deduplicate(posts, threshold=0.9)
    assert [p.id for p in kept] == ["1", "3"] and dups[0].id == "2"
    kept, dups = deduplicate(posts, threshold=1.0)
    assert len(kept) == 3 and not dups


def test_policies_and_conflicts():
    text = "Python and SQL and Excel"
    py, sql, xl = (span(text, w, "Technology") for w in ("Python", "SQL", "Excel"))
    group = [
        rec(1, 9, text, [py, sql], who="ann", ground_truth=True),
        rec(2, 9, text, [py], who="bob"),
        rec(3, 9, text, [py, xl], who="cat"),
    ]
    latest, conflicts = resolve(group, "latest")
    assert latest[0].spans == [py, xl] and latest[0].provenance["annotator"] == "cat"
    reviewed, _ = resolve(group, "reviewed")
    assert reviewed[0].spans == [py, sql] and reviewed[0].provenance["ground_truth"]
    majority, _ = resolve(group, "majority")
    assert [s.key() for s in majority[0].spans] == [py.key()]
    assert len(conflicts) == 1
    by = {d["text"]: d["by"] for d in conflicts[0].disagreements}
    assert by == {"SQL": ["ann"], "Excel": ["cat"]}
    with pytest.raises(ValueError, match="unknown policy"):
        resolve(group, "loudest")


def test_stratified_split_puts_a_rare_label_in_every_split():
    posts = [CuratedPost(str(i), f"post {i}", [Span(0, 4, "Common")]) for i in range(30)]
    posts += [CuratedPost(str(100 + i), f"rare {i}", [Span(0, 4, "Rare")]) for i in range(3)]
    parts = stratified_split(posts, (0.8, 0.1, 0.1), seed=1)
    assert all(any("Rare" in p.labels for p in part) for part in parts.values())
    assert sum(map(len, parts.values())) == 33
    with pytest.raises(ValueError):
        stratified_split(posts, (0.8, 0.2))


def test_studio_export_file_is_read_into_records(tmp_path):
    project = load_project("projects/linkedin-skills")
    text = "Strong Python and communication 🙂 skills"
    tasks = [
        {
            "id": 5,
            "data": {"text": text},
            "project": 2,
            "predictions": [
                {
                    "id": 11,
                    "model_version": "v0002",
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {
                                "start": 7,
                                "end": 13,
                                "text": "Python",
                                "labels": ["Technology"],
                            },
                        }
                    ],
                }
            ],
            "annotations": [
                {
                    "id": 21,
                    "completed_by": {"id": 1, "email": "ann@example.com"},
                    "created_at": "2026-01-02T10:00:00Z",
                    "updated_at": "2026-01-02T10:05:00Z",
                    "was_cancelled": False,
                    "ground_truth": False,
                    "parent_prediction": 11,
                    "lead_time": 12.5,
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {
                                "start": 7,
                                "end": 13,
                                "text": "Python",
                                "labels": ["Technology"],
                            },
                        },
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {
                                "start": 18,
                                "end": 31,
                                "text": "communication",
                                "labels": ["Soft"],
                            },
                        },
                    ],
                }
            ],
        }
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    (record,) = read_studio_export(path, project.config)
    assert record.annotator == "ann@example.com" and record.task_id == 5
    assert [(s.text, s.label) for s in record.spans] == [
        ("Python", "Technology"),
        ("communication", "Soft"),
    ]
    assert record.prediction_model_version == "v0002"
    assert [s.text for s in record.prediction_spans] == ["Python"]
    minimal = [
        {
            "id": 6,
            "text": text,
            "annotator": 3,
            "annotation_id": 40,
            "label": [{"start": 7, "end": 13, "text": "Python", "labels": ["Technology"]}],
        }
    ]
    path.write_text(json.dumps(minimal))
    (row,) = read_studio_export(path, project.config)
    assert (row.annotation_id, row.annotator, row.spans[0].text) == (40, "3", "Python")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a Label Studio JSON export"):
        read_studio_export(path, project.config)


def test_minhash_signatures_estimate_jaccard():
    """Each permutation must order shingles differently: signature agreement ~ Jaccard."""
    import numpy as np

    from labeling.curation.duplicates import _PRIME, _minhash

    rng = np.random.default_rng(0)
    a = rng.integers(1, _PRIME, 256, dtype=np.uint64)
    b = rng.integers(0, _PRIME, 256, dtype=np.uint64)
    for overlap in (0.5, 0.8, 0.95):
        first = {f"word{i} and more" for i in range(1000)}
        shift = round(1000 * (1 - overlap) / (1 + overlap))
        second = {f"word{i} and more" for i in range(shift, 1000 + shift)}
        agreement = (_minhash(first, a, b) == _minhash(second, a, b)).mean()
        assert abs(agreement - jaccard(first, second)) < 0.08, overlap


def test_long_reposts_are_found_by_lsh():
    import random

    rng = random.Random(1)
    vocabulary = [f"w{i}" for i in range(3000)]
    posts, reposts = [], []
    for n in range(40):
        tokens = [rng.choice(vocabulary) for _ in range(400)]
        posts.append(CuratedPost(str(n), " ".join(tokens), []))
        tokens[rng.randrange(400)] = "changed"  # a date or a salary edited
        reposts.append(CuratedPost(str(100 + n), " ".join(tokens), []))
    kept, dups = deduplicate(posts + reposts, 0.9)
    assert {d.id for d in dups} == {p.id for p in reposts}
    assert all(d.kind == "near" and d.similarity >= 0.9 for d in dups)


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "conll"])
def test_a_one_post_export_with_empty_splits_reads_back(tmp_path, fmt):
    text = "We want Python 🙂 now"  # an astral character before nothing: offsets stay exact
    record = rec(1, 1, text, [span(text, "Python", "Technology")])
    result = export_dataset([record], tmp_path, ExportSettings(fmt, LABELS))
    assert {k: len(v) for k, v in result.splits.items()} == {"train": 1, "dev": 0, "test": 0}
    back = read_export(tmp_path, fmt)
    assert (len(back["dev"]), len(back["test"])) == (0, 0)
    (doc,) = back["train"]
    assert [(doc.text[s.start : s.end], s.label) for s in doc.spans] == [("Python", "Technology")]


def test_counts_leave_out_deleted_and_skipped_annotations(tmp_path):
    texts = [post_text(n)[0] for n in range(3)]
    records = [rec(n + 1, n + 1, text, []) for n, text in enumerate(texts)]
    records += [
        rec(10, 9, "A post whose only annotation was deleted.", [], deleted=True),
        rec(11, 1, texts[0], [], who="bob", deleted=True),  # a deleted second opinion
        rec(12, 8, "A skipped post.", [], cancelled=True),
    ]
    result = export_dataset(records, tmp_path, ExportSettings("jsonl", LABELS))
    assert result.summary().startswith(
        "3 posts (train 3, dev 0, test 0) from 3 annotations (3 skipped or deleted left out)"
    )
    assert (
        "3 annotations (3 skipped or deleted ones left out)" in (tmp_path / "README.md").read_text()
    )
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert (manifest["records"], manifest["records_left_out"]) == (3, 3)


TWO_LINES = "Skills: machine\n\nlearning and SQL.\nAlso Python"


@pytest.mark.parametrize("fmt", ["jsonl", "hf", "conll"])
def test_a_span_across_a_blank_line_is_one_entity_in_every_format(tmp_path, fmt):
    start, end = TWO_LINES.index("machine"), TWO_LINES.index(" and")
    spans = [Span(start, end, "Technical"), span(TWO_LINES, "Python", "Technology")]
    export_dataset([rec(1, 1, TWO_LINES, spans)], tmp_path, ExportSettings(fmt, LABELS))
    (doc,) = [d for docs in read_export(tmp_path, fmt).values() for d in docs]
    parts = [(doc.text[s.start : s.end].split(), s.label) for s in doc.spans]
    assert parts == [(["machine", "learning"], "Technical"), (["Python"], "Technology")]


def test_conll_keeps_the_lines_a_span_crosses_in_one_sentence(tmp_path):
    start, end = TWO_LINES.index("machine"), TWO_LINES.index(" and")
    export_dataset(
        [rec(1, 1, TWO_LINES, [Span(start, end, "Technical")])],
        tmp_path,
        ExportSettings("conll", LABELS, shares=(1, 0, 0)),
    )
    sentences = (tmp_path / "train.conll").read_text().split("\n\n")[1:-1]
    rows = [[line.split("\t") for line in s.splitlines()] for s in sentences]
    assert rows == [
        [["Skills", "O"], [":", "O"], ["machine", "B-Technical"], ["learning", "I-Technical"]]
        + [["and", "O"], ["SQL", "O"], [".", "O"]],
        [["Also", "O"], ["Python", "O"]],  # a line no span crosses is its own sentence
    ]


def test_the_card_states_the_word_rule_that_cuts_the_words(records, tmp_path):
    export_dataset(records, tmp_path, ExportSettings("conll", LABELS))
    card = (tmp_path / "README.md").read_text()
    rule = next(line for line in card.splitlines() if "snapped to whole words" in line)
    assert "\\w+" not in rule
    for example in WORD_EXAMPLES:  # e.g. PL/SQL and T-SQL: one word each, as the card says
        assert f"`{example}`" in rule and words(example) == [(0, len(example))]
