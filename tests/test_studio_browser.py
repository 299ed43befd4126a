"""What an annotator sees, checked in a real browser: a post full of characters outside
the Basic Multilingual Plane (emoji, mathematical letters: two UTF-16 units each, one
Python index), pre-annotated by a real `skillloop serve` through Label Studio's own
/predict call, opened in Label Studio's labelling page in headless Chromium.

- every drawn highlight's text, read from the editor's DOM, is the text of its region;
- one region made through the editor's own selection (label button, DOM Range selection,
  mouseup) on a word that follows an emoji, submitted with the editor's Submit button,
  reaches the backend's webhook and is stored as exactly the span Python computes.

Label Studio 1.23's editor counts offsets in code points (as Python does); regions in
UTF-16 units are drawn shifted after the first emoji, so this test fails on them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from service_helpers import PLAIN_CONFIG, keyword_model, write_project
from studio_helpers import serve_backend, stored_annotation, wait_for, wait_published

from labeling.studio.browser import (
    INSTALL_HINT,
    chromium,
    find_chromium,
    highlights,
    label_word,
    open_task,
    save_screenshot,
    submit,
)

pytestmark = [pytest.mark.studio, pytest.mark.slow]

POST = (
    "🚀 We're hiring! 𝐏𝐲𝐭𝐡𝐨𝐧 and sql 💼 for machine 🧠 learning 📍 cloud with docker 🎉 "
    "and communication skills 🙌"
)
# The keyword model's tags: a word tagged by its token alone, so the prediction is known.
KEYWORDS = {
    "𝐏𝐲𝐭𝐡𝐨𝐧": "B-TECHNOLOGY",
    "sql": "B-TECHNOLOGY",
    "machine": "B-TECHNICAL",
    "🧠": "I-TECHNICAL",
    "learning": "I-TECHNICAL",
    "docker": "B-TECHNOLOGY",
    "communication": "B-SOFT",
    "skills": "I-SOFT",
}
# What the backend must predict: astral characters before, inside and after the spans.
PREDICTED = [
    ("𝐏𝐲𝐭𝐡𝐨𝐧", "Technology"),
    ("sql", "Technology"),
    ("machine 🧠 learning", "Technical"),
    ("docker", "Technology"),
    ("communication skills", "Soft"),
]
SELECTED = ("cloud", "Business")  # labelled in the editor; three emoji come before it


def _span(phrase: str, label: str) -> tuple[int, int, str, str]:
    """(start, end, label, text) in Python indices: the one truth every layer must match."""
    start = POST.index(phrase)
    return (start, start + len(phrase), label, phrase)


def _utf16(index: int) -> int:
    return len(POST[:index].encode("utf-16-le")) // 2


def _rgba(hex_colour: str, alpha: str = "0.3") -> str:
    red, green, blue = (int(hex_colour.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({red}, {green}, {blue}, {alpha})"


@pytest.fixture(scope="module")
def browser_available() -> None:
    if find_chromium() is None:
        pytest.skip(f"chromium not found on PATH: {INSTALL_HINT}")


def test_the_post_discriminates_code_points_from_utf16():
    # every span, and the selected word, sits after an astral character: UTF-16 units
    # differ from code points at each of them, so a wrong unit cannot pass the test below
    for phrase, label in [*PREDICTED, SELECTED]:
        start, end, _, _ = _span(phrase, label)
        assert (_utf16(start), _utf16(end)) != (start, end), phrase
    assert re.search(r"[\U00010000-\U0010FFFF]", "machine 🧠 learning")  # inside a span


def test_the_editor_draws_backend_regions_on_their_words_and_stores_a_selection(
    browser_available, studio, tmp_path
):
    from labeling.studio.client import StudioClient
    from labeling.studio.config import parse_config
    from labeling.studio.login import login_session

    model = keyword_model(tmp_path / "keyword-model", KEYWORDS)
    project_dir = write_project(tmp_path / "project", model, name="browser")
    state = tmp_path / "state"
    shots = Path(os.environ.get("SKILLLOOP_SCREENSHOT_DIR") or tmp_path)  # to look at them
    xml = PLAIN_CONFIG
    colours = {label.value: label.background for label in parse_config(xml).labels}
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(f"skillloop browser {os.getpid()}", xml)
    client.import_tasks(ref.id, [{"text": POST, "post_id": "astral"}])

    with serve_backend(project_dir, state, studio) as backend_url:
        # connecting registers the backend's webhook; Label Studio then calls /predict
        client.connect_backend(ref.id, backend_url, "skillloop")
        wait_published(backend_url)  # on /setup the backend publishes its model
        client.refresh_predictions(ref.id)
        (task,) = wait_for(
            "the backend's prediction in Label Studio",
            lambda: [t for t in client.tasks(ref.id) if t["predictions"]],
            60,
        )
        stored = [
            (r["value"]["start"], r["value"]["end"], r["value"]["labels"][0], r["value"]["text"])
            for r in task["predictions"][0]["result"]
        ]
        assert stored == [_span(phrase, label) for phrase, label in PREDICTED]

        session = login_session(studio.url, studio.username, studio.password)
        with chromium(session.cookies.get_dict(), studio.url) as tools:
            page = f"{studio.url}/projects/{ref.id}/data?task={task['id']}"
            drawn = open_task(tools, page, wait_s=60)
            save_screenshot(tools, shots / "astral-task.png")
            # what the annotator sees: each highlight covers exactly its region's text,
            # in its label's colour
            assert [h.text for h in drawn] == [phrase for phrase, _ in PREDICTED]
            assert [h.background for h in drawn] == [_rgba(colours[lab]) for _, lab in PREDICTED]
            assert all(h.boxes for h in drawn)

            word, label = SELECTED
            assert label_word(tools, word, label) == word
            wait_for(
                f"the editor to draw {word!r}",
                lambda: word in [h.text for h in highlights(tools)],
                10,
                every=0.3,
            )
            save_screenshot(tools, shots / "astral-task-selected.png")
            submit(tools)

            record = stored_annotation(state / "browser")

    assert record.task_id == task["id"] and record.text == POST
    spans = sorted((s.start, s.end, s.label, s.text) for s in record.spans)
    # the selection, made in UTF-16 DOM units after three emoji, arrives as Python's span
    assert _span(word, label) in spans
    # and the pre-annotations went through the editor and back unchanged
    assert spans == sorted(_span(p, lab) for p, lab in [*PREDICTED, SELECTED])
