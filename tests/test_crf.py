"""The CRF: its likelihood is the brute-force one, decoding finds the best scored path,
and a tagger trained with it saves, loads and serves its transition scores."""

from itertools import product

import numpy as np
import pytest
import torch

from tests.test_decoding import TAGS, random_probs, valid
from tests.test_finetune import FAST, LABELS, corpus
from training import checkpoint
from training.checkpoint import read_metadata
from training.crf import CRF, Transitions, word_emissions
from training.decoding import decode, decode_many, transitions, viterbi
from training.finetune import train
from training.tagger import Tagger
from training.train_config import TrainConfig


def random_scores(seed: int) -> Transitions:
    rng = np.random.default_rng(seed)
    n = len(TAGS)
    return Transitions(tuple(TAGS), rng.normal(size=n), rng.normal(size=(n, n)), rng.normal(size=n))


def path_score(path, emissions, scores: Transitions) -> float:
    total = scores.start[path[0]] + scores.end[path[-1]]
    total += sum(emissions[w, t] for w, t in enumerate(path))
    total += sum(scores.matrix[a, b] for a, b in zip(path, path[1:], strict=False))
    return float(total)


def valid_paths(n_words: int, window: bool = False):
    """Valid IOB2 paths; a training window (`window`) may also begin with an I- tag."""
    for path in product(range(len(TAGS)), repeat=n_words):
        tags = [TAGS[i] for i in path]
        if valid(tags) or (window and valid(["B" + tags[0][1:], *tags[1:]])):
            yield path


@pytest.mark.parametrize("seed", range(5))
def test_nll_is_minus_log_probability_of_the_gold_path_among_valid_window_paths(seed):
    scores = random_scores(seed)
    crf = CRF(TAGS, init=scores)
    emissions = np.random.default_rng(100 + seed).normal(size=(3, 4, len(TAGS)))
    # the second row has 2 words, then padding; the third starts inside a span
    gold = [[1, 2, 0, 3], [3, 4, 0, 0], [2, 2, 0, 0]]
    lengths = [4, 2, 3]
    expected = 0.0
    for row, n in enumerate(lengths):
        paths = list(valid_paths(n, window=True))
        log_z = np.logaddexp.reduce([path_score(p, emissions[row], scores) for p in paths])
        expected += log_z - path_score(gold[row][:n], emissions[row], scores)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, True, True, False]])
    got = crf.nll(torch.tensor(emissions, dtype=torch.float32), torch.tensor(gold), mask)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-4)


def test_an_impossible_gold_move_is_read_as_a_span_start():
    crf = CRF(TAGS, init=random_scores(1))
    emissions = torch.randn(1, 4, len(TAGS))
    mask = torch.ones(1, 4, dtype=torch.bool)
    b_skill, i_skill, i_knowledge = (TAGS.index(t) for t in ("B-Skill", "I-Skill", "I-Knowledge"))
    # O -> I-Skill and I-Skill -> I-Knowledge cannot happen (a word without subwords
    # was skipped); they read as B-Skill and B-Knowledge
    broken = torch.tensor([[0, i_skill, i_skill, i_knowledge]])
    repaired = crf.repair(broken)
    assert repaired.tolist() == [[0, b_skill, i_skill, TAGS.index("B-Knowledge")]]
    loss = crf.nll(emissions, broken, mask)
    assert float(loss.detach()) == pytest.approx(float(crf.nll(emissions, repaired, mask).detach()))
    assert float(loss.detach()) < 100  # no masked score in the gold path


@pytest.mark.parametrize("seed", range(10))
def test_viterbi_with_learned_scores_finds_the_best_valid_path(seed):
    scores = random_scores(seed)
    log_probs = np.log(random_probs(4, seed))
    best = max(valid_paths(4), key=lambda p: path_score(p, log_probs, scores))
    start, allowed = transitions(TAGS)
    triple = (scores.start, scores.matrix, scores.end)
    assert tuple(viterbi(log_probs, start, allowed, triple)) == best


