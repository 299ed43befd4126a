"""Label layers as an annotator sees them (issue 23): a project whose labels are two layers
(Skill, Knowledge), served by a real `skillloop serve` with a layered model, its one
prediction fetched by Label Studio's own /predict call and opened in Label Studio's
labelling page in headless Chromium.

The project has no labeling_config.xml: its config is the one skillloop generates (one
`<Labels>` holding both labels on the `<Text>`). Label Studio 1.23 draws regions of one
`<Labels>` that overlap as nested highlights; a second `<Labels>` per layer is not needed
(docs/layers.md). The test reads from the editor's DOM that the Skill phrase and the
Knowledge word inside it are both drawn, each on its own characters and in its own colour,
the word's highlight inside the phrase's; then an annotator draws another Knowledge region
inside the Skill phrase and submits, and the backend stores the overlapping spans as drawn.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from service_helpers import keyword_model
from studio_helpers import serve_backend, stored_annotation, wait_for, wait_published

from labeling.studio.browser import (
    INSTALL_HINT,
    chromium,
    find_chromium,
    highlights,
    open_task,
    save_screenshot,
    submit,
)

pytestmark = [pytest.mark.studio, pytest.mark.slow]

LABELS = ["Skill", "Knowledge"]
LAYERS = [["Skill"], ["Knowledge"]]
COLOURS = {"Skill": "#1f77b4", "Knowledge": "#ff7f0e"}
POST = "You will build data pipelines in Python and report with SQL for the team."
# each word's tag in each layer (every other word: O in both): Python is the last word of
# the Skill phrase and a Knowledge span of its own
WORD_TAGS = {
    "build": ("B-Skill", "O"),
    "data": ("I-Skill", "O"),
    "pipelines": ("I-Skill", "O"),
    "in": ("I-Skill", "O"),
    "python": ("I-Skill", "B-Knowledge"),
    "sql": ("O", "B-Knowledge"),
}
PREDICTED = [
    ("build data pipelines in Python", "Skill"),
    ("Python", "Knowledge"),
    ("SQL", "Knowledge"),
]


def layered_keyword_model(folder: Path) -> Path:
    """A layered tiny model (one encoder, a Skill head and a Knowledge head, no CRF) that
    tags each word by its token alone, per layer, as `WORD_TAGS` says.

    The encoder is `service_helpers.keyword_model`'s identity DistilBERT (a token's hidden
    state is its normalised word embedding); each word's embedding points at one dimension
    per layer (its tag there), and each head reads its layer's dimensions. Predictions go
    through the real checkpoint loading, windows and per-layer decoding."""
    import torch

    from training import checkpoint
    from training.saving import save
    from training.text import tag_names

    base = keyword_model(folder.parent / f"{folder.name}-encoder", dict.fromkeys(WORD_TAGS, "O"))
    loaded = checkpoint.load(base, LABELS, allow_new_labels=True, layers=LAYERS, crf=False)
    tags = [tag_names(layer) for layer in LAYERS]  # O, B-, I- per layer
    offsets = [0, len(tags[0])]  # each layer's first dimension
    embeddings = loaded.model.encoder.embeddings.word_embeddings.weight
    vocab = loaded.tokenizer.get_vocab()
    with torch.no_grad():
        embeddings.zero_()
        embeddings[:, offsets[0]] = embeddings[:, offsets[1]] = 1.0  # O in both layers
        for word, word_tags in WORD_TAGS.items():
            embeddings[vocab[word]] = 0.0
            for n, tag in enumerate(word_tags):
                embeddings[vocab[word], offsets[n] + tags[n].index(tag)] = 1.0
        for n, head in enumerate(loaded.model.heads):
            head.weight.zero_()
            head.bias.zero_()
            for k in range(len(tags[n])):
                head.weight[k, offsets[n] + k] = 10.0
    save(loaded.model, loaded.tokenizer, folder, {"labels": LABELS})
    return folder


def layered_project(folder: Path, model: Path) -> Path:
    folder.mkdir(parents=True)
    labels = "".join(
        f'[[labels]]\nvalue = "{label}"\nbackground = "{COLOURS[label]}"\n\n' for label in LABELS
    )
    (folder / "project.toml").write_text(
        f'[project]\nname = "layers"\ntitle = "layers browser test"\n\n{labels}'
        f'[model]\nbase = "{model}"\nlayers = [["Skill"], ["Knowledge"]]\n'
        "max_tokens = 48\nstride = 8\n\n[retrain]\nevery_n_annotations = 0\n"
    )
    return folder


def _rgba(hex_colour: str, alpha: str = "0.3") -> str:
    red, green, blue = (int(hex_colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


def _span(phrase: str, label: str) -> tuple[int, int, str, str]:
    start = POST.index(phrase)
    return (start, start + len(phrase), label, phrase)


# Each highlight element of the text editor: its region's label (the editor writes
# "<index>:<label>" in data-label), its text, and the label of the highlight it lies in
NESTING_JS = """(() => [...document.querySelectorAll('.lsf-richtext__container span.htx-highlight')]
  .map(el => {
    const label = e => (e.dataset.label || '').replace(/^\\d+:/, '');
    const outer = el.parentElement && el.parentElement.closest('span.htx-highlight');
    return [label(el), el.textContent, outer ? label(outer) : null];
  }))()"""
# The editor's regions list (the outliner): each region's label and text
REGIONS_JS = """(() => [...document.querySelectorAll('.lsf-outliner-item')].map(item => [
  item.querySelector('.lsf-outliner-item__title .lsf-labels-list')?.textContent.trim(),
  item.querySelector('.lsf-outliner-item__text')?.textContent]))()"""


# Label a word the way an annotator does, where it lies inside a drawn region: the label's
# button, a DOM Range over the word in the highlight's text node, the mouse released on it
LABEL_INSIDE_JS = r"""((word, label) => {
  const button = [...document.querySelectorAll('.lsf-label')]
      .find(el => el.querySelector('.lsf-label__text')?.textContent === label);
  if (!button) return 'no label button ' + label;
  button.click();
  const root = document.querySelector('.lsf-richtext__container');
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    const at = node.textContent.search(new RegExp('\\b' + word + '\\b'));
    if (at < 0 || !node.parentElement.closest('.htx-highlight')) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + word.length);
    const selected = range.toString();  // before the editor redraws the text
    window.getSelection().removeAllRanges();
    window.getSelection().addRange(range);
    const box = range.getBoundingClientRect();
    node.parentElement.dispatchEvent(new MouseEvent('mouseup',
        {bubbles: true, clientX: box.right, clientY: box.bottom}));
    return selected;
  }
  return 'no ' + word + ' inside a region';
})"""


def _inside(inner: list[dict], outer: list[dict]) -> bool:
    """Every box of `inner` lies within one box of `outer` (page pixels, 1 px slack)."""

    def within(a: dict, b: dict) -> bool:
        return (
            a["left"] >= b["left"] - 1
            and a["top"] >= b["top"] - 1
            and a["left"] + a["width"] <= b["left"] + b["width"] + 1
            and a["top"] + a["height"] <= b["top"] + b["height"] + 1
        )

    return bool(inner) and all(any(within(a, b) for b in outer) for a in inner)


@pytest.fixture(scope="module")
def browser_available() -> None:
    if find_chromium() is None:
        pytest.skip(f"chromium not found on PATH: {INSTALL_HINT}")


def test_the_generated_config_holds_both_layers_in_one_labels_tag(tmp_path):
    from labeling.project import load_project

    project = load_project(layered_project(tmp_path / "project", tmp_path / "no-model"))
    assert project.model.layers == LAYERS
    assert project.labeling_config.count("<Labels ") == 1
    assert project.config.label_values == LABELS


def test_the_editor_draws_overlapping_skill_and_knowledge_regions_of_one_prediction(
    browser_available, studio, tmp_path
):
    from labeling.project import load_project
    from labeling.studio.client import StudioClient
    from labeling.studio.login import login_session

    model = layered_keyword_model(tmp_path / "layered-model")
    project_dir = layered_project(tmp_path / "project", model)
    project = load_project(project_dir)
    shots = Path(os.environ.get("SKILLLOOP_SCREENSHOT_DIR") or tmp_path)
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(f"skillloop layers {os.getpid()}", project.labeling_config)
    client.import_tasks(ref.id, [{"text": POST, "post_id": "layers"}])

    with serve_backend(project_dir, tmp_path / "state", studio) as backend_url:
        client.connect_backend(ref.id, backend_url, "skillloop")
        wait_published(backend_url)
        client.refresh_predictions(ref.id)
        (task,) = wait_for(
            "the backend's prediction in Label Studio",
            lambda: [t for t in client.tasks(ref.id) if t["predictions"]],
            60,
        )
        # one prediction holds the regions of both layers, the Knowledge one inside the
        # Skill one
        (prediction,) = task["predictions"]
        stored = sorted(
            (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0], r["value"]["text"])
            for r in prediction["result"]
        )
        assert stored == sorted(_span(phrase, label) for phrase, label in PREDICTED)
        assert {r["from_name"] for r in prediction["result"]} == {project.config.from_name}

        session = login_session(studio.url, studio.username, studio.password)
        with chromium(session.cookies.get_dict(), studio.url) as tools:
            page = f"{studio.url}/projects/{ref.id}/data?task={task['id']}"
            drawn = open_task(tools, page, wait_s=60)
            save_screenshot(tools, shots / "layers-task.png")
            nesting = sorted(map(tuple, tools.evaluate(NESTING_JS)))
            regions = sorted(map(tuple, tools.evaluate(REGIONS_JS)))

            # an annotator adds a Knowledge region inside the Skill phrase, and submits
            assert tools.evaluate(f"({LABEL_INSIDE_JS})('data', 'Knowledge')") == "data"
            wait_for(
                "the editor to draw the new region",
                lambda: ("Knowledge", "data") in [(h.label, h.text) for h in highlights(tools)],
                10,
                every=0.3,
            )
            save_screenshot(tools, shots / "layers-task-annotated.png")
            submit(tools)
            record = stored_annotation(tmp_path / "state" / "layers")

    expected = sorted((label, phrase) for phrase, label in PREDICTED)
    # the regions list holds the three regions of the one prediction
    assert regions == expected
    # what the annotator sees: the phrase and both words drawn, each on its own characters
    # and in its label's colour ...
    assert sorted((h.label, h.text, h.background) for h in drawn) == sorted(
        (label, phrase, _rgba(COLOURS[label])) for phrase, label in PREDICTED
    )
    # ... Python's Knowledge highlight nested in the Skill phrase's, SQL's on its own
    assert nesting == [
        ("Knowledge", "Python", "Skill"),
        ("Knowledge", "SQL", None),
        ("Skill", "build data pipelines in Python", None),
    ]
    by_text = {h.text: h for h in drawn}
    skill, python, sql = (by_text[phrase] for phrase, _ in PREDICTED)
    assert _inside(python.boxes, skill.boxes)
    assert not _inside(sql.boxes, skill.boxes)  # the control: a word outside the phrase
    # the annotation stores the overlapping regions as drawn: the prediction's and the new
    # Knowledge word inside the Skill phrase
    assert sorted((s.start, s.end, s.label, s.text) for s in record.spans) == sorted(
        [*(_span(p, lab) for p, lab in PREDICTED), _span("data", "Knowledge")]
    )
