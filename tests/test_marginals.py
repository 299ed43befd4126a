"""Forward-backward over the decoder's lattice: marginals and span probabilities are the
brute-force sums over every valid tag path, with and without a temperature."""

from itertools import product

import numpy as np
import pytest

from tests.test_crf import random_scores
from tests.test_decoding import TAGS, random_probs, valid
from training.crf import Lattice, Transitions
from training.text import split_tag


def brute_force(probs: np.ndarray, lattice: Lattice) -> dict[tuple[int, ...], float]:
    """Every path's probability, by enumeration (forbidden paths have none)."""
    pot = lattice.potentials(probs)
    scores = {}
    for path in product(range(len(TAGS)), repeat=len(probs)):
        if not lattice.free and not valid([TAGS[i] for i in path]):
            continue
        s = lattice.start[path[0]] + lattice.end[path[-1]]
        s += sum(pot[w, t] for w, t in enumerate(path))
        s += sum(lattice.matrix[a, b] for a, b in zip(path, path[1:], strict=False))
        scores[path] = s
    log_z = np.logaddexp.reduce(list(scores.values()))
    return {path: float(np.exp(s - log_z)) for path, s in scores.items()}


def has_exact_span(path, first: int, last: int, label: str) -> bool:
    """Words first..last are B-label I-label..., and the next word does not continue it."""
    tags = [TAGS[i] for i in path]
    want = [f"B-{label}"] + [f"I-{label}"] * (last - first)
    nxt = tags[last + 1] if last + 1 < len(tags) else "O"
    return tags[first : last + 1] == want and nxt != f"I-{label}"


LATTICES = {
    "crf": lambda seed, t: Lattice.crf(TAGS, random_scores(seed), t),
    "constraints only": lambda seed, t: Lattice.crf(TAGS, None, t),
    "free": lambda seed, t: Lattice.free_words(TAGS, t),
}


@pytest.mark.parametrize("kind", LATTICES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
@pytest.mark.parametrize("seed", range(3))
def test_marginals_and_span_probabilities_equal_brute_force(kind, temperature, seed):
    lattice = LATTICES[kind](seed, temperature)
    probs = random_probs(4, seed + 10)
    paths = brute_force(probs, lattice)
    posterior = lattice.posteriors([probs])[0]
    marginals = posterior.marginals
    assert np.allclose(marginals.sum(axis=1), 1.0)
    expected = np.zeros_like(marginals)
    for path, p in paths.items():
        expected[np.arange(len(path)), path] += p
    assert np.allclose(marginals, expected, atol=1e-9)
    for label in ("Skill", "Knowledge"):
        for first in range(4):
            for last in range(first, 4):
                mass = sum(
                    p for path, p in paths.items() if has_exact_span(path, first, last, label)
                )
                got = posterior.span_probability(first, last, label)
                assert got == pytest.approx(mass, abs=1e-9), (first, last, label)
    best = max(paths, key=paths.get)
    assert np.exp(posterior.path_log_probability(best)) == pytest.approx(paths[best])


def test_a_span_probability_is_not_the_product_of_its_words_marginals():
    # strong B->I and I->I scores make the words of a span move together: the product
    # of marginals undercounts the span, the exact sum does not
    n = len(TAGS)
    matrix = np.zeros((n, n))
    b, i = TAGS.index("B-Skill"), TAGS.index("I-Skill")
    matrix[b, i] = matrix[i, i] = 3.0
    lattice = Lattice.crf(TAGS, Transitions(tuple(TAGS), np.zeros(n), matrix, np.zeros(n)))
    probs = random_probs(3, 4)
    paths = brute_force(probs, lattice)
    posterior = lattice.posteriors([probs])[0]
    exact = sum(p for path, p in paths.items() if has_exact_span(path, 0, 2, "Skill"))
    product_of_marginals = posterior.marginals[0, b] * posterior.marginals[1:, i].prod()
    assert posterior.span_probability(0, 2, "Skill") == pytest.approx(exact)
    assert abs(product_of_marginals - exact) > 1e-3


def test_a_free_lattice_gives_the_tempered_softmax_of_the_emissions():
    logits = np.random.default_rng(0).normal(size=(6, len(TAGS))) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for t in (1.0, 2.0):
        tempered = np.exp(logits / t) / np.exp(logits / t).sum(axis=1, keepdims=True)
        assert np.allclose(Lattice.free_words(TAGS, t).posteriors([probs])[0].marginals, tempered)


def test_documents_of_different_lengths_get_the_posteriors_they_get_alone():
    lattice = Lattice.crf(TAGS, random_scores(2), 1.7)
    probs = [random_probs(n, seed=n) for n in (5, 1, 0, 9, 3)]
    together = lattice.posteriors(probs)
    for p, post in zip(probs, together, strict=True):
        alone = lattice.posteriors([p])[0]
        assert np.allclose(post.marginals, alone.marginals)
        assert post.log_z == pytest.approx(alone.log_z)
        if len(p):
            assert post.span_probability(0, 0, "Skill") == pytest.approx(
                alone.span_probability(0, 0, "Skill")
            )


def test_forbidden_tags_get_no_mass_and_a_temperature_must_be_positive():
    posterior = Lattice.crf(TAGS, random_scores(0)).posteriors([random_probs(5, 1)])[0]
    inside = [j for j, t in enumerate(TAGS) if split_tag(t)[0] == "I"]
    assert np.all(posterior.marginals[0, inside] == 0.0)  # no document starts inside a span
    with pytest.raises(ValueError, match="positive"):
        Lattice.crf(TAGS, None, 0.0)
