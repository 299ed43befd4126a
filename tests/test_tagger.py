from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REFERENCE_TAGS, WORDS
from training.checkpoint import CheckpointError
from training.precision import resolve_precision
from training.tagger import Prediction, Tagger
from training.text import tag_names, words
from training.windows import WindowConfig, encode, make_windows, owned_words

PROJECT_LABELS = ["Business", "Technology", "Technical", "Soft"]


@pytest.fixture(scope="module")
def reference_tagger(tiny_reference_model, reference_label_map) -> Tagger:
    # small windows, so that ordinary test texts are read in several windows
    return Tagger.load(
        tiny_reference_model,
        PROJECT_LABELS,
        reference_label_map,
        window=WindowConfig(12, 4),
        quantize=False,
    )


def check_prediction(prediction: Prediction, text: str, tags: list[str]) -> None:
    assert prediction.text == text
    assert prediction.words == words(text)
    assert prediction.tags == tags
    assert prediction.probs.shape == (len(prediction.words), len(tags))
    assert prediction.probs.dtype == np.float32
    np.testing.assert_allclose(prediction.probs.sum(axis=1), 1.0, atol=1e-5)
    assert len(prediction.word_tags) == len(prediction.words)
    starts = {start for start, _ in prediction.words}
    ends = {end for _, end in prediction.words}
    for span in prediction.spans:
        assert span.text == text[span.start : span.end]
        assert span.text and span.text == span.text.strip()
        assert span.start in starts and span.end in ends  # never cuts a word
        assert span.label in {t[2:] for t in tags if t != "O"}
        assert 0.0 < span.score <= 1.0


# ------------------------------------------------------------------ a model with fixed tags


class TokenRuleModel(torch.nn.Module):
    """Tags each subword by its id alone (context-free), so expected spans are known."""

    def __init__(self, tag_of_id: dict[int, int], n_tags: int):
        super().__init__()
        self.config = SimpleNamespace(num_labels=n_tags, max_position_embeddings=512)
        self.tag_of_id = tag_of_id
        self.n_tags = n_tags

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros((*input_ids.shape, self.n_tags))
        tags = torch.tensor([[self.tag_of_id.get(int(i), 0) for i in row] for row in input_ids])
        logits.scatter_(2, tags.unsqueeze(-1), 8.0)
        return SimpleNamespace(logits=logits)


@pytest.fixture(scope="module")
def rule_tagger(tiny_reference_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_reference_model)
    tags = tag_names(["Skill"])
    vocab = tokenizer.get_vocab()
    rules = {vocab["machine"]: tags.index("B-Skill"), vocab["learning"]: tags.index("I-Skill")}
    model = TokenRuleModel(rules, len(tags))
    return Tagger(tokenizer, model, ["Skill"], "rules", window=WindowConfig(8, 4))


def test_a_span_across_a_window_seam_is_found_once(rule_tagger):
    skill = "machine " + "learning " * 6
    text = "we need a data team with " + skill + "and python or sql for the work"
    prediction = rule_tagger.predict([text])[0]

    # the skill's words really are split between windows
    encoding = encode(rule_tagger.tokenizer, text, prediction.words)
    windows = make_windows(encoding, rule_tagger.window)
    first = text.index("machine")
    skill_words = {i for i, (start, _) in enumerate(prediction.words) if first <= start}
    skill_words = {i for i in skill_words if text[prediction.words[i][0]].isalpha()}
    owners = {k for k, w in enumerate(windows) if set(owned_words(encoding, w)) & skill_words}
    assert len(owners) >= 2

    assert [(s.text, s.label) for s in prediction.spans] == [(skill.strip(), "Skill")]
    assert prediction.spans[0].start == first


def test_a_compound_of_several_pieces_is_one_word_read_from_its_first_subword(rule_tagger):
    # BERT's pre-tokenizer cuts "machine-learning" into machine / - / learning; the word is
    # the whole compound, tagged from "machine" (B-Skill), so the span is never "machine-"
    text = "machine-learning and machine/learning, then machine.learning."
    for max_tokens in range(4, 14):
        window = WindowConfig(max_tokens=max_tokens)
        tagger = Tagger(rule_tagger.tokenizer, rule_tagger.model, ["Skill"], "rules", window=window)
        prediction = tagger.predict([text])[0]
        check_prediction(prediction, text, tag_names(["Skill"]))
        assert [s.text for s in prediction.spans] == [
            "machine-learning",
            "machine/learning",
            "machine.learning",
        ]
        encoding = encode(tagger.tokenizer, text, prediction.words)
        first = int(encoding.first_token[0])
        assert tagger.tokenizer.convert_ids_to_tokens(encoding.input_ids[first]) == "machine"
        assert list(encoding.word_of_token[:3]) == [0, 0, 0]  # machine - learning
        for window in make_windows(encoding, tagger.window)[1:]:
            # windows start on a word's first subword, never inside a compound
            start = window.start
            assert encoding.word_of_token[start] != encoding.word_of_token[start - 1]


