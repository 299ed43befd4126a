"""The simulator end to end in fast mode on tiny synthetic data, and `skillloop select` on a
tiny project folder."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sample_project import reference_project_toml

from backend.cli import main
from labeling.active.curves import summarize, tokens_to_reach
from labeling.active.simulate import SimConfig, load_units, sentence_units, simulate
from labeling.state import ProjectState
from training.text import Document, Span, words

SKILLS = ["python", "sql", "aws", "spark", "docker", "kubernetes", "excel", "java", "scala"]
FILLER = ["we", "need", "the", "team", "work", "with", "data", "engineer", "senior", "a"]


def synthetic_posts(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    posts = []
    for p in range(n):
        lines, spans, offset = [], [], 0
        for _ in range(rng.randint(2, 4)):
            parts = []
            for _ in range(rng.randint(3, 9)):
                if rng.random() < 0.25:
                    skill = rng.choice(SKILLS)
                    start = offset + sum(len(x) + 1 for x in parts)
                    spans.append({"start": start, "end": start + len(skill), "label": "Skill"})
                    parts.append(skill)
                else:
                    parts.append(rng.choice(FILLER))
            line = " ".join(parts)
            lines.append(line)
            offset += len(line) + 1
        posts.append({"id": f"p{p}", "text": "\n".join(lines), "spans": spans})
    return posts


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_sentence_units_keep_spans_on_their_line():
    doc = Document("use python\nand sql here", [Span(4, 10, "Skill"), Span(15, 18, "Skill")], "d")
    units = sentence_units([doc])
    assert [u.text for u in units] == ["use python", "and sql here"]
    assert [(s.start, s.end) for s in units[1].spans] == [(4, 7)]
    assert units[1].text[4:7] == "sql"


def test_simulate_fast_mode_end_to_end(tmp_path, tiny_encoder):
    write_jsonl(tmp_path / "train.jsonl", synthetic_posts(30, 1))
    write_jsonl(tmp_path / "dev.jsonl", synthetic_posts(10, 2))
    out = tmp_path / "sim"
    code = main(
        [
            "simulate",
            "--data",
            str(tmp_path / "train.jsonl"),
            "--eval",
            str(tmp_path / "dev.jsonl"),
            "--strategy",
            "mnlp",
            "--strategy",
            "span",
            "--strategy",
            "bald",
            "--seeds",
            "2",
            "--init",
            "8",
            "--step",
            "10",
            "--rounds",
            "3",
            "--base",
            str(tiny_encoder),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "curves.json").read_text())
    assert (out / "curves.png").stat().st_size > 10_000
    assert set(result["curves"]) == {"random", "mnlp", "span", "bald"}
    for runs in result["curves"].values():
        assert len(runs) == 2
        for run in runs:
            assert run["items"] == [8, 18, 28, 38]
            assert run["tokens"] == sorted(run["tokens"])
    # every strategy starts from the same seeded initial set, so from the same first model
    for seed in range(2):
        firsts = {name: runs[seed]["f1"][0] for name, runs in result["curves"].items()}
        assert len(set(firsts.values())) == 1, firsts
    # the tiny model memorises the nine skills: it learns something from the labels
    assert max(result["full_f1"]) > 0.3
    summary = result["summary"]["strategies"]
    for name, stats in summary.items():
        # AULC by items: the trapezoid area under the mean curve over x in [8, 38], per unit x
        mean = [sum(r["f1"][k] for r in result["curves"][name]) / 2 for k in range(4)]
        area = sum((a + b) / 2 * 10 for a, b in zip(mean, mean[1:], strict=False)) / 30
        assert stats["aulc_items"] == pytest.approx(area)
        gain = 100 * (stats["aulc_items"] - summary["random"]["aulc_items"])
        assert stats.get("gain_items_points", 0.0) == pytest.approx(gain)
    assert list((tmp_path / "cache").glob("words-*.npz"))  # encoded once, cached


def test_a_token_step_buys_the_same_words_per_round_for_every_strategy(tmp_path, tiny_encoder):
    write_jsonl(tmp_path / "train.jsonl", synthetic_posts(30, 1))
    write_jsonl(tmp_path / "dev.jsonl", synthetic_posts(6, 2))
    config = SimConfig(
        strategies=["mnlp", "mnlp+balanced"],
        seeds=1,
        init=5,
        step_tokens=60,
        rounds=2,
        base=str(tiny_encoder),
        full_reference=False,
        cache_dir=str(tmp_path / "cache"),
    )
    result = simulate(tmp_path / "train.jsonl", tmp_path / "dev.jsonl", config, lambda m: None)
    longest = max(len(words(d.text)) for d in load_units(tmp_path / "train.jsonl", "sentence"))
    for runs in result["curves"].values():
        tokens = runs[0]["tokens"]
        bought = [b - a for a, b in zip(tokens, tokens[1:], strict=False)]
        # each round fills the budget up to less than one unit's length, never beyond it
        assert all(60 - longest < n <= 60 for n in bought), bought
    with pytest.raises(ValueError, match="step_tokens"):
        SimConfig(step_tokens=0)


def test_summary_numbers_on_a_hand_made_result():
    def run(f1, tokens):
        return {
            "seed": 0,
            "items": [10, 20, 30],
            "tokens": tokens,
            "f1": f1,
            "batch_mean_tokens": [5.0, 5.0],
        }

    result = {
        "full_f1": [0.8],
        "data": {"pool_items": 100, "pool_tokens": 1000},
        "curves": {
            "random": [run([0.2, 0.4, 0.6], [100, 200, 300])],
            "good": [run([0.2, 0.8, 0.8], [100, 200, 300])],
        },
    }
    s = summarize(result)
    good, rnd = s["strategies"]["good"], s["strategies"]["random"]
    assert rnd["aulc_items"] == pytest.approx(0.4)
    assert good["aulc_items"] == pytest.approx((0.5 + 0.8) / 2)
    assert good["gain_items_points"] == pytest.approx(25.0)
    assert good["items_to_95"] == pytest.approx(10 + 10 * (0.76 - 0.2) / 0.6)
    assert rnd["items_to_95"] is None and rnd["share_items_to_95"] is None
    assert good["share_tokens_to_95"] == pytest.approx(good["tokens_to_95"] / 1000)
    reach = tokens_to_reach(result, [0.5, 0.9])
    assert reach["good"][0] == pytest.approx(100 + 100 * 0.3 / 0.6)
    assert reach["random"] == [pytest.approx(250.0), None]


def test_simulate_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown strategy"):
        SimConfig(strategies=["nope"])
    with pytest.raises(ValueError, match="unit"):
        SimConfig(unit="paragraph")
    with pytest.raises(ValueError, match="BALD"):
        SimConfig(strategies=["bald"], mode="full")
    write_jsonl(tmp_path / "t.jsonl", synthetic_posts(3, 0))
    with pytest.raises(ValueError, match="smaller than the pool"):
        simulate(tmp_path / "t.jsonl", tmp_path / "t.jsonl", SimConfig(init=500), lambda m: None)
    assert (
        main(
            [
                "simulate",
                "--data",
                str(tmp_path / "missing.json"),
                "--eval",
                "x",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


PROJECT_TOML = reference_project_toml("tiny", gold="gold.jsonl")


def test_select_prints_the_next_batch(tmp_path, tiny_reference_model, capsys):
    folder = tmp_path / "projects" / "tiny"
    folder.mkdir(parents=True)
    (folder / "project.toml").write_text(PROJECT_TOML)
    posts = [
        {"id": p["id"], "title": f"post {p['id']}", "text": p["text"]}
        for p in synthetic_posts(6, 5)
    ]
    posts.append({"id": "blank", "title": "", "text": "   "})
    write_jsonl(folder / "posts.jsonl", posts)
    write_jsonl(folder / "gold.jsonl", [{"id": "p0", "text": posts[0]["text"], "spans": []}])
    state = tmp_path / "state"
    with ProjectState(state / "tiny").store():  # as `serve` leaves it: nothing labelled yet
        pass
    args = [
        "select",
        "--project",
        str(folder),
        "--model",
        str(tiny_reference_model),
        "--state-dir",
        str(state),
    ]
    assert main([*args, "--json", "-n", "10"]) == 0
    batch = json.loads(capsys.readouterr().out)["batch"]
    ids = [row["id"] for row in batch]
    assert sorted(ids) == ["p1", "p2", "p3", "p4", "p5"]  # gold p0 and the blank post left out
    scores = [row["score"] for row in batch]
    assert scores == sorted(scores, reverse=True)
    task_scores = [row["task_score"] for row in batch]
    assert task_scores == sorted(task_scores)  # most useful first = lowest task score
    for post_id, row in zip(ids, batch, strict=True):
        assert len(words(posts[int(post_id[1:])]["text"])) == row["words"]

    assert main([*args, "--strategy", "span", "--budget-tokens", "40"]) == 0
    text = capsys.readouterr().out
    assert "next" in text and "task score" in text
    # BALD samples the served model's own head; +balanced counts the labelled spans
    for name in ("bald", "mnlp+balanced", "bald+diverse"):
        assert main([*args, "--json", "--strategy", name, "-n", "3"]) == 0
        picked = json.loads(capsys.readouterr().out)
        assert picked["strategy"] == name and len(picked["batch"]) == 3
        assert all(np.isfinite(row["score"]) and row["score"] >= 0 for row in picked["batch"])
    assert main([*args, "--strategy", "nope"]) == 2
    assert main([*args, "--strategy", "mnlp+sorted"]) == 2
    assert main(["select", "--project", str(folder), "--state-dir", str(state)]) == 2
    assert "no serving model" in capsys.readouterr().err
    assert np.isfinite(scores).all()


def test_select_counts_a_post_as_labelled_when_only_its_spacing_differs():
    from backend.cli.select import _unlabelled_posts

    labelled = [Document("Python  and SQL\n", id="42")]  # a Label Studio task id
    posts = [Document("Python and SQL", id="post-1"), Document("Java", id="post-2")]
    assert [p.id for p in _unlabelled_posts(posts, labelled)] == ["post-2"]
