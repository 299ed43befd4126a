"""The project folders under projects/: settings, labeling configs, sample posts and gold.

These are data files edited by hand, so the checks here are what keeps them usable: a
typo in a label, a post that drifted from its gold copy or an offset that cuts a word
would otherwise only surface as a bad training round.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from training.text import words

PROJECTS = Path(__file__).resolve().parent.parent / "projects"
PROJECT_FOLDERS = sorted(p.parent for p in PROJECTS.glob("*/project.toml"))
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")

REQUIRED = {
    "project": {"name": str, "title": str, "description": str},
    "model": {"base": str, "max_tokens": int, "stride": int},
    "training": {
        "epochs": int,
        "learning_rate": float,
        "batch_size": int,
        "seed": int,
        "patience": int,
    },
    "retrain": {
        "every_n_annotations": int,
        "debounce_seconds": (int, float),
        "heldout_share": float,
        "tolerance": float,
    },
    "selection": {"strategy": str, "batch_size": int},
    "data": {},
}
LABEL_KEYS = {
    "value": str,
    "background": str,
    "predicted_values": list,
    "guideline": str,
    "examples": list,
    "counter_examples": list,
}


def read_toml(folder: Path) -> dict:
    return tomllib.loads((folder / "project.toml").read_text(encoding="utf-8"))


def read_jsonl(path: Path) -> list[dict]:
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def data_file(folder: Path, key: str) -> Path | None:
    value = read_toml(folder)["data"].get(key)
    return folder / value if value else None


def test_both_projects_exist():
    assert {p.name for p in PROJECT_FOLDERS} >= {"linkedin-skills", "skillspan"}


@pytest.mark.parametrize("folder", PROJECT_FOLDERS, ids=lambda p: p.name)
def test_project_toml_has_required_keys(folder):
    raw = read_toml(folder)
    for section, keys in REQUIRED.items():
        assert section in raw, f"[{section}] missing"
        for key, kind in keys.items():
            assert isinstance(raw[section].get(key), kind), f"[{section}] {key}"
    assert raw["project"]["name"] == folder.name
    assert raw["data"].get("posts") or raw["data"].get("import")
    assert 0 < raw["retrain"]["heldout_share"] < 1
    assert 0 <= raw["model"]["stride"] < raw["model"]["max_tokens"]

    labels = raw["labels"]
    assert labels
    for label in labels:
        for key, kind in LABEL_KEYS.items():
            assert isinstance(label.get(key), kind), f"{label.get('value')}: {key}"
        assert HEX_COLOUR.match(label["background"]), label["background"]
        assert len(label["examples"]) == 2 and all(label["examples"])
        assert label["counter_examples"] and label["guideline"].strip()
        assert "\n" not in label["guideline"]
    values = [label["value"] for label in labels]
    assert len(set(values)) == len(values)
    colours = [label["background"].lower() for label in labels]
    assert len(set(colours)) == len(colours), "labels need distinct colours"

    label_map = raw["model"].get("label_map", {})
    assert set(label_map.values()) <= set(values)
    if label_map:
        predicted = {tag for label in labels for tag in label["predicted_values"]}
        assert set(label_map) == predicted
        for label in labels:
            assert all(label_map[tag] == label["value"] for tag in label["predicted_values"])


@pytest.mark.parametrize("folder", PROJECT_FOLDERS, ids=lambda p: p.name)
def test_labeling_config_matches_toml(folder):
    root = ET.parse(folder / "labeling_config.xml").getroot()
    assert root.tag == "View"
    (labels_tag,) = root.findall("Labels")
    (text_tag,) = root.findall("Text")
    assert labels_tag.get("name") == "label" and labels_tag.get("toName") == "text"
    assert text_tag.get("name") == "text" and text_tag.get("value") == "$text"
    in_xml = [
        (el.get("value"), el.get("background"), el.get("predicted_values"))
        for el in labels_tag.findall("Label")
    ]
    in_toml = [
        (label["value"], label["background"], ",".join(label["predicted_values"]))
        for label in read_toml(folder)["labels"]
    ]
    assert in_xml == in_toml


@pytest.mark.parametrize("folder", PROJECT_FOLDERS, ids=lambda p: p.name)
def test_load_project_accepts_the_folder(folder):
    from labeling.project import load_project  # an import error must fail, not skip

    project = load_project(folder)
    assert project.label_values == [label["value"] for label in read_toml(folder)["labels"]]
    gold_path = data_file(folder, "gold")
    if gold_path:
        gold = project.gold()
        rows = read_jsonl(gold_path)
        assert [len(doc.spans) for doc in gold] == [len(row["spans"]) for row in rows]
        assert len(project.posts()) == len(read_jsonl(data_file(folder, "posts")))


def project_posts() -> list[tuple[Path, Path]]:
    return [(f, data_file(f, "posts")) for f in PROJECT_FOLDERS if data_file(f, "posts")]


@pytest.mark.parametrize("folder,path", project_posts(), ids=lambda p: p.name)
def test_posts(folder, path):
    posts = read_jsonl(path)
    assert len(posts) >= 40
    ids = [post["id"] for post in posts]
    assert len(set(ids)) == len(ids)
    for post in posts:
        assert set(post) == {"id", "title", "text"}, post["id"]
        assert post["title"].strip() and post["text"] == post["text"].strip()
        assert "\r" not in post["text"] and "\t" not in post["text"]
        assert 80 <= len(post["text"].split()) <= 500, post["id"]
    assert len({post["text"] for post in posts}) == len(posts)


def test_the_demo_has_posts_to_annotate_beyond_the_first_models_gold():
    """Annotators meet posts the first model was neither trained nor gated on: enough of
    them for several rounds (the gold posts reach Label Studio already completed)."""
    folder = PROJECTS / "linkedin-skills"
    gold = {row["id"] for row in read_jsonl(folder / "gold.jsonl")}
    posts = read_jsonl(folder / "posts.jsonl")
    unlabelled = [post for post in posts if post["id"] not in gold]
    assert gold <= {post["id"] for post in posts}
    assert len(unlabelled) >= 60
    # LinkedIn posts carry emoji and compounds: the offsets and word rules must meet them
    texts = " ".join(post["text"] for post in unlabelled)
    for needle in ("🚀", "💼", "📍", "T-SQL", "CI/CD", "Node.js", "C++", "C#", "PL/SQL"):
        assert needle in texts, needle


def project_gold() -> list[tuple[Path, Path]]:
    return [(f, data_file(f, "gold")) for f in PROJECT_FOLDERS if data_file(f, "gold")]


@pytest.mark.parametrize("folder,path", project_gold(), ids=lambda p: p.name)
def test_gold(folder, path):
    posts = {post["id"]: post for post in read_jsonl(data_file(folder, "posts"))}
    labels = {label["value"] for label in read_toml(folder)["labels"]}
    gold = read_jsonl(path)
    assert len(gold) >= 20
    assert len({doc["id"] for doc in gold}) == len(gold)
    used = set()
    for doc in gold:
        text = doc["text"]
        assert text == posts[doc["id"]]["text"], doc["id"]
        offsets = words(text)
        starts, ends = {w[0] for w in offsets}, {w[1] for w in offsets}
        spans = sorted((s["start"], s["end"], s["label"]) for s in doc["spans"])
        assert spans, doc["id"]
        for start, end, label in spans:
            where = f"{doc['id']} {start}:{end} {text[start:end]!r}"
            assert 0 <= start < end <= len(text), where
            assert text[start:end] == text[start:end].strip(), where
            assert start in starts and end in ends, where
            assert label in labels, where
            used.add(label)
        for (_, end, _), (start, _, _) in zip(spans, spans[1:], strict=False):
            assert end <= start, f"{doc['id']}: overlapping spans at {start}"
    assert used == labels, "every label needs gold examples"


def test_gold_is_what_build_gold_makes():
    """gold.jsonl is generated: editing it by hand would be undone by the next build."""
    folder = PROJECTS / "linkedin-skills"
    spec = importlib.util.spec_from_file_location("build_gold", folder / "build_gold.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.build(folder / "posts.jsonl", folder / "gold_phrases.toml")
    assert rows == read_jsonl(folder / "gold.jsonl")


def test_build_gold_marks_every_occurrence_on_word_boundaries():
    spec = importlib.util.spec_from_file_location(
        "build_gold", PROJECTS / "linkedin-skills" / "build_gold.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    post = {"id": "p", "text": "Python and SQL. Pythonic code; python scripts; MySQL and SQL."}
    lexicon = {"Technology": ["Python", "SQL"]}
    spans, unmatched = module.annotate(post, lexicon, {"Soft": ["[code]; python"]})
    found = [(post["text"][s.start : s.end], s.label) for s in spans]
    assert found == [
        ("Python", "Technology"),
        ("SQL", "Technology"),
        ("code", "Soft"),
        ("SQL", "Technology"),
    ]
    assert unmatched == []
    _, unmatched = module.annotate(post, lexicon, {"Soft": ["mentoring"]})
    assert unmatched == ["Soft: mentoring"]


def test_skillspan_import_points_at_shared_data(skillspan_dir):
    folder = PROJECTS / "skillspan"
    path = data_file(folder, "import")
    assert path.resolve() == (skillspan_dir / "train.json").resolve()
    assert not path.resolve().is_relative_to(PROJECTS.parent), "data must stay outside the repo"