def test_every_window_seam_position_gives_the_same_spans(rule_tagger):
    text = "we need machine learning and machine learning learning , data machine " * 3
    expected = None
    for max_tokens in range(4, 20):
        tagger = Tagger(
            rule_tagger.tokenizer,
            rule_tagger.model,
            ["Skill"],
            "rules",
            window=WindowConfig(max_tokens, max_tokens // 3),
        )
        spans = [s.key() for s in tagger.predict([text])[0].spans]
        expected = expected or spans
        assert spans == expected, max_tokens
    assert len(expected) == 9  # two-word, two-word, three-word, one-word spans, three times


# ------------------------------------------------------------------ the reference model


def test_reference_model_tags_map_to_project_labels(tiny_reference_model, reference_label_map):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tagger = Tagger.load(tiny_reference_model, PROJECT_LABELS, reference_label_map, quantize=False)
    assert tagger.tags == tag_names(PROJECT_LABELS)
    assert tagger.tags[1:3] == ["B-Business", "I-Business"]
    text = "senior data engineer with python, sql and communication skills"
    prediction = tagger.predict([text])[0]
    check_prediction(prediction, text, tagger.tags)

    # the same numbers as the raw checkpoint, with its columns renamed
    tokenizer = AutoTokenizer.from_pretrained(tiny_reference_model)
    raw = AutoModelForTokenClassification.from_pretrained(tiny_reference_model).eval()
    encoded = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        raw_probs = torch.softmax(raw(**encoded).logits[0], dim=-1).numpy()
    model_tag = {
        f"{p}-{label}": f"{p}-{t}" for t, label in reference_label_map.items() for p in "BI"
    } | {"O": "O"}
    columns = [REFERENCE_TAGS.index(model_tag[t]) for t in tagger.tags]
    first_subwords = [encoded.word_ids().index(i) for i in range(len(prediction.words))]
    np.testing.assert_allclose(prediction.probs, raw_probs[first_subwords][:, columns], atol=1e-5)


def test_label_order_follows_the_project(tiny_reference_model, reference_label_map):
    text = "python and sql"
    forward = Tagger.load(tiny_reference_model, PROJECT_LABELS, reference_label_map)
    backward = Tagger.load(tiny_reference_model, PROJECT_LABELS[::-1], reference_label_map)
    a, b = forward.predict([text])[0], backward.predict([text])[0]
    for tag in forward.tags:
        np.testing.assert_allclose(
            a.probs[:, forward.tags.index(tag)], b.probs[:, backward.tags.index(tag)], atol=1e-5
        )


def test_labels_the_model_does_not_know_are_a_checkpoint_error(
    tiny_reference_model, reference_label_map
):
    with pytest.raises(CheckpointError, match=r"does not know the labels \['Skill'\]"):
        Tagger.load(tiny_reference_model, ["Business", "Skill"], reference_label_map)
    with pytest.raises(CheckpointError):
        Tagger.load(tiny_reference_model, ["Skill", "Knowledge"])


def test_a_bare_encoder_needs_training_first(tiny_encoder):
    with pytest.raises(CheckpointError, match="no BIO tagging head"):
        Tagger.load(tiny_encoder, ["Skill"])
    tagger = Tagger.load(tiny_encoder, ["Skill"], allow_new_labels=True)
    assert tagger.tags == ["O", "B-Skill", "I-Skill"]


def test_missing_model_folder_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        Tagger.load(tmp_path / "nowhere", ["Skill"])


def test_version_names_the_checkpoint_weights_and_precision(
    tiny_reference_model, reference_label_map
):
    def load(**options):
        return Tagger.load(tiny_reference_model, PROJECT_LABELS, reference_label_map, **options)

    fp32 = load(quantize=False)
    assert fp32.source == str(tiny_reference_model)
    assert fp32.version.startswith(f"{tiny_reference_model.name}@")
    assert fp32.precision == "fp32"
    assert load(precision="int8").version == fp32.version + "+int8"
    assert load(precision="bf16").version == fp32.version + "+bf16"
    expected = resolve_precision("auto")  # per CPU class: tests/test_precision.py
    assert load().precision == expected and load(quantize=True).precision == expected
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        load(precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_stays_close_to_fp32(
    tiny_reference_model, reference_label_map, precision
):
    text = "team work and communication skills for the analyst , excel or spark " * 3
    fp32, other = (
        Tagger.load(tiny_reference_model, PROJECT_LABELS, reference_label_map, precision=p).predict(
            [text]
        )[0]
        for p in ("fp32", precision)
    )
    assert other.probs.dtype == np.float32
    assert np.abs(fp32.probs - other.probs).max() < 0.05


# ------------------------------------------------------------------ any text


SNIPPETS = WORDS + [
    " ",
    "  ",
    "\n",
    "\t",
    "\u00a0",
    ",",
    ".",
    "-",
    "C++",
    "é",
    "\u0301",
    "ß",
    "😀",
    "中文",
    "İ",
    "ﬁ",
    "\u200b",
    "Ⅻ",
    "١٢٣",
]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=4)), max_size=60))
def test_offsets_index_the_original_string_for_any_text(reference_tagger, parts):
    text = "".join(parts)
    prediction = reference_tagger.predict([text])[0]
    check_prediction(prediction, text, reference_tagger.tags)


