"""Skill profiles (`skillloop export --format profiles`) and the report's linked skills:
stored links first, the project's linker for the rest."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_report import three_rounds

from backend.cli import main
from labeling.curation.export_profiles import build_profiles, card_section, summarize
from labeling.state import ProjectState
from training.linker import LinkerSettings
from training.text import Span

TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
py,python,python programming,K,
sql,sql,structured query language,K,
talk,communication,communication skills,T,
"""
GOLD = [
    {"id": "a", "text": "python and sql and python", "spans": [[0, 6], [11, 14], [19, 25]]},
    {"id": "b", "text": "communication and zzz", "spans": [[0, 13], [18, 21]]},
]


def post(pid: str, text: str, spans) -> SimpleNamespace:
    return SimpleNamespace(id=pid, text=text, spans=spans)


def test_profiles_count_stored_links_first_then_the_linker():
    text = "python and sql and python"
    stored = SimpleNamespace(
        start=0, end=6, label="Knowledge", text="python", taxonomy_id="py", taxonomy_label="python"
    )
    spans = [stored, Span(11, 14, "Knowledge"), Span(19, 25, "Skill")]
    asked: list[list[str]] = []

    def link(docs):
        asked.append([d.text[s.start : s.end] for d in docs for s in d.spans])
        return [[("sql", "sql"), ("py", "python")]]

    (profile,) = build_profiles({"train": [post("a", text, spans)]}, link)
    assert asked == [["sql", "python"]]  # the stored link was not asked for again
    assert profile.to_dict() == {
        "id": "a",
        "split": "train",
        "spans": 3,
        "linked": 3,
        "no_match": 0,
        "skills": [
            {
                "taxonomy_id": "py",
                "taxonomy_label": "python",
                "count": 2,
                "labels": {"Knowledge": 1, "Skill": 1},
            },
            {"taxonomy_id": "sql", "taxonomy_label": "sql", "count": 1, "labels": {"Knowledge": 1}},
        ],
    }
    # without a linker, spans with no stored link count as no match
    (alone,) = build_profiles({"train": [post("a", text, spans)]}, None)
    assert (alone.linked, alone.to_dict()["no_match"]) == (1, 2)
    summary = summarize([profile, alone], "esco", "ESCO (c) EU")
    assert summary.top == [("py", "python", 3, 2), ("sql", "sql", 1, 1)]
    assert summary.no_match_share == pytest.approx(2 / 6)
    lines = card_section(summary)
    assert "2 posts, 6 spans: 4 linked to 2 esco entries, 2 with no match (33.3%)." in lines
    assert "Taxonomy: ESCO (c) EU." in lines and "| py | python | 3 | 2 |" in lines


@pytest.fixture
def linked_project(tmp_path: Path, tiny_encoder: Path, monkeypatch) -> Path:
    """A project with a tiny taxonomy, a linker on the tiny encoder (threshold 0.99: only
    a span written like a label links) and two gold posts."""
    monkeypatch.delenv("SKILLLOOP_STATE_DIR", raising=False)
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "skills.csv").write_text(TAXONOMY_CSV)
    LinkerSettings(encoder=str(tiny_encoder), threshold=0.99).save(folder / "linker")
    (folder / "project.toml").write_text(
        '[project]\nname = "p"\n[[labels]]\nvalue = "Skill"\n'
        '[linking]\ntaxonomy = "skills.csv"\nlinker = "linker"\ntop_k = 2\n'
        '[data]\ngold = "gold.jsonl"\n'
    )
    rows = [
        {"id": g["id"], "text": g["text"]}
        | {"spans": [{"start": s, "end": e, "label": "Skill"} for s, e in g["spans"]]}
        for g in GOLD
    ]
    (folder / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_export_profiles_writes_one_row_per_post_and_counts_skills_in_the_card(
    linked_project, tmp_path, capsys
):
    out = tmp_path / "export"
    with ProjectState(tmp_path / "state" / "p").store():  # a served project, nothing annotated
        pass
    argv = ["export", "--project", str(linked_project), "--state-dir", str(tmp_path / "state")]
    code = main([*argv, "--format", "profiles", "--out", str(out), "--include-gold"])
    assert code == 0, capsys.readouterr().err
    rows = {r["id"]: r for r in map(json.loads, (out / "profiles.jsonl").read_text().splitlines())}
    assert set(rows) == {"gold-a", "gold-b"}
    skills_a = [(s["taxonomy_id"], s["count"]) for s in rows["gold-a"]["skills"]]
    assert skills_a == [("py", 2), ("sql", 1)]
    assert [s["taxonomy_id"] for s in rows["gold-b"]["skills"]] == ["talk"]
    assert rows["gold-b"]["no_match"] == 1  # "zzz"
    assert not list(out.glob("train.*"))  # a profiles export writes no span files
    card = (out / "README.md").read_text()
    assert "## Skill profiles" in card and "| py | python | 2 | 1 |" in card
    assert "1 with no match (20.0%)" in card


def test_report_shows_the_most_frequent_linked_skills(linked_project, tmp_path, capsys):
    state = tmp_path / "state"
    three_rounds(state / "p" / "models")
    argv = ["report", "--project", str(linked_project), "--state-dir", str(state)]
    assert main([*argv, "--format", "md"]) == 0
    report = Path(capsys.readouterr().out.strip()).read_text()
    assert "## Most frequent linked skills" in report
    assert "2 posts, 5 spans: 4 linked to 3 skills entries, 1 with no match (20.0%)." in report
    assert report.index("| py | python | 2 | 1 |") < report.index("| sql | sql | 1 | 1 |")
    assert main([*argv, "--format", "html"]) == 0
    html = Path(capsys.readouterr().out.strip()).read_text()
    assert "<h2>Most frequent linked skills</h2>" in html and "<td>python</td>" in html
    assert main([*argv, "--format", "md", "--no-skills"]) == 0
    assert "linked skills" not in Path(capsys.readouterr().out.strip()).read_text()
