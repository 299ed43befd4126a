from itertools import product

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from training.decoding import decode, decode_many, no_span_across_lines, transitions, viterbi
from training.text import split_tag, tag_names, words

TAGS = tag_names(["Skill", "Knowledge"])


def valid(tags: list[str]) -> bool:
    previous = ("O", None)
    for tag in tags:
        prefix, label = split_tag(tag)
        if prefix == "I" and (previous[0] == "O" or previous[1] != label):
            return False
        previous = (prefix, label)
    return True


def random_probs(n_words: int, seed: int) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(n_words, len(TAGS))) * 3
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


def test_transitions_forbid_only_broken_continuations():
    start, allowed = transitions(TAGS)
    assert start.tolist() == [True, True, False, True, False]
    index = {t: i for i, t in enumerate(TAGS)}
    assert not allowed[index["O"], index["I-Skill"]]
    assert not allowed[index["B-Knowledge"], index["I-Skill"]]
    assert not allowed[index["I-Knowledge"], index["I-Skill"]]
    assert allowed[index["B-Skill"], index["I-Skill"]]
    assert allowed[index["I-Skill"], index["I-Skill"]]
    assert allowed[index["I-Skill"], index["B-Skill"]]  # adjacent entities stay apart
    assert allowed[:, index["O"]].all() and allowed[:, index["B-Knowledge"]].all()


@pytest.mark.parametrize("seed", range(20))
def test_viterbi_finds_the_best_valid_path(seed):
    probs = random_probs(4, seed)
    log_probs = np.log(probs)
    best = max(
        (path for path in product(range(len(TAGS)), repeat=4) if valid([TAGS[i] for i in path])),
        key=lambda path: sum(log_probs[w, t] for w, t in enumerate(path)),
    )
    start, allowed = transitions(TAGS)
    assert tuple(viterbi(log_probs, start, allowed)) == best


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(0, 30), st.just(len(TAGS))), elements=st.floats(0, 1))
)
def test_viterbi_output_is_always_valid_iob2(raw):
    probs = (raw + 1e-9) / (raw + 1e-9).sum(axis=1, keepdims=True) if raw.size else raw
    tags = decode(probs, TAGS, "viterbi")
    assert len(tags) == len(probs)
    assert valid(tags)


def test_viterbi_keeps_a_valid_argmax_path_and_repairs_a_broken_one():
    index = {t: i for i, t in enumerate(TAGS)}

    def probs_for(rows):
        probs = np.full((len(rows), len(TAGS)), 0.05)
        for w, (tag, p) in enumerate(rows):
            probs[w, index[tag]] = p
        return probs / probs.sum(axis=1, keepdims=True)

    fine = probs_for([("B-Skill", 0.9), ("I-Skill", 0.8), ("O", 0.9), ("B-Skill", 0.7)])
    assert decode(fine, TAGS, "viterbi") == decode(fine, TAGS, "argmax")
    assert decode(fine, TAGS, "viterbi") == ["B-Skill", "I-Skill", "O", "B-Skill"]
    # B-Skill I-Knowledge I-Knowledge: argmax splits it, the valid path keeps one label
    broken = probs_for([("B-Skill", 0.5), ("I-Knowledge", 0.6), ("I-Knowledge", 0.6)])
    assert decode(broken, TAGS, "argmax") == ["B-Skill", "I-Knowledge", "I-Knowledge"]
    assert decode(broken, TAGS, "viterbi") == ["B-Knowledge", "I-Knowledge", "I-Knowledge"]


def test_unknown_decoding_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown decoding 'crf'"):
        decode(random_probs(2, 0), TAGS, "crf")


@pytest.mark.parametrize("method", ["viterbi", "argmax"])
def test_many_documents_at_once_decode_as_one_by_one(method):
    rng = np.random.default_rng(1)
    probs = [random_probs(int(n), seed) for seed, n in enumerate(rng.integers(0, 40, 12))]
    probs.append(random_probs(0, 0))
    assert decode_many(probs, TAGS, method) == [decode(p, TAGS, method) for p in probs]
    assert decode_many([], TAGS, method) == []


def test_a_span_never_runs_across_a_line_break():
    text = "Consumer Duty\n\nRequirements"
    offsets = words(text)
    tags = tag_names(["Business"])  # O, B-Business, I-Business
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.1, 0.6]], dtype=np.float32)
    assert decode(probs, tags) == ["B-Business", "I-Business", "I-Business"]
    fixed = no_span_across_lines(probs, offsets, text, tags)
    assert decode(fixed, tags) == ["B-Business", "I-Business", "O"]
    assert np.allclose(fixed.sum(axis=1), 1.0) and fixed is not probs
    assert no_span_across_lines(probs, offsets, "Consumer Duty Requirements", tags) is probs
