"""Links in Label Studio without a browser: the link control in the config, a span's link
out to a prediction and back from an annotation, who decided it, the store keeping it, and
/predict linking predicted spans with a tiny taxonomy and the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_helpers import biased_model, predict_body, write_project

from labeling.studio.config import NO_MATCH, LabelSpec, build_config, parse_config
from labeling.studio.links import link_options, linked_span, option_labels
from labeling.studio.payloads import record_from_annotation
from labeling.studio.tasks import regions_to_spans, spans_to_regions
from training.linker import Candidate, Link
from training.text import Span, span_from_json, span_to_json

TEXT = "python and sql"
TAXONOMY_CSV = """id,preferred_label,alt_labels
py,python,python programming
sql,sql,structured query language
k8s,kubernetes,k8s
"""
CONFIG = parse_config(build_config([LabelSpec("Technology")], link=True))


def _links() -> list[Link]:
    return [
        Link([Candidate("py", "python", 0.95), Candidate("k8s", "kubernetes", 0.4)], 0.77),
        Link([Candidate("sql", "sql", 0.5), Candidate("py", "python", 0.3)], 0.77),
    ]


def _predicted() -> list[Span]:
    spans = [Span(0, 6, "Technology", "python", 0.9), Span(11, 14, "Technology", "sql", 0.8)]
    return [linked_span(s, link) for s, link in zip(spans, _links(), strict=True)]


def test_the_link_control_is_found_in_a_config_and_absent_from_plain_ones():
    assert (CONFIG.link_from_name, CONFIG.link_choices_key) == ("link", "link_choices")
    assert "link" in CONFIG.control_names
    plain = parse_config(build_config([LabelSpec("Technology")]))
    assert not plain.links and "<Choices" not in build_config([LabelSpec("Technology")])


def test_a_prediction_carries_each_spans_link_and_reads_back_the_same():
    spans = _predicted()
    assert spans[0].taxonomy_id == "py" and spans[0].link_status == "predicted"
    assert spans[1].taxonomy_id is None and spans[1].link_status == "no_match"  # 0.5 < 0.77
    regions = spans_to_regions(spans, CONFIG, TEXT)
    labels, links = regions[0::2], regions[1::2]
    assert [r["from_name"] for r in links] == ["link", "link"]
    assert [r["id"] for r in links] == [r["id"] for r in labels]  # one region, two results
    assert [r["value"]["choices"] for r in links] == [["py"], [NO_MATCH]]
    task = {"data": {"text": TEXT, "link_choices": link_options(TEXT, spans, _links())}}
    back = regions_to_spans(regions, CONFIG, TEXT, option_labels(task, CONFIG))
    assert back == spans


def test_the_posts_options_name_every_candidate_once_with_its_span():
    options = link_options(TEXT, _predicted(), _links())
    assert [o["alias"] for o in options] == ["py", "k8s", "sql"]  # python listed once
    assert options[1]["value"] == "kubernetes" and "python" in options[1]["html"]
    # an entry ranked for two spans names the one it scored best for
    assert "for \u201cpython\u201d 0.95" in options[0]["html"]
    both = [
        Link([Candidate("py", "python", 0.95), Candidate("sql", "sql", 0.3)], 0.77),
        Link([Candidate("sql", "sql", 0.9)], 0.77),
    ]
    sql = link_options(TEXT, _predicted(), both)[1]
    assert sql["alias"] == "sql" and "for \u201csql\u201d 0.90" in sql["html"]
    evil = Link([Candidate("x", "<img src=x onerror=alert(1)>", 0.9)], 0.5)
    (option,) = link_options("a", [Span(0, 1, "T", "a")], [evil])
    assert "<img" not in option["html"]  # labels are escaped: the editor renders html


def _annotation(choices: dict[str, str], prediction: list[dict]) -> tuple[dict, dict]:
    result = []
    for region in prediction:
        region = json.loads(json.dumps(region))
        if region["from_name"] == "link":
            region["value"]["choices"] = [choices[region["value"]["text"]]]
        result.append(region)
    annotation = {"id": 7, "task": 3, "result": result, "prediction": {"result": prediction}}
    task = {"id": 3, "data": {"text": TEXT, "link_choices": link_options(TEXT, *_both())}}
    return annotation, task


def _both() -> tuple[list[Span], list[Link]]:
    return _predicted(), _links()


def test_an_annotation_says_whether_each_link_was_confirmed_corrected_or_no_match():
    prediction = spans_to_regions(_predicted(), CONFIG, TEXT)
    annotation, task = _annotation({"python": "py", "sql": "sql"}, prediction)
    record = record_from_annotation(annotation, task, CONFIG)
    python, sql = record.spans
    assert (python.taxonomy_id, python.link_status, python.link_score) == ("py", "confirmed", 0.95)
    assert (sql.taxonomy_id, sql.taxonomy_label, sql.link_status) == ("sql", "sql", "corrected")
    annotation, task = _annotation({"python": NO_MATCH, "sql": "k8s"}, prediction)
    python, sql = record_from_annotation(annotation, task, CONFIG).spans
    assert (python.taxonomy_id, python.link_status) == (None, "no_match")
    assert (sql.taxonomy_id, sql.taxonomy_label, sql.link_status) == (
        "k8s",
        "kubernetes",
        "corrected",
    )


def test_link_fields_ride_along_in_the_stored_json_and_unlinked_spans_are_unchanged():
    plain = Span(0, 3, "Skill", "abc")
    assert span_to_json(plain) == {"start": 0, "end": 3, "label": "Skill", "text": "abc"}
    linked = Span(0, 3, "Skill", "abc", None, "k8s", "kubernetes", None, "corrected")
    assert span_from_json(span_to_json(linked)) == linked


def test_the_store_keeps_corrected_links(tmp_path):
    from labeling.store import AnnotationStore

    prediction = spans_to_regions(_predicted(), CONFIG, TEXT)
    annotation, task = _annotation({"python": "py", "sql": "k8s"}, prediction)
    store = AnnotationStore(tmp_path / "store.sqlite")
    try:
        store.upsert(record_from_annotation(annotation, task, CONFIG))
        (stored,) = store.records()
    finally:
        store.close()
    assert [(s.taxonomy_id, s.link_status) for s in stored.spans] == [
        ("py", "confirmed"),
        ("k8s", "corrected"),
    ]


def linked_project(tmp_path: Path, model: Path, encoder: Path, name: str = "linked") -> Path:
    """A service-test project whose config has the link control and whose [linking] names
    a tiny taxonomy and a linker folder on the tiny encoder (only exact labels link)."""
    from training.linker import LinkerSettings

    project = write_project(tmp_path / "project", model, name=name)
    config = parse_config((project / "labeling_config.xml").read_text())
    xml = build_config(config.labels, link=True)
    (project / "labeling_config.xml").write_text(xml)
    (project / "skills.csv").write_text(TAXONOMY_CSV)
    LinkerSettings(encoder=str(encoder), threshold=0.999).save(project / "linker")
    with open(project / "project.toml", "a") as handle:
        handle.write('\n[linking]\ntaxonomy = "skills.csv"\nlinker = "linker"\ntop_k = 3\n')
    return project


@pytest.fixture
def linked_client(tmp_path, tiny_encoder):
    from backend.service.app import create_app
    from backend.service.config import ServiceConfig

    model = biased_model(tmp_path / "model", "B-TECHNOLOGY")
    project = linked_project(tmp_path, model, tiny_encoder)
    app = create_app(
        ServiceConfig(project=str(project), state_dir=tmp_path / "state", background_load=False)
    )
    app.testing = True
    yield app.test_client()
    app.extensions["skillloop"].close()


def test_predict_links_each_predicted_span(linked_client):
    xml = build_config([LabelSpec(v) for v in ("Technology", "Technical", "Business", "Soft")])
    linked_xml = xml.replace("</View>", "") + "  " + _link_xml() + "</View>\n"
    body = predict_body(["python sql docker"], label_config=linked_xml)
    reply = linked_client.post("/predict", json=body)
    assert reply.status_code == 200, reply.get_json()
    (entry,) = reply.get_json()["results"]
    links = {
        r["value"]["text"]: r["value"]["choices"]
        for r in entry["result"]
        if r["from_name"] == "link"
    }
    # every word is a Technology span; an exact label links at cosine 1, others are no match
    assert links == {"python": ["py"], "sql": ["sql"], "docker": [NO_MATCH]}


def _link_xml() -> str:
    from labeling.studio.config import link_control_xml

    return link_control_xml().strip() + "\n"


def _record(spans: list[Span], annotation_id: int = 1):
    from labeling.store import AnnotationRecord

    text = "You know sql. And k8s too."
    return AnnotationRecord(
        annotation_id=annotation_id, task_id=1, project="", text=text, spans=spans
    )


def test_the_linkers_next_round_gets_confirmed_and_corrected_pairs_only():
    from labeling.link_pairs import link_pairs

    spans = [
        Span(9, 12, "Skill", "sql", None, "sql", "sql", 0.9, "confirmed"),
        Span(18, 21, "Skill", "k8s", None, "k8s", "kubernetes", None, "corrected"),
        Span(0, 3, "Skill", "You", None, None, None, None, "no_match"),
        Span(4, 8, "Skill", "know", None, "py", "python", 0.8, "predicted"),
    ]
    pairs = list(link_pairs([_record(spans), _record(spans, 2)]))  # the same pair once
    assert [(p.span, p.context, p.taxonomy_id, p.status) for p in pairs] == [
        ("sql", "You know sql.", "sql", "confirmed"),
        ("k8s", "And k8s too.", "k8s", "corrected"),
    ]
    assert pairs[1].pair() == ("k8s", "k8s")


def test_snapping_a_span_to_its_words_keeps_its_link():
    from labeling.curation.export import snap

    drawn = Span(10, 12, "Skill", "ql", None, "sql", "sql", None, "corrected")  # half a word
    (snapped,) = snap("You know sql.", [drawn])
    assert (snapped.start, snapped.end, snapped.taxonomy_id) == (9, 12, "sql")
    assert snapped.link_status == "corrected"


def test_exports_carry_the_annotators_link_over_the_linkers(tmp_path, tiny_encoder):
    from types import SimpleNamespace

    from backend.link_export import link_export
    from labeling.curation.export import CuratedPost
    from training.datasets import write_jsonl
    from training.linker import Linker, SentenceEncoder
    from training.taxonomy import load_csv
    from training.text import Document

    (tmp_path / "skills.csv").write_text(TAXONOMY_CSV)
    linker = Linker(load_csv(tmp_path / "skills.csv"), SentenceEncoder(tiny_encoder))
    text = "You know sql and python."
    spans = [
        Span(9, 12, "Skill", "sql", None, "k8s", "kubernetes", None, "corrected"),
        Span(17, 23, "Skill", "python", None, None, None, None, "no_match"),
    ]
    post = CuratedPost("1", text, spans)
    out = tmp_path / "export"
    out.mkdir()
    write_jsonl([Document(text, spans, id="1")], out / "train.jsonl")
    (out / "README.md").write_text("# card\n")
    link_export(SimpleNamespace(out_dir=out, splits={"train": [post]}), linker, 2)
    rows = [json.loads(line) for line in (out / "links.jsonl").read_text().splitlines()]
    # the linker alone would link both exactly (cosine 1); the annotator's decisions win
    assert [(r["taxonomy_id"], r["link_status"]) for r in rows] == [
        ("k8s", "corrected"),
        (None, "no_match"),
    ]
    assert rows[0]["link_candidates"][0]["id"] == "sql"  # the linker's view stays beside it


def test_webhooks_without_the_prediction_read_confirmation_from_the_editors_origin():
    # Label Studio 1.23's webhooks send `prediction: {}`; the editor marks each result
    # kept from the prediction with origin "prediction", a changed one "prediction-changed"
    prediction = spans_to_regions(_predicted(), CONFIG, TEXT)
    annotation, task = _annotation({"python": "py", "sql": "k8s"}, prediction)
    annotation["prediction"] = {}
    for region in annotation["result"]:
        kept = region["value"]["text"] == "python"
        region["origin"] = "prediction" if kept else "prediction-changed"
    python, sql = record_from_annotation(annotation, task, CONFIG).spans
    assert (python.taxonomy_id, python.link_status, python.link_score) == ("py", "confirmed", 0.95)
    assert (sql.taxonomy_id, sql.taxonomy_label, sql.link_status) == (
        "k8s",
        "kubernetes",
        "corrected",
    )


def test_candidates_are_written_into_a_task_once_off_the_request_thread():
    import time

    from backend.service.linker_holder import TaskOptionsWriter

    calls: list[tuple[str, str, dict]] = []

    class FakeClient:
        def request(self, method: str, path: str, json: dict) -> None:
            calls.append((method, path, json))

    writer = TaskOptionsWriter(FakeClient, "link_choices")
    task = {"id": 5, "data": {"text": TEXT, "link_choices": []}}
    options = link_options(TEXT, _predicted(), _links())
    writer.submit(task, options)
    writer.submit(task, options)  # the same options again: not written twice
    writer.submit({"id": 6, "data": {"text": TEXT, "link_choices": options}}, options)
    deadline = time.monotonic() + 10
    while writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [("PATCH", "/api/tasks/5", {"data": {"text": TEXT, "link_choices": options}})]