def test_documents_of_different_lengths_decode_as_if_alone():
    scores = random_scores(3)
    triple = (scores.start, scores.matrix, scores.end)
    probs = [random_probs(n, seed=n) for n in (5, 1, 0, 9, 3)]
    alone = [decode(p, TAGS, "viterbi", triple) for p in probs]
    assert decode_many(probs, TAGS, "viterbi", triple) == alone
    assert all(valid(tags) for tags in alone)


def test_word_emissions_gather_first_subwords_in_order():
    logits = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    targets = torch.tensor([[-100, 2, -100, 1, -100], [-100, -100, -100, -100, -100]])
    emissions, tags, mask = word_emissions(logits, targets, ignore=-100)
    assert mask.tolist() == [[True, True], [False, False]]
    assert tags[0].tolist() == [2, 1]
    assert torch.equal(emissions[0], logits[0, [1, 3]])


def test_transitions_survive_json_and_follow_a_new_tag_order():
    scores = random_scores(0)
    again = Transitions.from_json(scores.to_json())
    assert np.allclose(again.matrix, scores.matrix, atol=1e-5)
    order = list(reversed(TAGS))
    moved = scores.reorder(order)
    i, j = TAGS.index("B-Skill"), TAGS.index("I-Skill")
    assert moved.matrix[order.index("B-Skill"), order.index("I-Skill")] == scores.matrix[i, j]
    assert scores.reorder([*TAGS, "B-Tool"]) is None
    with pytest.raises(ValueError, match="do not match"):
        Transitions.from_json({**scores.to_json(), "end": [0.0]})


def test_a_tagger_trained_with_a_crf_saves_loads_and_decodes_with_it(tiny_encoder, tmp_path):
    config = TrainConfig(**{**FAST.__dict__, "crf": True})
    out = tmp_path / "crf"
    result = train(
        tiny_encoder, corpus(), LABELS, out, dev_docs=corpus(), config=config, progress=False
    )
    assert result.losses[-1] < result.losses[0]
    tagger = Tagger.load(out, LABELS, quantize=False)
    assert read_metadata(out)["crf"]["tags"] == tagger.tags
    assert "--no-crf" in (out / "README.md").read_text()  # for whoever takes it elsewhere
    assert checkpoint.load(out, LABELS).transitions is not None
    assert tagger.transitions is not None and "crf" in repr(tagger)
    assert np.any(tagger.transitions.matrix != 0)  # the scores learned something
    prediction = tagger.predict(["we need python and sql"])[0]
    assert valid(prediction.word_tags)
    # labels in another order: the loaded scores follow the project's tag order
    swapped = Tagger.load(out, list(reversed(LABELS)), quantize=False)
    b, i = swapped.tags.index("B-Technology"), swapped.tags.index("I-Technology")
    b0, i0 = tagger.tags.index("B-Technology"), tagger.tags.index("I-Technology")
    assert swapped.transitions.matrix[b, i] == tagger.transitions.matrix[b0, i0]
    # under a label map the scores follow the renamed tags
    renamed = Tagger.load(
        out, ["Tech", "People"], {"Technology": "Tech", "Soft": "People"}, quantize=False
    )
    b, i = renamed.tags.index("B-Tech"), renamed.tags.index("I-Tech")
    assert renamed.transitions.matrix[b, i] == tagger.transitions.matrix[b0, i0]
    # a plain model has no scores; warm starting without a CRF drops them
    no_crf = TrainConfig(**{**FAST.__dict__, "crf": False})
    plain = train(out, corpus(), LABELS, tmp_path / "plain", config=no_crf, progress=False)
    assert "crf" not in read_metadata(plain.path) and not (plain.path / "README.md").exists()
    assert Tagger.load(plain.path, LABELS, quantize=False).transitions is None
