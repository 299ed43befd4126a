"""Linker training rounds: the adapter over frozen label embeddings, the gate, versions,
rollback and the `link-train` CLI, on toy vectors, a tiny taxonomy CSV and the tiny
random encoder (nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main
from training import linker_round
from training.linker import LabelIndex, Linker, LinkerSettings, SentenceEncoder, apply_adapter
from training.linker_adapter import AdapterConfig, AdapterResult, train_adapter
from training.linker_eval import GoldSet, LinkPair
from training.linker_round import train_linker_round
from training.registry import LinkerRegistry
from training.taxonomy import load_csv

TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
k8s,kubernetes,k8s|container orchestration,S,runs containers
py,python,python programming,K,
sql,sql,structured query language|databases,K,
talk,communication,communication skills,T,
"""
PLAIN = dict(steps=2, learning_rate=1e-5, preferred_weight=0.0)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def toy_world(with_alt_labels: bool):
    """60 entries whose spans live in a rotated space: the plain cosine ranking gets them
    wrong, a linear map on the span side can put them right. Entries 0-29 carry one span-like
    alternative label each (when `with_alt_labels`); entries 30-59 are scored."""
    rng = np.random.default_rng(0)
    dim, n = 16, 60
    preferred = unit(rng.normal(size=(n, dim)))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))

    def spans(entries: np.ndarray) -> np.ndarray:
        return unit(preferred[entries] @ rotation + 0.05 * rng.normal(size=(len(entries), dim)))

    vectors, offsets, texts = [], [], []
    for e in range(n):
        offsets.append(len(vectors))
        vectors.append(preferred[e])
        texts.append(f"p{e}")
        if with_alt_labels and e < n // 2:
            vectors.append(spans(np.array([e]))[0])
            texts.append(f"a{e}")
    index = LabelIndex(np.array(vectors, dtype=np.float32), np.array(offsets), texts)
    scored = np.arange(n // 2, n)
    return index, spans, scored


def accuracy(index: LabelIndex, queries, gold, adapter, weight: float) -> float:
    scores, _ = index.entry_scores(apply_adapter(queries, adapter), weight)
    return float(np.mean(scores.argmax(1) == gold))


def test_adapter_on_alternative_labels_fixes_a_ranking_the_plain_one_gets_wrong():
    index, spans, scored = toy_world(with_alt_labels=True)
    queries = spans(scored)
    config = AdapterConfig(steps=50, batch_size=16, learning_rate=0.1, preferred_weight=0.5)
    result = train_adapter(index, config)
    assert accuracy(index, queries, scored, None, 0.5) <= 0.1
    assert accuracy(index, queries, scored, result.adapter, 0.5) >= 0.7
    assert result.steps == 50 and result.last_loss < result.first_loss
    assert result.queries == 30 and result.extra_pairs == 0


def test_extra_span_pairs_alone_train_the_adapter():
    index, spans, scored = toy_world(with_alt_labels=False)
    taught = np.arange(0, 30)
    config = AdapterConfig(steps=50, batch_size=16, learning_rate=0.1, preferred_weight=0.0)
    result = train_adapter(index, config, extra=(spans(taught), list(taught)))
    queries = spans(scored)
    assert accuracy(index, queries, scored, None, 0.0) <= 0.1
    assert accuracy(index, queries, scored, result.adapter, 0.0) >= 0.7
    assert result.extra_pairs == 30


def test_a_zero_adapter_is_the_plain_ranking():
    vectors = unit(np.random.default_rng(1).normal(size=(5, 8)))
    assert np.allclose(apply_adapter(vectors, np.zeros((8, 8), dtype=np.float32)), vectors)
    assert apply_adapter(vectors, None) is vectors


@pytest.fixture
def taxonomy_file(tmp_path: Path) -> Path:
    path = tmp_path / "skills.csv"
    path.write_text(TAXONOMY_CSV, encoding="utf-8")
    return path


def validation() -> GoldSet:
    pairs = [
        LinkPair("We run k8s.", "k8s", {"k8s"}),
        LinkPair("", "python programming", {"py"}),
        LinkPair("", "structured query language", {"sql"}),
        LinkPair("", "communication skills", {"talk"}),
    ]
    return GoldSet("toy", pairs, [LinkPair("", "zzz qqq", set(), True)])


def test_rounds_are_gated_versioned_and_rolled_back(
    taxonomy_file, tiny_encoder, tmp_path, monkeypatch
):
    taxonomy = load_csv(taxonomy_file)
    registry = LinkerRegistry(tmp_path / "linkers")
    cache = tmp_path / "cache"
    common = dict(encoder_source=str(tiny_encoder))
    first = train_linker_round(
        taxonomy, registry, [validation()], cache, [], AdapterConfig(**PLAIN), **common
    )
    # Spans written like labels: the plain ranking is perfect, the new version as good.
    assert first.baseline_version == "plain" and first.baseline["toy"]["accuracy@1"] == 1.0
    assert first.promoted and first.version.version == "v0001"
    assert registry.serving().version == "v0001"
    folder = registry.get("v0001").path
    settings = LinkerSettings.read(folder)
    assert settings.adapter == "adapter.npy" and settings.encoder == str(tiny_encoder)
    assert settings.details["config"]["steps"] == 2
    assert settings.details["validation"]["toy"]["accuracy@1"] == 1.0
    assert 0.2 <= settings.threshold <= 1.0
    default = LinkerSettings()  # a trained version ranks with the default second stage
    assert (settings.context_weight, settings.sentence_weight, settings.lexical_weight) == (
        default.context_weight,
        default.sentence_weight,
        default.lexical_weight,
    )
    assert settings.preferred_weight == PLAIN["preferred_weight"]  # the adapter's own
    loaded = Linker.load(taxonomy, folder, cache_dir=cache)
    assert loaded.adapter is not None and loaded.link(["k8s"])[0].candidates[0].id == "k8s"

    # A round whose adapter scrambles the ranking is refused; v0001 keeps serving.
    scrambled = (40 * np.random.default_rng(3).normal(size=(32, 32))).astype(np.float32)

    def bad_training(index, config, extra, progress):
        return AdapterResult(scrambled, 1, 0.0, 1.0, 1.0, 6, 0)

    monkeypatch.setattr(linker_round, "train_adapter", bad_training)
    # these spans are written like labels, which the exact-label rule links whatever the
    # adapter does: off here, so that the ranking the adapter scrambles is what is scored
    monkeypatch.setattr(Linker, "exact_entries", lambda self, text: set())
    second = train_linker_round(
        taxonomy, registry, [validation()], cache, [], AdapterConfig(**PLAIN), **common
    )
    assert second.baseline_version == "v0001"
    assert second.figures["toy"]["accuracy@1"] < second.baseline["toy"]["accuracy@1"]
    assert not second.promoted and second.version.status == "refused"
    assert "worse than v0001" in second.version.reason
    assert registry.serving().version == "v0001"
    assert registry.get("v0002").gate["serving_version"] == "v0001"

    registry.rollback("v0002", "by hand")
    assert registry.serving().version == "v0002"
    assert registry.get("v0001").status == "retired"
    actions = [e["action"] for e in registry.events()]
    assert actions == ["add", "promote", "add", "refuse", "rollback"]


def test_extra_pairs_on_validation_spans_never_train(taxonomy_file, tiny_encoder, tmp_path):
    taxonomy = load_csv(taxonomy_file)
    outcome = train_linker_round(
        taxonomy,
        LinkerRegistry(tmp_path / "linkers"),
        [validation()],
        tmp_path / "cache",
        [("K8S", "k8s"), ("postgres", "sql")],
        AdapterConfig(**PLAIN),
        encoder_source=str(tiny_encoder),
    )
    assert (outcome.extra_pairs_used, outcome.extra_pairs_dropped) == (1, 1)
    with pytest.raises(ValueError, match="no entry 'nope'"):
        train_linker_round(
            taxonomy,
            LinkerRegistry(tmp_path / "other"),
            [validation()],
            tmp_path / "cache",
            [("x", "nope")],
            AdapterConfig(**PLAIN),
            encoder_source=str(tiny_encoder),
        )


@pytest.fixture
def project(taxonomy_file, tiny_encoder, tmp_path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "skills.csv").write_text(taxonomy_file.read_text())
    LinkerSettings(encoder=str(tiny_encoder)).save(folder / "linker")
    (folder / "project.toml").write_text(
        '[project]\nname = "p"\n[[labels]]\nvalue = "Skill"\n'
        '[linking]\ntaxonomy = "skills.csv"\nlinker = "linker"\n'
    )
    rows = [{"span": p.span, "taxonomy_ids": sorted(p.gold)} for p in validation().pairs]
    rows.append({"span": "zzz qqq", "taxonomy_ids": []})
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "pairs.jsonl").write_text('{"span": "postgres", "taxonomy_id": "sql"}\n')
    return folder


