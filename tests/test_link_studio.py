"""Links in Label Studio without a browser: the link control in the config, a span's link
out to a prediction and back from an annotation, who decided it, the store keeping it, and
/predict linking predicted spans with a tiny taxonomy and the tiny encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from service_helpers import biased_model, predict_body, write_project

from labeling.studio.config import NO_MATCH, LabelSpec, build_config, parse_config
from labeling.studio.links import link_options, linked_span, option_labels, span_regions
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


def _regions(*ids: str) -> list[dict]:
    """Labels regions over TEXT's two spans, with these ids."""
    at = [{"text": "python", "start": 0}, {"text": "sql", "start": 11}]
    return [{"id": rid, "value": where} for rid, where in zip(ids, at, strict=False)]


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
    # its companions: the search of the whole taxonomy and the new entry
    assert (CONFIG.link_search_name, CONFIG.link_search_key) == ("link_search", "link_search")
    assert CONFIG.link_new_name == "link_new"
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
    # the entry's label with its id and its span: what the region's details show
    assert [r["value"]["choices"] for r in links] == [["python [py] for “python” at 0"], [NO_MATCH]]
    options = link_options(_links(), span_regions(spans, regions, CONFIG))
    assert options[0]["alias"] == links[0]["value"]["choices"][0]  # the option it ticks
    task = {"data": {"text": TEXT, "link_choices": options}}
    back = regions_to_spans(regions, CONFIG, TEXT, option_labels(task, CONFIG))
    assert back == spans


def test_each_span_offers_its_own_candidates_best_first_with_its_own_scores():
    # "python" is a candidate of both spans: each span's option has that span's score
    # (options merged by entry id kept the first span's text and score)
    options = link_options(_links(), _regions("r1", "r2"))
    shown = [(o["alias"], o["html"].split("<small>")[1].split(" ")[0]) for o in options]
    assert shown == [
        ("python [py] for “python” at 0", "0.95"),
        ("kubernetes [k8s] for “python” at 0", "0.40"),
        ("sql [sql] for “sql” at 11", "0.50"),
        ("python [py] for “sql” at 11", "0.30"),
    ]
    # every option differs from every other (the editor ticks all options of a value)
    assert len({o["alias"] for o in options}) == len({o["value"] for o in options}) == 4
    regions = [o["html"].split('class="skl-link skl-r-')[1].split('"')[0] for o in options]
    assert regions == ["r1", "r1", "r2", "r2"]
    # the post's style shows a region's own options only while that region is selected
    style = options[0]["html"].split("</style>")[0]
    assert '[class*="htx-highlight-r1-"]) .lsf-choice:has(.skl-r-r1){display:block}' in style
    assert '[class*="htx-highlight-r2-"]) .lsf-choice:has(.skl-r-r2){display:block}' in style
    assert "<style>" not in options[1]["html"]
    assert link_options(_links(), [*_regions("r1"), None]) == link_options(
        _links()[:1], _regions("r1")
    )
    evil = Link([Candidate("x", "<img src=x onerror=alert(1)>", 0.9)], 0.5)
    (option,) = link_options([evil], _regions("r1"))
    assert "<img" not in option["html"]  # labels are escaped: the editor renders html


def test_a_search_pick_or_a_new_entry_overrides_the_ticked_candidate():
    prediction = spans_to_regions(_predicted(), CONFIG, TEXT)
    annotation, task = _annotation({"python": "python [py]", "sql": NO_MATCH}, prediction)
    python_id, sql_id = (r["id"] for r in prediction if r["from_name"] == "label")
    value = {"start": 0, "end": 6, "text": "python"}
    annotation["result"] += [
        {
            "id": python_id,
            "from_name": "link_search",
            "to_name": "text",
            "type": "taxonomy",
            "value": {**value, "taxonomy": [["kubernetes [k8s]", "k8s"]]},
        },
        {
            "id": sql_id,
            "from_name": "link_new",
            "to_name": "text",
            "type": "textarea",
            "value": {"start": 11, "end": 14, "text": [" Structured  SQL "]},
        },
    ]
    python, sql = record_from_annotation(annotation, task, CONFIG).spans
    assert (python.taxonomy_id, python.taxonomy_label, python.link_status) == (
        "k8s",
        "kubernetes",
        "corrected",
    )
    assert (sql.taxonomy_id, sql.taxonomy_label, sql.link_status) == (
        "new:structured sql",
        "Structured  SQL",
        "corrected",
    )


