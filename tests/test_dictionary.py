"""The cold-start dictionary: taxonomy labels matched as whole words, longest first, typed
through the project's map."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.dictionary import (
    DICTIONARY_SCORE,
    Dictionary,
    DictionaryTagger,
    entry_label,
    entry_types,
)
from training.taxonomy import Taxonomy, TaxonomyEntry, load_csv

TAXONOMY_CSV = """id,preferred_label,alt_labels,type,description
k8s,kubernetes,k8s|container orchestration with kubernetes,S,
sql,SQL,structured query language,K,
ml,machine learning,ML,K,
learn,learning,,S,
java,Java,,K,
talk,communication,communication skills,T,
cicd,CI/CD,,K,
"""
TYPES = {"K": "Knowledge", "S": "Skill", "T": "Skill"}


@pytest.fixture
def taxonomy(tmp_path: Path) -> Taxonomy:
    path = tmp_path / "skills.csv"
    path.write_text(TAXONOMY_CSV, encoding="utf-8")
    return load_csv(path)


@pytest.fixture
def dictionary(taxonomy: Taxonomy) -> Dictionary:
    return Dictionary(taxonomy, TYPES)


def found(dictionary: Dictionary, text: str) -> list[tuple[str, str, str]]:
    return [(m.text, m.label, m.taxonomy_id) for m in dictionary.match(text)]


def test_matches_are_case_insensitive_and_carry_the_taxonomy_id(dictionary):
    matches = dictionary.match("We use sql and K8S daily.")
    assert [(m.text, m.label, m.taxonomy_id) for m in matches] == [
        ("sql", "Knowledge", "sql"),
        ("K8S", "Skill", "k8s"),
    ]
    assert matches[1].taxonomy_label == "kubernetes" and matches[1].matched_label == "k8s"
    text = "We use sql and K8S daily."
    assert all(text[m.start : m.end] == m.text for m in matches)


def test_whole_words_only_compounds_are_one_word(dictionary):
    # T-SQL, JavaScript and CI/CD-ready are single words: no label matches inside them
    assert found(dictionary, "T-SQL, JavaScript and Java.") == [("Java", "Knowledge", "java")]
    assert found(dictionary, "CI/CD pipelines") == [("CI/CD", "Knowledge", "cicd")]
    assert found(dictionary, "CI/CD-ready teams") == []


def test_the_longest_label_wins_where_matches_overlap(dictionary):
    text = "Container orchestration with Kubernetes and machine learning."
    assert found(dictionary, text) == [
        ("Container orchestration with Kubernetes", "Skill", "k8s"),
        ("machine learning", "Knowledge", "ml"),  # not "learning" (Skill) alone
    ]
    assert found(dictionary, "learning to code") == [("learning", "Skill", "learn")]


def test_the_types_map_decides_the_label_and_what_is_matched(taxonomy):
    skills_only = Dictionary(taxonomy, {"S": "Skill", "T": "Skill"})
    assert found(skills_only, "SQL and communication skills") == [
        ("communication skills", "Skill", "talk")
    ]
    everything = Dictionary(taxonomy, {"*": "Skill"})
    assert [label for _, label, _ in found(everything, "SQL and k8s")] == ["Skill", "Skill"]
    with pytest.raises(ValueError, match="types map"):
        Dictionary(taxonomy, {})


def test_esco_entries_are_typed_by_their_pillars_first_key_of_the_map_wins():
    both = TaxonomyEntry("x", "x", type="SK", hierarchy=["S/S1/S1.1", "K/K06"])
    assert entry_types(both) == ["S", "K"]
    assert entry_label(both, {"K": "Knowledge", "S": "Skill"}) == "Knowledge"
    assert entry_label(both, {"S": "Skill", "K": "Knowledge"}) == "Skill"
    assert entry_label(TaxonomyEntry("l", "English", type="L", hierarchy=["L/L1"]), TYPES) is None


def test_dictionary_tagger_predictions_are_low_confidence_and_decodable(dictionary):
    tagger = DictionaryTagger(dictionary, ["Skill", "Knowledge"])
    (prediction,) = tagger.predict(["Strong SQL and k8s"])
    assert [(s.text, s.label, s.score) for s in prediction.spans] == [
        ("SQL", "Knowledge", DICTIONARY_SCORE),
        ("k8s", "Skill", DICTIONARY_SCORE),
    ]
    assert prediction.word_tags == ["O", "B-Knowledge", "O", "B-Skill"]
    assert prediction.probs.shape == (4, 5)
    assert prediction.probs.sum(axis=1) == pytest.approx([1.0] * 4)
    # each word's decoded tag is its most likely one, at a coin flip's probability
    best = [prediction.tags[j] for j in prediction.probs.argmax(axis=1)]
    assert best == prediction.word_tags and prediction.probs.max() == DICTIONARY_SCORE
    assert tagger.version == "dictionary-skills"
