"""Links in a real browser: a post pre-annotated and linked by a real `skillloop serve`
through Label Studio's own /predict call, opened in Label Studio's labelling page in
headless Chromium. Each region, selected, shows its candidates with the linked entry
chosen; one link is corrected to another candidate and one marked "no match" with the
editor's own radio buttons, submitted, and arrives in the backend's store as exactly that.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from service_helpers import CONFIG_XML, keyword_model
from studio_helpers import serve_backend, wait_for, wait_published
from test_link_studio import linked_project

from labeling.studio.browser import (
    INSTALL_HINT,
    chromium,
    find_chromium,
    open_task,
    save_screenshot,
    submit,
)

pytestmark = [pytest.mark.studio, pytest.mark.slow]

POST = "We use python and sql with docker every day"
KEYWORDS = {"python": "B-TECHNOLOGY", "sql": "B-TECHNOLOGY", "docker": "B-TECHNOLOGY"}
DOCS_SHOT = Path(__file__).parents[1] / "docs" / "studio-link.png"

# Select a region by its text (a click on its highlight), then read or press the link
# control's choices: the radio labels inside the per-region Choices.
SELECT_REGION_JS = """((text) => {
  const el = [...document.querySelectorAll('span.htx-highlight')]
      .find(e => e.textContent === text);
  if (!el) return false;
  el.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  return true;
})"""
CHOICES_JS = """(() => [...document.querySelectorAll('.lsf-choice')]
  .filter(c => c.offsetParent !== null)
  .map(c => ({text: c.textContent, checked: !!c.querySelector('input:checked')})))()"""
PICK_JS = """((start) => {
  const c = [...document.querySelectorAll('.lsf-choice')]
      .filter(c => c.offsetParent !== null)
      .find(c => c.textContent.startsWith(start));
  if (!c) return false;
  c.querySelector('input').click();
  return true;
})"""


@pytest.fixture(scope="module")
def browser_available() -> None:
    if find_chromium() is None:
        pytest.skip(f"chromium not found on PATH: {INSTALL_HINT}")


def _choices_of(tools, region_text: str) -> list[dict]:
    import json

    assert tools.evaluate(f"({SELECT_REGION_JS})({json.dumps(region_text)})")
    shown = wait_for(
        f"the link choices of {region_text!r}", lambda: tools.evaluate(CHOICES_JS), 10, 0.3
    )
    # the editor appends each choice's hotkey hint ("[5]") to its text
    return [{**c, "text": re.sub(r"\[\w+\]$", "", c["text"])} for c in shown]


def _pick(tools, start: str) -> None:
    import json

    assert tools.evaluate(f"({PICK_JS})({json.dumps(start)})"), start
    time.sleep(0.3)


def test_the_editor_shows_each_spans_link_and_a_corrected_link_reaches_the_store(
    browser_available, studio, tmp_path, tiny_encoder
):
    from labeling.state import ProjectState
    from labeling.studio.client import StudioClient, login_session

    assert CONFIG_XML.is_file()
    model = keyword_model(tmp_path / "keyword-model", KEYWORDS)
    project_dir = linked_project(tmp_path, model, tiny_encoder, name="linkbrowser")
    state = tmp_path / "state"
    shots = Path(os.environ.get("SKILLLOOP_SCREENSHOT_DIR") or tmp_path)
    xml = (project_dir / "labeling_config.xml").read_text()
    client = StudioClient(studio.url, studio.token)
    ref = client.ensure_project(f"skillloop links {os.getpid()}", xml)
    # Label Studio refuses a task without the data field its config names
    client.import_tasks(ref.id, [{"text": POST, "post_id": "linked", "link_choices": []}])

    with serve_backend(project_dir, state, studio) as backend_url:
        client.connect_backend(ref.id, backend_url, "skillloop")
        wait_published(backend_url)  # on /setup the backend publishes its model
        client.refresh_predictions(ref.id)
        (task,) = wait_for(
            "the linked prediction and the candidates in the task",
            lambda: [
                t
                for t in client.tasks(ref.id)
                if t["predictions"] and t["data"].get("link_choices")
            ],
            60,
        )
        links = {
            r["value"]["text"]: r["value"]["choices"]
            for r in task["predictions"][0]["result"]
            if r["from_name"] == "link"
        }
        assert links == {"python": ["py"], "sql": ["sql"], "docker": ["no match"]}

        session = login_session(studio.url, studio.username, studio.password)
        with chromium(session.cookies.get_dict(), studio.url) as tools:
            page = f"{studio.url}/projects/{ref.id}/data?task={task['id']}"
            drawn = open_task(tools, page, wait_s=120)  # a loaded machine draws slowly
            assert [h.text for h in drawn] == ["python", "sql", "docker"]
            # what the annotator sees on a selected region: "no match", the post's
            # candidates, and the linked entry chosen
            shown = _choices_of(tools, "python")
            assert shown[0]["text"] == "no match"
            assert [c["text"].split(" for ")[0] for c in shown if c["checked"]] == ["python"]
            assert any(c["text"].startswith("kubernetes") for c in shown) or len(shown) > 2
            save_screenshot(tools, shots / "link-task.png")
            if os.environ.get("SKILLLOOP_UPDATE_DOCS_SHOT"):
                save_screenshot(tools, DOCS_SHOT)
            assert [c["checked"] for c in _choices_of(tools, "docker")][0] is True
            # corrections through the editor's own radio buttons
            _pick(tools, "sql")  # docker -> the entry "sql" (corrected)
            _choices_of(tools, "sql")
            _pick(tools, "no match")  # sql -> no match
            save_screenshot(tools, shots / "link-task-corrected.png")
            submit(tools)
            store = ProjectState(state / "linkbrowser").store()
            try:
                (record,) = wait_for(
                    "the submitted annotation in the backend's store", store.records, 30, 0.5
                )
            finally:
                store.close()

    got = {s.text: (s.taxonomy_id, s.taxonomy_label, s.link_status) for s in record.spans}
    assert got == {
        "python": ("py", "python", "confirmed"),
        "sql": (None, None, "no_match"),
        "docker": ("sql", "sql", "corrected"),
    }