def _annotation(choices: dict[str, str], prediction: list[dict]) -> tuple[dict, dict]:
    result = []
    for region in prediction:
        region = json.loads(json.dumps(region))
        if region["from_name"] == "link":
            region["value"]["choices"] = [choices[region["value"]["text"]]]
        result.append(region)
    annotation = {"id": 7, "task": 3, "result": result, "prediction": {"result": prediction}}
    regions = [r for r in prediction if r["from_name"] == "label"]
    task = {"id": 3, "data": {"text": TEXT, "link_choices": link_options(_links(), regions)}}
    return annotation, task


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
    from labeling.store import Store

    prediction = spans_to_regions(_predicted(), CONFIG, TEXT)
    annotation, task = _annotation({"python": "py", "sql": "k8s"}, prediction)
    store = Store(tmp_path / "store.sqlite")
    try:
        store.annotations.upsert(record_from_annotation(annotation, task, CONFIG))
        (stored,) = store.annotations.records()
    finally:
        store.close()
    assert [(s.taxonomy_id, s.link_status) for s in stored.spans] == [
        ("py", "confirmed"),
        ("k8s", "corrected"),
    ]


def linked_project(
    tmp_path: Path,
    model: Path,
    encoder: Path,
    name: str = "linked",
    taxonomy_csv: str = TAXONOMY_CSV,
    top_k: int = 3,
) -> Path:
    """A service-test project whose config has the link control and whose [linking] names
    a tiny taxonomy and a linker folder on the tiny encoder (only exact labels link)."""
    from training.linker import LinkerSettings

    project = write_project(tmp_path / "project", model, name=name)
    config = parse_config((project / "labeling_config.xml").read_text())
    xml = build_config(config.labels, link=True)
    (project / "labeling_config.xml").write_text(xml)
    (project / "skills.csv").write_text(taxonomy_csv)
    LinkerSettings(encoder=str(encoder), threshold=0.999).save(project / "linker")
    with open(project / "project.toml", "a") as handle:
        handle.write(f'\n[linking]\ntaxonomy = "skills.csv"\nlinker = "linker"\ntop_k = {top_k}\n')
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
    assert links == {
        "python": ["python [py] for “python” at 0"],
        "sql": ["sql [sql] for “sql” at 7"],
        "docker": [NO_MATCH],
    }


def test_the_taxonomy_search_serves_every_entry_with_its_labels_to_the_browser(linked_client):
    import gzip

    packed = linked_client.get("/taxonomy", headers={"Accept-Encoding": "gzip, br"})
    assert packed.headers["Content-Encoding"] == "gzip"
    reply = linked_client.get("/taxonomy")
    assert json.loads(gzip.decompress(packed.data)) == reply.get_json()
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"] == "*"
    assert reply.get_json()["items"] == [
        {"value": "kubernetes", "alias": "kubernetes [k8s]", "children": [{"value": "k8s"}]},
        {
            "value": "python",
            "alias": "python [py]",
            "children": [{"value": "python programming"}],
        },
        {
            "value": "sql",
            "alias": "sql [sql]",
            "children": [{"value": "structured query language"}],
        },
    ]


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
    options = link_options(_links(), _regions("r1", "r2"))
    writer.submit(task, options)
    writer.submit(task, options)  # the same options again: not written twice
    writer.submit({"id": 6, "data": {"text": TEXT, "link_choices": options}}, options)
    deadline = time.monotonic() + 10
    while writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [("PATCH", "/api/tasks/5", {"data": {"text": TEXT, "link_choices": options}})]