def test_link_train_cli_trains_lists_serves_and_rolls_back(project, tmp_path, capsys):
    state = str(tmp_path / "state")
    common = ["--project", str(project), "--state-dir", state]
    train = ["link-train", *common, "--validation", str(project / "validation.jsonl")]
    train += ["--pairs", str(project / "pairs.jsonl"), "--steps", "2", "--no-progress"]
    train += ["--preferred-weight", "0"]
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "validation: accuracy@1 1.000" in out and "v0001 serving" in out
    assert "1 extra pairs trained" in out

    from backend.linkers import project_linker
    from labeling.project import load_project
    from labeling.state import ProjectState

    loaded = load_project(project)
    linker, _ = project_linker(loaded, ProjectState.of(loaded, state), progress=False)
    assert linker.adapter is not None  # the serving version, not the project's plain linker

    assert main(["link-versions", *common]) == 0
    assert "v0001  serving" in capsys.readouterr().out
    assert main(["link-rollback", *common, "v0009"]) == 2
    assert "unknown linker version 'v0009'" in capsys.readouterr().err
    assert main(["link-rollback", *common, "v0001"]) == 2
    assert "already serving" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "content", "message"),
    [
        ([], None, "name validation pairs with --validation"),
        (["--validation", "missing.jsonl"], None, "validation file not found"),
        (["--validation", "V", "--pairs", "P"], '{"span": "x"}\n', "pairs.jsonl:1: needs"),
        (["--validation", "V", "--pairs", "P"], '{"span": "x", "taxonomy_id": "no"}\n', "no entry"),
        (["--validation", "V", "--steps", "0"], None, "--steps must be at least 1"),
        (["--validation", "V", "--cross-weight", "0"], None, "--cross-weight must be above 0"),
        (["--validation", "V", "--cross-minutes", "-1"], None, "--cross-minutes must be"),
    ],
)
def test_link_train_cli_errors_are_one_clean_line(
    project, tmp_path, capsys, extra, content, message
):
    if content is not None:
        (project / "pairs.jsonl").write_text(content)
    paths = {"V": str(project / "validation.jsonl"), "P": str(project / "pairs.jsonl")}
    argv = ["link-train", "--project", str(project), "--state-dir", str(tmp_path / "s")]
    argv += [paths.get(a, a) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_links_annotators_confirmed_or_corrected_join_the_next_linker_round(
    project, tmp_path, capsys
):
    from labeling.project import load_project
    from labeling.state import ProjectState
    from labeling.store import AnnotationRecord
    from training.text import Span

    state = tmp_path / "state"
    text = "We need postgres and talking and cobol."
    spans = [
        Span(8, 16, "Skill", "postgres", None, "sql", "SQL", 0.4, "corrected"),
        Span(21, 28, "Skill", "talking", None, "talk", "communication", 0.9, "confirmed"),
        Span(33, 38, "Skill", "cobol", None, None, None, None, "no_match"),
    ]
    with ProjectState.of(load_project(project), state).store() as store:
        store.annotations.upsert(AnnotationRecord(1, 1, "1", text, spans))
    common = ["--project", str(project), "--state-dir", str(state), "--steps", "2"]
    train = ["link-train", *common, "--validation", str(project / "validation.jsonl")]
    assert main([*train, "--no-progress", "--preferred-weight", "0"]) == 0
    captured = capsys.readouterr()
    assert "2 confirmed or corrected links from the store" in captured.err
    assert "2 extra pairs trained" in captured.out


def test_links_confirmed_in_a_studio_project_reach_link_train(project, tmp_path, capsys):
    """On a backend serving several Label Studio projects, annotators' links are stored in
    `<state>/studio-<id>/`: `link-train --studio-project ID` trains on them there and keeps
    the linker versions there, where the project's linker is opened from."""
    from backend.linkers import project_linker
    from labeling.project import load_project
    from labeling.state import ProjectState
    from labeling.store import AnnotationRecord
    from training.text import Span

    state = tmp_path / "state"
    studio = ProjectState.for_studio(7, state)
    studio.write_connection({"studio_project": 7, "created_ts": 0, "template": str(project)})
    text = "We need postgres and talking and cobol."
    spans = [
        Span(8, 16, "Skill", "postgres", None, "sql", "SQL", 0.4, "corrected"),
        Span(21, 28, "Skill", "talking", None, "talk", "communication", 0.9, "confirmed"),
    ]
    with studio.store() as store:
        store.annotations.upsert(AnnotationRecord(1, 1, "1", text, spans))
    common = ["--studio-project", "7", "--state-dir", str(state)]
    train = ["link-train", *common, "--validation", str(project / "validation.jsonl")]
    assert main([*train, "--steps", "2", "--no-progress", "--preferred-weight", "0"]) == 0
    captured = capsys.readouterr()
    assert "2 confirmed or corrected links from the store" in captured.err
    assert "2 extra pairs trained" in captured.out and "v0001 serving" in captured.out
    assert studio.linker_registry().serving() is not None
    assert not (state / "p").exists()  # nothing under the template's own name
    linker, _ = project_linker(load_project(project), studio, progress=False)
    assert linker.adapter is not None  # the studio project's serving version
    assert main(["link-versions", *common]) == 0
    assert "v0001" in capsys.readouterr().out


def test_link_train_with_a_cross_stage_serves_the_cross_encoder(project, tmp_path, capsys):
    """`--cross-minutes`: the round trains a cross-encoder instead of an adapter (the
    taxonomy's own groups and one per extra pair), the version keeps it in cross/ with the
    ranking chosen for it, and the project's serving linker re-ranks with it, its scores
    still at most 1 for the no-match threshold."""
    from backend.linkers import project_linker
    from labeling.project import load_project
    from labeling.state import ProjectState
    from training.link_cross import CrossEncoder
    from training.linker_settings import CROSS_RANKING, DEFAULT_CROSS_WEIGHT

    state = str(tmp_path / "state")
    common = ["--project", str(project), "--state-dir", state]
    train = ["link-train", *common, "--validation", str(project / "validation.jsonl")]
    train += ["--pairs", str(project / "pairs.jsonl"), "--steps", "2", "--no-progress"]
    train += ["--preferred-weight", "0", "--cross-minutes", "1", "--cross-steps", "3"]
    assert main(train) == 0
    out = capsys.readouterr().out
    assert "v0001 serving" in out or "v0001 refused" in out  # the gate judges a 3-step model
    if "v0001 refused" in out:  # served by hand, as a data lead may
        assert main(["link-rollback", *common, "v0001"]) == 0
    loaded = load_project(project)
    folder = ProjectState.of(loaded, state).linker_registry().get("v0001").path
    settings = LinkerSettings.read(folder)
    assert (settings.cross, settings.cross_weight) == ("cross", DEFAULT_CROSS_WEIGHT)
    assert (settings.context_weight, settings.lexical_weight) == (
        CROSS_RANKING["context_weight"],
        CROSS_RANKING["lexical_weight"],
    )
    assert not settings.exact_rule and not settings.adapter
    assert (folder / "cross" / "cross_head.pt").is_file()
    low, high = json.loads((folder / "cross" / "cross_scale.json").read_text())["logit_range"]
    assert low < high  # its logits' range on its training pairs, mapped to 0-1 when served
    assert not (folder / "adapter.npy").exists()
    details = settings.details
    assert details["kind"] == "cross-encoder" and details["steps"] == 3
    assert details["groups"] >= 1  # the extra pair's group at least
    linker, _ = project_linker(loaded, ProjectState.of(loaded, state), progress=False)
    assert isinstance(linker.cross, CrossEncoder) and linker.adapter is None
    [link] = linker.link(["container orchestration tools"], ["We run containers."])
    assert link.candidates and all(c.score <= 1.0 for c in link.candidates)

    from backend.corpus.actors import LinkerParts  # what Ray actors rebuild: the stage too

    rebuilt = LinkerParts.of(linker, 5).build()
    assert isinstance(rebuilt.cross, CrossEncoder) and rebuilt.cross.folder == folder / "cross"
    [again] = rebuilt.link(["container orchestration tools"], ["We run containers."])
    assert [c.to_dict() for c in again.candidates] == [c.to_dict() for c in link.candidates]


class FavouringCross:
    """A cross-encoder stand-in: a high logit for one label, a low one for the rest."""

    scale = (-20.0, 20.0)

    def __init__(self, label: str):
        self.label = label

    def score(self, queries, labels):
        return np.array([20.0 if label == self.label else -20.0 for label in labels])


def test_the_cross_stage_re_ranks_the_top_entries_by_its_weight(taxonomy_file, tiny_encoder):
    taxonomy = load_csv(taxonomy_file)
    plain = Linker(taxonomy, SentenceEncoder(tiny_encoder), LinkerSettings(threshold=0.0))
    before = [c.id for c in plain.link(["postgres"])[0].candidates]
    favoured = next(e for e in before[1:])  # not the plain linker's first
    label = taxonomy.get(favoured).preferred_label
    settings = LinkerSettings(threshold=0.0, cross="cross", cross_weight=5.0)
    crossed = Linker.from_index(taxonomy, plain.encoder, settings, plain.index)
    crossed.cross = FavouringCross(label)  # type: ignore[assignment]
    after = crossed.link(["postgres"])[0].candidates
    assert after[0].id == favoured and all(c.score <= 1.0 for c in after)
    settings.cross_weight = 0.0  # the stage off: the plain order
    assert [c.id for c in crossed.link(["postgres"])[0].candidates] == before

    # "databases" is written like a label of sql: the exact-label rule keeps sql first,
    # unless the settings turn it off (as a cross-encoder version's do)
    settings.cross_weight = 5.0
    crossed.cross = FavouringCross("communication")  # type: ignore[assignment]
    [exact] = crossed.link(["databases"])
    assert exact.candidates[0].id == "sql" and exact.candidates[0].score >= 1.0
    settings.exact_rule = False
    assert crossed.link(["databases"])[0].candidates[0].id == "talk"
