"""Character spans <-> word BIO tags: the one conversion everything else relies on."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from training.reading import WindowedText, continue_orphans
from training.text import (
    JOINERS,
    Span,
    TagSet,
    is_joiner,
    post_key,
    resolve_overlaps,
    spans_to_tags,
    tag_names,
    tag_runs,
    tags_to_spans,
    words,
)

LABELS = ["Technology", "Soft"]
pieces = st.lists(
    st.tuples(
        st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
        st.sampled_from([None, *LABELS]),
    ),
    max_size=20,
)


@given(pieces, st.sampled_from([" ", "  ", "\n", "\t ", " \u00a0"]))
def test_random_spans_survive_text_to_tags_and_back(parts, separator):
    text, gold = "", []
    for chunk, label in parts:
        if text:
            text += separator
        start = len(text)
        text += chunk
        found = [w for w in words(chunk) if not is_joiner(chunk, w)]
        if label and found:
            # a gold span runs from the chunk's first word to its last, whole words only,
            # never starting or ending on a lone joiner (the decoder trims those)
            gold.append(Span(start + found[0][0], start + found[-1][1], label))
    tags = spans_to_tags(gold, words(text))
    back = tags_to_spans(tags, words(text), text)
    assert [s.key() for s in back] == [s.key() for s in gold]
    for span in back:
        assert span.text == text[span.start : span.end] == span.text.strip()


def test_words_split_punctuation_but_never_inside_a_word():
    text = "Python, C++ and Node.js; café 日本語"
    assert [text[a:b] for a, b in words(text)] == [
        "Python",
        ",",
        "C++",
        "and",
        "Node.js",
        ";",
        "café",
        "日本語",
    ]


def test_words_are_what_a_reader_sees_as_one_word():
    text = (
        "T-SQL, PL/SQL and CI/CD; C#, F# or C++ with Node.js, model-based A/B tests "
        "(3.5 years) in real- and -time systems. Python+SQL. #hiring Python."
    )
    assert [text[a:b] for a, b in words(text)] == [
        *("T-SQL", ",", "PL/SQL", "and", "CI/CD", ";", "C#", ",", "F#", "or", "C++"),
        *("with", "Node.js", ",", "model-based", "A/B", "tests", "(", "3.5", "years", ")"),
        *("in", "real", "-", "and", "-", "time", "systems", ".", "Python", "+", "SQL", "."),
        *("#", "hiring", "Python", "."),
    ]


def test_a_span_drawn_inside_a_compound_snaps_to_the_whole_compound():
    # the demo's `T-`, `PL/` and `model-` spans: an annotator (or a model) cannot cut them
    text = "T-SQL, PL/SQL and model-based design"
    for start, end, whole in [(0, 2, "T-SQL"), (7, 10, "PL/SQL"), (18, 24, "model-based")]:
        tags = spans_to_tags([Span(start, end, "Technology")], words(text))
        assert [s.text for s in tags_to_spans(tags, words(text), text)] == [whole]


def test_decoded_spans_never_start_or_end_on_a_dangling_joiner():
    text = "real- and -time systems in Python."
    w = words(text)  # real - and - time systems in Python .
    tags = ["B-T", "I-T", "O", "B-T", "I-T", "I-T", "O", "B-T", "I-T"]
    assert [s.text for s in tags_to_spans(tags, w, text)] == ["real", "time systems", "Python"]
    only_joiners = ["O", "B-T", "O", "B-T", "O", "O", "O", "O", "B-T"]
    assert tags_to_spans(only_joiners, w, text) == []
    # readers of tokenised gold keep what the file says
    kept = tags_to_spans(tags, w, text, trim_joiners=False)
    assert [s.text for s in kept] == ["real-", "-time systems", "Python."]


def test_a_leading_dot_that_opens_a_name_stays_with_the_span():
    # raw text, and SkillSpan's tokenised text, where the dot stands apart
    for text, whole in [
        ("Experience with .NET and .js tooling.", [".NET", ".js tooling"]),
        ("Knowledge of . NET and . net-core", [". NET", ". net-core"]),
    ]:
        w = words(text)
        tags = ["O"] * len(w)
        for span_text in whole:
            at = text.index(span_text)
            inside = [i for i, (s, e) in enumerate(w) if at <= s and e <= at + len(span_text)]
            tags[inside[0]] = "B-T"
            for i in inside[1:]:
                tags[i] = "I-T"
        assert [s.text for s in tags_to_spans(tags, w, text)] == whole
    # a sentence's final period still never starts a span
    text = "SQL. Java"
    w = words(text)  # SQL . Java
    assert [s.text for s in tags_to_spans(["O", "B-T", "I-T"], w, text)] == ["Java"]
    # nor does a lone dot make a span by itself
    assert tags_to_spans(["B-T"], words(". "), ". ") == []


def test_one_decoder_for_labelled_and_bare_columns():
    assert tag_runs(["B", "I", "O", "I"], label="Skill") == [(0, 1, "Skill"), (3, 3, "Skill")]
    assert tag_runs(["I-A", "I-B", "B-B", "I-B"]) == [(0, 0, "A"), (1, 1, "B"), (2, 3, "B")]
    try:
        tag_runs(["B"])
    except ValueError as err:
        assert "needs a label" in str(err)
    else:
        raise AssertionError("a bare tag without a label must be refused")
    assert spans_to_tags([Span(0, 3, "Skill")], [(0, 3), (4, 5)], bare=True) == ["B", "O"]


def test_post_key_ignores_spacing_only():
    assert post_key("  Python\n\tand  SQL ") == post_key("Python and SQL") == "Python and SQL"
    assert post_key("Python and SQL") != post_key("python and sql")


# ---------------------------------------------------------------- compounds, generated

_part = st.text(alphabet="abcXYZ0123456789_é", min_size=1, max_size=5)


@st.composite
def compounds(draw) -> str:
    """Alphanumeric parts joined by -, / or ., with an optional trailing + / # run."""
    parts = draw(st.lists(_part, min_size=2, max_size=4))
    text = parts[0]
    for part in parts[1:]:
        text += draw(st.sampled_from(list(JOINERS))) + part
    return text + draw(st.sampled_from(["", "", "+", "++", "#"]))