def test_new_entries_become_linkable_taxonomy_additions(tmp_path, tiny_encoder):
    from labeling.link_pairs import taxonomy_additions
    from training.linker import Linker, SentenceEncoder
    from training.taxonomy import load_csv

    spans = [
        Span(0, 3, "Skill", "You", None, "new:k9s", "K9s", None, "corrected"),
        Span(18, 21, "Skill", "k8s", None, "new:k9s", "k9s", None, "corrected"),
        Span(4, 8, "Skill", "know", None, "new:helm", "Helm", None, "predicted"),
    ]
    (added,) = taxonomy_additions([_record(spans)])  # a prediction nobody confirmed: not
    assert (added.id, added.labels, added.type) == ("new:k9s", ["K9s", "k9s"], "added")
    (tmp_path / "skills.csv").write_text(TAXONOMY_CSV)
    linker = Linker(load_csv(tmp_path / "skills.csv"), SentenceEncoder(tiny_encoder))
    assert linker.add_entries([added]) == 1 and linker.add_entries([added]) == 0
    (link,) = linker.link(["k9s"], k=2)
    assert (link.candidates[0].id, link.candidates[0].score) == ("new:k9s", pytest.approx(1.0))


def test_behind_basic_auth_the_taxonomy_asks_for_the_key_its_url_carries(tmp_path, tiny_encoder):
    from backend.service.app import create_app
    from backend.service.config import ServiceConfig
    from backend.service.linker_holder import TaskOptionsWriter
    from backend.service.taxonomy_search import note_search_url, search_key

    project = linked_project(tmp_path, biased_model(tmp_path / "model", "B-SOFT"), tiny_encoder)
    config = ServiceConfig(
        project=str(project),
        state_dir=tmp_path / "state",
        background_load=False,
        basic_auth_user="ml",
        basic_auth_pass="secret",
    )
    app = create_app(config)
    try:
        client = app.test_client()
        assert client.get("/taxonomy").status_code == 401  # an annotator's browser: no password
        services = app.extensions["skillloop"]
        services.link_options = TaskOptionsWriter(None, "link_choices", "link_search")
        note_search_url(services, "http://backend:9090/", config)
        url = services.link_options.search_url
        assert url == f"http://backend:9090/taxonomy?key={search_key(config)}"
        reply = client.get(url.removeprefix("http://backend:9090"))
        assert reply.status_code == 200 and len(reply.get_json()["items"]) == 3
    finally:
        app.extensions["skillloop"].close()


def test_status_says_whether_the_linker_is_ready(linked_client):
    linking = linked_client.get("/status").get_json()["linking"]
    assert linking == {
        "enabled": True,
        "ready": True,
        "loading": False,
        "embedding": None,
        "error": None,
        "in_memory": {"held": 1, "max": 0, "loads": 1, "unloads": 0},
    }


def test_a_linker_embedding_its_taxonomy_says_how_far_it_is_which_predict_does_not_wait_for(
    tmp_path, tiny_encoder
):
    import os

    from backend.service.linker_holder import LinkerHolder
    from labeling.project import load_project
    from labeling.state import ProjectState
    from training.embedding_progress import PROGRESS_FILE

    project = load_project(
        linked_project(tmp_path, biased_model(tmp_path / "m", "B-SOFT"), tiny_encoder)
    )
    state = ProjectState.of(project, tmp_path / "state")
    holder = LinkerHolder(project, state)  # not started: loading
    cache = state.linking_cache
    cache.mkdir(parents=True)
    running = {"taxonomy": "skills", "done": 4, "total": 12, "finished": False}
    (cache / PROGRESS_FILE).write_text(json.dumps({**running, "pid": os.getpid()}))
    assert holder.embedding() == {**running, "pid": os.getpid()}
    assert holder.state()["loading"] and not holder.state()["ready"]
    (cache / PROGRESS_FILE).write_text(json.dumps({**running, "pid": os.getpid() + 1}))
    assert holder.embedding() is None  # another process's embedding: not this linker's


def test_a_link_without_a_label_still_reads_back_its_entry():
    from labeling.studio.links import choice_value, entry_id_of

    (region,) = _regions("r1")
    assert entry_id_of(choice_value(None, "py", region)) == "py"
    assert entry_id_of(choice_value("a [b] label", "py", region)) == "py"
    assert entry_id_of("py") == "py"  # a bare id, as older annotations hold
