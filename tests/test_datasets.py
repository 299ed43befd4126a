"""Readers and writers of labelled documents, the nesting policy and document splits."""

import json

import pytest

from training.datasets import (
    all_spans,
    dropped_by_label,
    read_conll,
    read_documents,
    read_jsonl,
    read_skillspan,
    split_documents,
    write_conll,
    write_jsonl,
    write_skillspan,
)
from training.text import Document, Span

SKILLSPAN_ROWS = [
    {
        "idx": 1,
        "source": "tech",
        "tokens": ["Senior", "Python", "developer"],
        "tags_skill": ["O", "O", "O"],
        "tags_knowledge": ["O", "B", "O"],
    },
    {
        "idx": 1,
        "source": "tech",
        "tokens": ["design", "scalable", "Python", "services", "."],
        "tags_skill": ["B", "I", "I", "I", "O"],
        "tags_knowledge": ["O", "O", "B", "O", "O"],
    },
    {
        "idx": 1,
        "source": "house",
        "tokens": ["Team", "player"],
        "tags_skill": ["B", "I"],
        "tags_knowledge": ["O", "O"],
    },
    {
        "idx": 2,
        "source": "tech",
        "tokens": ["Know", "AWS", "Lambda", "well"],
        "tags_skill": ["O", "O", "O", "O"],
        "tags_knowledge": ["O", "B", "I", "O"],
    },
    {
        "idx": 1,
        "source": "tech",
        "tokens": ["Apply", "now"],
        "tags_skill": ["O", "O"],
        "tags_knowledge": ["O", "O"],
    },
]


@pytest.fixture
def skillspan_file(tmp_path):
    path = tmp_path / "sample.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in SKILLSPAN_ROWS))
    return path


def spans_of(doc):
    return [(s.label, s.text) for s in doc.spans]


def test_skillspan_sentences_regroup_into_postings_in_file_order(skillspan_file):
    docs = read_skillspan(skillspan_file)
    assert [d.id for d in docs] == ["tech-1", "house-1", "tech-2"]
    tech = docs[0]
    # sentences of (tech, 1) in file order, even with another posting in between
    assert tech.text == "Senior Python developer\ndesign scalable Python services .\nApply now"
    assert spans_of(tech) == [("Knowledge", "Python"), ("Skill", "design scalable Python services")]
    assert all(tech.text[s.start : s.end] == s.text for s in tech.spans)
    assert spans_of(docs[2]) == [("Knowledge", "AWS Lambda")]


def test_nesting_policy_keeps_the_longer_span_and_counts_what_it_drops(skillspan_file):
    docs = read_skillspan(skillspan_file)
    assert docs[0].meta["dropped"] == [{"start": 40, "end": 46, "label": "Knowledge"}]
    assert dropped_by_label(docs) == {
        "Knowledge": {"gold": 3, "dropped": 1},
        "Skill": {"gold": 2, "dropped": 0},
    }
    assert len(all_spans(docs[0])) == 3


def test_skillspan_round_trip_restores_nested_spans(skillspan_file, tmp_path):
    docs = read_skillspan(skillspan_file)
    out = tmp_path / "again.json"
    write_skillspan(docs, out)
    again = read_skillspan(out)
    assert [(d.text, d.spans, d.meta) for d in again] == [(d.text, d.spans, d.meta) for d in docs]


def test_conll_bare_tags_take_column_labels_and_docstart_splits_documents(tmp_path):
    path = tmp_path / "data.conll"
    path.write_text(
        "-DOCSTART-\tO\tO\n\n"
        "We\tO\tO\nneed\tO\tO\nPython\tO\tB\nand\tO\tO\nteam\tB\tO\nwork\tI\tO\n\n"
        "Thanks\tO\tO\n\n"
        "-DOCSTART-\tO\tO\n\nSQL\tO\tB\n"
    )
    docs = read_conll(path, ["Skill", "Knowledge"])
    assert [d.text for d in docs] == ["We need Python and team work\nThanks", "SQL"]
    assert spans_of(docs[0]) == [("Knowledge", "Python"), ("Skill", "team work")]
    with pytest.raises(ValueError, match="label"):
        read_conll(path)  # bare tags and no column labels


