"""Character spans <-> word BIO tags: the one conversion everything else relies on."""

from hypothesis import given
from hypothesis import strategies as st

from training.text import Span, resolve_overlaps, spans_to_tags, tag_names, tags_to_spans, words

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
        found = words(chunk)
        if label and found:
            # a gold span runs from the chunk's first word to its last: whole words only
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
        "C",
        "+",
        "+",
        "and",
        "Node",
        ".",
        "js",
        ";",
        "café",
        "日本語",
    ]


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
