"""SkillSpan's two tag columns round-trip (issue 23): a CoNLL file as SkillSpan ships it
(`token<TAB>Skill tag<TAB>Knowledge tag`, a blank line between sentences, no -DOCSTART-,
tokens such as `<ORGANIZATION>` and `e.g.` that `training.text.words` would cut) is read,
written again, and compared column by column; and a layered project whose `[data] gold`
is such a file exports it with `skillloop export --format conll`.

The sample is synthetic (the real files stay in ../shared/data; tests/test_layers.py runs
the same round trip on SkillSpan's dev file when it is there).
"""

from __future__ import annotations

from backend.cli import main
from training.datasets import DOCSTART, all_spans, read_conll, write_conll

LAYERS = [["Skill"], ["Knowledge"]]
# a Knowledge span inside a Skill span, Knowledge spans alone, tokens words() would cut
SAMPLE = """\
<ORGANIZATION>\tO\tO
is\tO\tO
hiring\tO\tO
.\tO\tO

You\tO\tO
will\tO\tO
build\tB-Skill\tO
data\tI-Skill\tO
pipelines\tI-Skill\tO
in\tI-Skill\tO
Python\tI-Skill\tB-Knowledge
(\tO\tO
e.g.\tO\tO
Spark\tO\tB-Knowledge
)\tO\tO
.\tO\tO

Experience\tO\tO
with\tO\tO
CI/CD\tO\tB-Knowledge
,\tO\tO
C++\tO\tB-Knowledge
and\tO\tO
Node.js\tO\tB-Knowledge
;\tO\tO
work\tB-Skill\tO
in\tI-Skill\tO
a\tI-Skill\tO
team\tI-Skill\tO
at\tO\tO
<LOCATION>\tO\tO
"""
# a span ending on a token with a trailing dot: the export's curation trims the dot (a
# span never ends on a lone mark, `labeling.curation.export.snap`), so its row splits
TRIMMED = "Knowledge\tO\tO\nof\tO\tO\nJava\tO\tB-Knowledge\netc.\tO\tI-Knowledge\n"


def sentences(text: str) -> list[list[list[str]]]:
    """The file's sentences, each a list of rows (token, Skill tag, Knowledge tag);
    `-DOCSTART-` lines (one document per sentence in the export) left out."""
    rows = [line for line in text.splitlines() if not line.startswith(DOCSTART)]
    out: list[list[list[str]]] = [[]]
    for line in rows:
        if line.strip():
            out[-1].append(line.split("\t"))
        elif out[-1]:
            out.append([])
    return [s for s in out if s]


def columns(parts: list[list[list[str]]]) -> list[list[tuple[str, ...]]]:
    """Per column (tokens, Skill, Knowledge), its values sentence by sentence."""
    return [[tuple(row[c] for row in s) for s in parts] for c in range(3)]


def test_a_skillspan_conll_file_round_trips_column_by_column(tmp_path):
    source = tmp_path / "skillspan_sample.conll"  # "skillspan" in the name: Skill, Knowledge
    source.write_text(SAMPLE + "\n" + TRIMMED)
    docs = read_conll(source)
    assert len(docs) == 4 and any(d.meta.get("dropped") for d in docs)  # Python is nested
    out = tmp_path / "again.conll"
    write_conll(docs, out, LAYERS)
    tokens, skill, knowledge = columns(sentences(out.read_text()))
    want_tokens, want_skill, want_knowledge = columns(sentences(source.read_text()))
    assert tokens == want_tokens  # <ORGANIZATION>, e.g., etc. stay one token each
    assert skill == want_skill
    assert knowledge == want_knowledge
    back = read_conll(out)
    assert [[s.key() for s in all_spans(d)] for d in back] == [
        [s.key() for s in all_spans(d)] for d in docs
    ]


def test_a_layered_project_exports_its_skillspan_gold_column_by_column(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "gold.conll").write_text(SAMPLE + "\n" + TRIMMED)
    (project / "project.toml").write_text(
        '[project]\nname = "spans"\n\n[[labels]]\nvalue = "Skill"\n\n'
        '[[labels]]\nvalue = "Knowledge"\n\n'
        '[model]\nlayers = [["Skill"], ["Knowledge"]]\n\n[data]\ngold = "gold.conll"\n'
    )
    out = tmp_path / "export"
    args = ["export", "--project", str(project), "--gold-only", "--format", "conll"]
    assert main([*args, "--split", "1,0,0", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("4 posts (train 4, dev 0, test 0)")
    written = sentences((out / "train.conll").read_text())
    expected = sentences(SAMPLE) + [
        [["Knowledge", "O", "O"], ["of", "O", "O"], ["Java", "O", "B-Knowledge"]]
        + [["etc", "O", "I-Knowledge"], [".", "O", "O"]]
    ]
    # the split may order the posts otherwise: compare them sorted, column by column
    assert [sorted(c) for c in columns(written)] == [sorted(c) for c in columns(expected)]
    card = (out / "README.md").read_text()
    assert "within each label layer: Skill; Knowledge" in card