def test_conll_without_docstart_makes_one_document_per_sentence(tmp_path):
    path = tmp_path / "plain.conll"
    path.write_text("Use\tO\nDocker\tB-Technology\n\nBe\tO\nkind\tB-Soft\n")
    docs = read_documents(path)
    assert [spans_of(d) for d in docs] == [[("Technology", "Docker")], [("Soft", "kind")]]


def test_conll_round_trip(tmp_path):
    docs = [
        Document(
            "We need machine learning and Docker\nApply now",
            [Span(8, 24, "Technology"), Span(29, 35, "Technology")],
        ),
        Document("Soft skills : communication", [Span(14, 27, "Soft")]),
    ]
    path = tmp_path / "out.conll"
    write_conll(docs, path)
    again = read_conll(path)
    assert [(d.text, [s.key() for s in d.spans]) for d in again] == [
        (d.text, [s.key() for s in d.spans]) for d in docs
    ]


def test_jsonl_round_trip_with_id_meta_and_unicode(tmp_path):
    text = "Kenntnisse in Python und Kommunikationsfähigkeit 🙂"
    docs = [Document(text, [Span(14, 20, "Technology"), Span(25, 48, "Soft")], "p1", {"x": 1})]
    path = tmp_path / "docs.jsonl"
    write_jsonl(docs, path)
    again = read_jsonl(path)
    assert again[0].id == "p1" and again[0].meta == {"x": 1}
    assert spans_of(again[0]) == [("Technology", "Python"), ("Soft", "Kommunikationsfähigkeit")]


def test_jsonl_overlaps_are_flattened_and_bad_spans_rejected(tmp_path):
    path = tmp_path / "d.jsonl"
    spans = [{"start": 0, "end": 8, "label": "Skill"}, {"start": 4, "end": 8, "label": "Tech"}]
    path.write_text(json.dumps({"text": "big data tools", "spans": spans}) + "\n")
    doc = read_documents(path)[0]
    assert spans_of(doc) == [("Skill", "big data")]
    assert dropped_by_label([doc])["Tech"] == {"gold": 1, "dropped": 1}
    path.write_text(json.dumps({"text": "abc", "spans": [{"start": 2, "end": 9, "label": "X"}]}))
    with pytest.raises(ValueError, match="outside the text"):
        read_documents(path)


def test_read_documents_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_documents(tmp_path / "missing.json")
    (tmp_path / "data.xml").write_text("<x/>")
    with pytest.raises(ValueError, match="unknown data format"):
        read_documents(tmp_path / "data.xml")
    (tmp_path / "odd.json").write_text('{"foo": 1}\n')
    with pytest.raises(ValueError, match="neither"):
        read_documents(tmp_path / "odd.json")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="broken.jsonl:1"):
        read_documents(tmp_path / "broken.jsonl")


def test_splits_are_by_document_and_repeatable():
    docs = [Document(f"text {n}", id=f"post-{n // 2}") for n in range(40)]  # 2 chunks per post
    train, dev, test = split_documents(docs, [0.6, 0.2, 0.2], seed=3)
    assert sum(map(len, (train, dev, test))) == 40
    ids = [{d.id for d in part} for part in (train, dev, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0]) == 12 and len(ids[1]) == 4
    assert split_documents(docs, [0.6, 0.2, 0.2], seed=3)[1] == dev
    assert split_documents(docs, [0.6, 0.2, 0.2], seed=4)[1] != dev
    with pytest.raises(ValueError):
        split_documents(docs, [])


def test_real_skillspan_postings(skillspan_dir):
    docs = read_documents(skillspan_dir / "dev.json")
    assert len(docs) == 58
    counts = dropped_by_label(docs)
    assert counts["Skill"]["gold"] == 1070 and counts["Knowledge"]["gold"] == 1093
    assert counts["Skill"]["dropped"] == 0 and 0 < counts["Knowledge"]["dropped"] < 100
    for doc in docs:
        assert all(doc.text[s.start : s.end] == s.text for s in doc.spans)
        assert all(not s.text[0].isspace() and not s.text[-1].isspace() for s in doc.spans)