@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("bf16", 1e-3), ("int8", 0)])
def test_batching_gives_the_same_result_as_one_by_one(
    tiny_reference_model, reference_label_map, precision, tolerance
):
    tagger = Tagger.load(
        tiny_reference_model,
        PROJECT_LABELS,
        reference_label_map,
        window=WindowConfig(12, 4),
        precision=precision,
    )
    texts = [
        "we need a senior data engineer with python and sql",
        "machine learning",
        "",
        "team work and communication skills for the analyst , excel or spark " * 4,
        "c and java",
    ]
    together = tagger.predict(texts)
    for text, batched in zip(texts, together, strict=True):
        alone = tagger.predict([text])[0]
        # int8 runs one window per pass, so it must match exactly
        np.testing.assert_allclose(batched.probs, alone.probs, atol=tolerance)
        assert [s.key() for s in batched.spans] == [s.key() for s in alone.spans]


def test_hidden_states_are_what_the_head_reads(reference_tagger):
    text = "team work and communication skills for the analyst , excel or spark " * 4
    prediction = reference_tagger.predict([text], hidden=True)[0]
    assert reference_tagger.predict([text])[0].hidden is None  # only when asked for
    head = reference_tagger.classifier_head()
    assert prediction.hidden.shape == (len(prediction.words), head["weight"].shape[1])
    assert 0.0 < head["dropout"] < 1.0
    logits = prediction.hidden @ head["weight"].T + head["bias"]
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, prediction.probs, atol=1e-4)  # across window seams too


# ------------------------------------------------------------------ bad input


def test_empty_and_blank_texts_get_empty_predictions(reference_tagger):
    assert reference_tagger.predict([]) == []
    for text in ["", "   \n\t "]:
        prediction = reference_tagger.predict([text])[0]
        assert prediction.words == [] and prediction.spans == [] and prediction.word_tags == []
        assert prediction.probs.shape == (0, len(reference_tagger.tags))


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("a single string", "not a single string"),
        (None, "got NoneType"),
        (["fine", 3], "text 1 is int, not str"),
        ([b"bytes"], "text 0 is bytes"),
    ],
)
def test_wrong_types_are_clear_errors(reference_tagger, texts, message):
    with pytest.raises(TypeError, match=message):
        reference_tagger.predict(texts)


def test_bad_options_are_clear_errors(tiny_reference_model, reference_label_map):
    load = Tagger.load
    with pytest.raises(ValueError, match="unknown decoding"):
        load(tiny_reference_model, PROJECT_LABELS, reference_label_map, decoding="crf")
    with pytest.raises(ValueError, match="max_tokens must be at least 2"):
        load(tiny_reference_model, PROJECT_LABELS, reference_label_map, window=WindowConfig(1))
    with pytest.raises(ValueError, match="stride must not be negative"):
        WindowConfig(stride=-1)
    with pytest.raises(ValueError, match="num_threads must be at least 1"):
        load(tiny_reference_model, PROJECT_LABELS, reference_label_map, num_threads=0)


def test_max_tokens_is_capped_at_the_model_limit(tiny_reference_model, reference_label_map):
    window = WindowConfig(max_tokens=999)
    tagger = Tagger.load(tiny_reference_model, PROJECT_LABELS, reference_label_map, window=window)
    # the position limit minus [CLS] and [SEP]; the stride at most half of that
    assert tagger.window == WindowConfig(64 - 2, 31)
    long_text = "python and sql " * 40
    prediction = tagger.predict([long_text])[0]
    check_prediction(prediction, long_text, tagger.tags)


def test_a_word_split_by_a_dropped_character_stays_in_its_span(rule_tagger):
    # the tokenizer drops the soft hyphen and reads one subword "machine": "ine" has none
    text = "we need mach\u00adine learning and data"
    prediction = rule_tagger.predict([text])[0]
    assert [s.text for s in prediction.spans] == ["mach\u00adine learning"]
    check_prediction(prediction, text, rule_tagger.tags)