_filler = st.sampled_from(["we use", "and", "with", "or", "e", "(", ")", ",", ";", ":", "!"])


@st.composite
def sentences(draw):
    """Sentences of filler words and compounds; returns the text, each compound's offsets,
    and whether the sentence ends with a period."""
    text, spans = "", []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            piece = draw(compounds())
            before = draw(st.sampled_from(["", "", "("]))  # punctuation that touches it
            after = draw(st.sampled_from(["", "", ",", ")", ";", ":", "."]))
            text += (" " if text else "") + before
            spans.append((len(text), len(text) + len(piece)))
            text += piece + after
        else:
            text += (" " if text else "") + draw(_filler)
    final = draw(st.booleans())
    return text + ("." if final else ""), spans, final


@given(sentences())
def test_each_generated_compound_is_exactly_one_word(sentence):
    text, compounds, final = sentence
    found = words(text)
    for compound in compounds:
        assert compound in found, (text[compound[0] : compound[1]], text)
    for start, end in found:
        if end - start > 1:
            assert text[start] not in JOINERS and text[end - 1] not in JOINERS
    if final:
        assert found[-1] == (len(text) - 1, len(text))  # the final period is its own word


@given(sentences(), st.data())
def test_spans_snap_and_decode_without_an_edge_inside_a_compound(sentence, data):
    text, compounds, _ = sentence
    spans = []
    for _ in range(data.draw(st.integers(0, 3))):
        start = data.draw(st.integers(0, max(len(text) - 1, 0)))
        end = data.draw(st.integers(start + 1, len(text)))
        spans.append(Span(start, end, "Skill"))
    w = words(text)
    for span in tags_to_spans(spans_to_tags(spans, w), w, text):
        for start, end in compounds:
            assert not start < span.start < end and not start < span.end < end, (span, text)
        assert text[span.start] not in JOINERS and text[span.end - 1] not in JOINERS
        assert span.text == span.text.strip()


def test_an_annotator_span_drawn_short_snaps_to_whole_words():
    text = "Strong Python skills"
    tags = spans_to_tags([Span(8, 12, "Technology")], words(text))  # "ytho"
    assert tags == ["O", "B-Technology", "O"]
    assert tags_to_spans(tags, words(text), text)[0].text == "Python"


def test_lenient_decoding_opens_spans_on_stray_i_and_keeps_adjacent_entities_apart():
    text = "sql python java"
    w = words(text)
    spans = tags_to_spans(["I-Technology", "B-Technology", "B-Technology"], w, text)
    assert [s.text for s in spans] == ["sql", "python", "java"]
    spans = tags_to_spans(["B-Technology", "I-Soft", "I-Soft"], w, text)
    assert [(s.text, s.label) for s in spans] == [("sql", "Technology"), ("python java", "Soft")]


def test_span_score_is_its_least_sure_word():
    text = "machine learning"
    spans = tags_to_spans(["B-Technology", "I-Technology"], words(text), text, [0.9, 0.6])
    assert spans[0].score == 0.6


def test_nested_spans_keep_the_longer_one():
    outer, inner = Span(0, 20, "Soft"), Span(5, 10, "Technology")
    kept, dropped = resolve_overlaps([inner, outer])
    assert kept == [outer] and dropped == [inner]


def test_tag_names_put_outside_first():
    assert tag_names(["A", "B"]) == ["O", "B-A", "I-A", "B-B", "I-B"]


def test_a_tag_set_maps_b_to_i_by_name_in_any_order():
    assert TagSet.of(["A", "B"]).b_to_i == {1: 2, 3: 4}  # tag_names' order
    # a checkpoint's order, B- and I- of a label not side by side
    tags = TagSet(("I-Skill", "O", "B-Knowledge", "B-Skill", "I-Knowledge", "B-Tool"))
    assert tags.b_to_i == {2: 4, 3: 0}  # B-Tool has no I- to continue it
    assert tags.i_to_b == {4: 2, 0: 3}
    with pytest.raises(ValueError, match="not an IOB2 tag"):
        TagSet(("O", "S-Skill"))
    with pytest.raises(ValueError, match="duplicate tags"):
        TagSet(("O", "B-Skill", "B-Skill"))


def test_an_orphan_word_continues_the_span_before_it_whatever_the_tag_order():
    # "dients" touches "ingre" and has no subword of its own (as after a dropped character)
    text = "ingredients"
    tags = TagSet(("I-Skill", "O", "B-Knowledge", "B-Skill", "I-Knowledge"))
    probs = np.zeros((2, 5), np.float32)
    probs[0] = [0.05, 0.1, 0.2, 0.6, 0.05]
    encoding = SimpleNamespace(first_token=np.array([0, -1]))
    doc = WindowedText(text, [(0, 5), (5, 11)], encoding, [], probs)  # type: ignore[arg-type]
    continue_orphans(doc, tags)
    # B-Skill's share goes to I-Skill, B-Knowledge's to I-Knowledge; O stays
    np.testing.assert_allclose(doc.probs[1], [0.65, 0.1, 0.0, 0.0, 0.25], atol=1e-6)
