"""Labeling configs and the task/annotation <-> span conversion."""

import pytest

from labeling.studio.config import (
    ConfigError,
    LabelSpec,
    build_config,
    map_model_labels,
    parse_config,
)
from labeling.studio.tasks import (
    TaskError,
    annotation_to_document,
    regions_to_spans,
    spans_to_regions,
)
from training.text import Span

CONFIG = """<View>
  <Labels name="skills" toName="post">
    <Label value="Business" background="#f00" predicted_values="BUS, business"/>
    <Label value="Technology"/>
  </Labels>
  <Text name="post" value="$body"/>
</View>"""


def test_parse_reads_names_field_and_predicted_values():
    config = parse_config(CONFIG)
    assert (config.from_name, config.to_name, config.value_key) == ("skills", "post", "body")
    assert config.labels[0] == LabelSpec("Business", "#f00", ("BUS", "business"))
    assert config.label_values == ["Business", "Technology"]


@pytest.mark.parametrize(
    "xml",
    [
        "",
        "<View>",
        "<View><Text name='t' value='$t'/></View>",
        "<View><Labels name='l' toName='x'><Label value='A'/></Labels>"
        "<Text name='t' value='$t'/></View>",
        "\ud800<View/>",  # a lone surrogate, as a JSON webhook can carry (found by test_fuzz)
    ],
)
def test_configs_without_a_labels_text_pair_are_refused(xml):
    with pytest.raises(ConfigError):
        parse_config(xml)


def test_model_labels_map_through_predicted_values_then_names():
    config = parse_config(CONFIG)
    assert map_model_labels(config, ["BUS", "technology"]) == {
        "BUS": "Business",
        "technology": "Technology",
    }
    with pytest.raises(ConfigError, match="Technology"):
        map_model_labels(config, ["BUS"])


def test_build_config_round_trips():
    labels = [LabelSpec("Soft", "#0f0", ("SOFT",)), LabelSpec('A "quoted" label')]
    config = parse_config(build_config(labels))
    assert config.labels == labels and config.value_key == "text"


def test_regions_carry_code_point_offsets_as_the_editor_counts_them():
    config = parse_config(CONFIG)
    text = "🚀 Rocket team wants SQL and budgeting"
    sql, budget = text.index("SQL"), text.index("budgeting")
    spans = [Span(sql, sql + 3, "Technology", "SQL", 0.9), Span(budget, len(text), "Business")]
    regions = spans_to_regions(spans, config, text)
    # Label Studio draws [...text].slice(start, end): code points, the rocket counts once
    assert regions[0]["value"]["start"] == sql == 20
    assert [*text][regions[0]["value"]["start"] : regions[0]["value"]["end"]] == list("SQL")
    assert regions[0]["from_name"] == "skills" and regions[0]["to_name"] == "post"
    back = regions_to_spans(regions, config, text)
    assert [(s.start, s.end, s.label, s.text) for s in back] == [
        (sql, sql + 3, "Technology", "SQL"),
        (budget, len(text), "Business", "budgeting"),
    ]


def test_legacy_utf16_regions_are_read_only_where_their_text_proves_it():
    config = parse_config(CONFIG)
    text = "🚀🚀 SQL and Python"
    sql = text.index("SQL")  # 3 code points, 5 UTF-16 units

    def region(start, end, claimed):
        value = {"start": start, "end": end, "text": claimed, "labels": ["Technology"]}
        return {"from_name": "skills", "value": value}

    legacy = regions_to_spans([region(sql + 2, sql + 5, "SQL")], config, text)
    assert [(s.start, s.end, s.text) for s in legacy] == [(sql, sql + 3, "SQL")]
    # a code-point region whose text matches stays as it is
    exact = regions_to_spans([region(sql, sql + 3, "SQL")], config, text)
    assert [(s.start, s.end) for s in exact] == [(sql, sql + 3)]
    # text that neither reading proves: the code points are trusted, not shifted
    unproven = regions_to_spans([region(sql, sql + 3, "Python")], config, text)
    assert [(s.start, s.end, s.text) for s in unproven] == [(sql, sql + 3, "SQL")]


def test_regions_with_unknown_labels_are_left_out_and_other_tags_ignored():
    config = parse_config(CONFIG)
    assert spans_to_regions([Span(0, 3, "Skill")], config, "sql") == []
    result = [{"from_name": "other", "value": {"start": 0, "end": 3, "labels": ["Business"]}}]
    assert regions_to_spans(result, config, "sql") == []


def test_annotation_to_document_and_task_errors():
    config = parse_config(CONFIG)
    task = {"id": 7, "data": {"body": "We use SQL"}}
    value = {"start": 7, "end": 10, "text": "SQL", "labels": ["Technology"]}
    result = [{"from_name": "skills", "to_name": "post", "type": "labels", "value": value}]
    doc = annotation_to_document(task, {"result": result}, config)
    assert doc.id == "7" and doc.spans[0].text == "SQL"
    with pytest.raises(TaskError, match="body"):
        annotation_to_document({"id": 8, "data": {"text": "x"}}, {"result": []}, config)
    bad = [{**result[0], "value": {**result[0]["value"], "end": 99}}]
    with pytest.raises(TaskError, match="outside"):
        regions_to_spans(bad, config, "We use SQL")
