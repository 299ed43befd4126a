"""Links in a real browser: a post pre-annotated and linked by a real `skillloop serve`
through Label Studio's own /predict call, opened in Label Studio's labelling page in
headless Chromium. Each region, selected, shows its own candidates, best first with their
own scores, the linked entry ticked, in view without scrolling, and its details name the
entry; one link is replaced by an entry found with the search of the whole taxonomy (one
that was not among its candidates) and one by a new entry typed in; submitted, the store
holds exactly those.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
from service_helpers import keyword_model
from studio_helpers import serve_backend, stored_annotation, wait_for, wait_published
from test_link_studio import linked_project

from labeling.studio.browser import (
    INSTALL_HINT,
    chromium,
    click,
    find_chromium,
    open_task,
    press_enter,
    save_screenshot,
    submit,
    type_text,
)

pytestmark = [pytest.mark.studio, pytest.mark.slow]

POST = "We use python and sql with docker every day"
KEYWORDS = {"python": "B-TECHNOLOGY", "sql": "B-TECHNOLOGY", "docker": "B-TECHNOLOGY"}
TAXONOMY_CSV = """id,preferred_label,alt_labels
py,python,python programming
sql,sql,structured query language
k8s,kubernetes,container orchestration|k8s
tf,terraform,infrastructure as code
git,git,version control|source control
"""
TOP_K = 2
DOCS_SHOT = Path(__file__).parents[1] / "docs" / "studio-link.png"

# Select a region by its text (a click on its highlight), then read or press the link
# control's choices: the radio labels the page shows (not display:none).
SELECT_REGION_JS = """((text) => {
  const el = [...document.querySelectorAll('span.htx-highlight')]
      .find(e => e.textContent === text);
  if (!el) return false;
  el.dispatchEvent(new MouseEvent('click', {bubbles: true}));
  return true;
})"""
CHOICES_JS = """(() => [...document.querySelectorAll('.lsf-choice')]
  .filter(c => c.offsetParent !== null)
  .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
  .map(c => ({text: c.innerText.trim(), checked: !!c.querySelector('input:checked'),
              inView: c.getBoundingClientRect().bottom <= window.innerHeight}))
)()"""
PICK_JS = """((start) => {
  const c = [...document.querySelectorAll('.lsf-choice')]
      .filter(c => c.offsetParent !== null)
      .find(c => c.textContent.startsWith(start));
  if (!c) return false;
  c.querySelector('input').click();
  return true;
})"""
# the region's details (the side panel): the results it holds, as the editor writes them
DETAILS_JS = """(() => [...document.querySelectorAll('[class*="region-meta__value"]')]
  .map(e => e.textContent))()"""
# the link search: a per-region Taxonomy (antd TreeSelect) of the selected region
SEARCH_BOX = "[...document.querySelectorAll('.htx-taxonomy')].find(e => e.offsetParent)"
SEARCH_INPUT = "document.querySelector('.htx-taxonomy-dropdown input[name=taxonomy-search-input]')"
FOUND_JS = """(() => [...document.querySelectorAll(
    '.htx-taxonomy-dropdown .ant-select-tree-treenode:not([aria-hidden])')]
  .filter(n => n.offsetParent !== null).map(n => n.textContent))()"""
NEW_ENTRY_BOX = "[...document.querySelectorAll('textarea, input')].find(e => e.offsetParent"
NEW_ENTRY_BOX += " && (e.placeholder || '').startsWith('Not in the taxonomy'))"


@pytest.fixture(scope="module")
def browser_available() -> None:
    if find_chromium() is None:
        pytest.skip(f"chromium not found on PATH: {INSTALL_HINT}")


def _choices_of(tools, region_text: str) -> list[dict]:
    assert tools.evaluate(f"({SELECT_REGION_JS})({json.dumps(region_text)})")
    shown = wait_for(
        f"the link choices of {region_text!r}", lambda: tools.evaluate(CHOICES_JS), 10, 0.3
    )
    # the editor appends each choice's hotkey hint ("[5]") to its text
    return [{**c, "text": re.sub(r"\[\w+\]$", "", c["text"])} for c in shown]


def _pick(tools, start: str) -> None:
    assert tools.evaluate(f"({PICK_JS})({json.dumps(start)})"), start
    time.sleep(0.3)


def _label_and_score(choice: dict) -> tuple[str, float]:
    """("python", 1.0) from "python 1.00 · py"."""
    label, score = re.match(r"^(.*?) (\d\.\d\d) ", choice["text"]).groups()  # type: ignore[union-attr]
    return label, float(score)


def _search_and_pick(tools, typed: str, label: str, shots: Path) -> list[str]:
    """Open the selected region's link search, type `typed`, tick the entry `label`;
    returns what the search listed."""
    click(tools, f"{SEARCH_BOX}?.querySelector('.ant-select-selector')")
    wait_for("the search box", lambda: tools.evaluate(f"!!{SEARCH_INPUT}"), 10, 0.3)
    tools.evaluate(f"{SEARCH_INPUT}.focus()")
    type_text(tools, typed)
    found = wait_for(
        f"entries found for {typed!r}",
        lambda: (f := tools.evaluate(FOUND_JS)) and all(typed in t or label in t for t in f) and f,
        10,
        0.3,
    )
    save_screenshot(tools, shots / "link-task-search.png")
    node = (
        "[...document.querySelectorAll('.htx-taxonomy-dropdown .ant-select-tree-treenode')]"
        f".find(n => n.offsetParent && n.textContent === {json.dumps(label)})"
        "?.querySelector('.ant-select-tree-checkbox')"
    )
    click(tools, node)
    time.sleep(0.3)
    return found


def test_each_span_shows_its_own_candidates_and_any_entry_can_be_found_or_added(
    browser_available, studio, tmp_path, tiny_encoder
):
    from labeling.studio.client import StudioClient
    from labeling.studio.links import entry_id_of
    from labeling.studio.login import login_session

    model = keyword_model(tmp_path / "keyword-model", KEYWORDS)
    project_dir = linked_project(
        tmp_path, model, tiny_encoder, "linkbrowser", TAXONOMY_CSV, top_k=TOP_K
    )
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
            "the linked prediction, the candidates and the search in the task",
            lambda: [
                t
                for t in client.tasks(ref.id)
                if t["predictions"]
                and t["data"].get("link_choices")
                and t["data"].get("link_search")
            ],
            60,
        )
        links = {
            r["value"]["text"]: entry_id_of(r["value"]["choices"][0])
            for r in task["predictions"][0]["result"]
            if r["from_name"] == "link"
        }
        assert links == {"python": "py", "sql": "sql", "docker": "no match"}
        assert task["data"]["link_search"] == f"{backend_url}/taxonomy"

        session = login_session(studio.url, studio.username, studio.password)
        with chromium(session.cookies.get_dict(), studio.url) as tools:
            page = f"{studio.url}/projects/{ref.id}/data?task={task['id']}"
            drawn = open_task(tools, page, wait_s=120)  # a loaded machine draws slowly
            assert [h.text for h in drawn] == ["python", "sql", "docker"]
            # a selected span: its own TOP_K candidates, best first with their own scores,
            # the linker's choice ticked, then "no match", all in view without scrolling
            shown = _choices_of(tools, "python")
            assert len(shown) == TOP_K + 1 and shown[-1]["text"] == "no match"
            ranked = [_label_and_score(c) for c in shown[:-1]]
            assert ranked[0] == ("python", 1.0) and shown[0]["checked"]
            assert ranked[1][1] <= ranked[0][1] and not shown[1]["checked"]
            assert all(c["inView"] for c in shown)
            details = wait_for("the region's details", lambda: tools.evaluate(DETAILS_JS), 10)
            assert "python [py] for “python” at 7" in details  # the label, not only the id
            save_screenshot(tools, shots / "link-task.png")
            if os.environ.get("SKILLLOOP_UPDATE_DOCS_SHOT"):
                save_screenshot(tools, DOCS_SHOT)
            # another span: its own candidates (not python's), "no match" ticked
            docker = _choices_of(tools, "docker")
            assert len(docker) == TOP_K + 1 and docker[-1] == {**docker[-1], "checked": True}
            candidates = {_label_and_score(c)[0] for c in docker[:-1]}
            # search the whole taxonomy by part of an alternative label for an entry that
            # is not among docker's candidates, and pick it
            wanted = "git" if "git" not in candidates else "terraform"
            typed = "source contr" if wanted == "git" else "as code"
            found = _search_and_pick(tools, typed, wanted, shots)
            assert wanted in found
            save_screenshot(tools, shots / "link-task-searched.png")
            # a span whose entry the taxonomy lacks: a new entry typed in
            _choices_of(tools, "sql")
            click(tools, NEW_ENTRY_BOX)
            type_text(tools, "Structured Query Language 2")
            press_enter(tools)  # adds the typed text to the region, as the editor's form does
            time.sleep(0.5)
            save_screenshot(tools, shots / "link-task-corrected.png")
            submit(tools)
            try:
                record = stored_annotation(state / "linkbrowser")
            finally:
                save_screenshot(tools, shots / "link-task-submitted.png")
                print((tmp_path / "state-backend.log").read_text()[-3000:])

    got = {s.text: (s.taxonomy_id, s.taxonomy_label, s.link_status) for s in record.spans}
    entry_id = {"git": "git", "terraform": "tf"}[wanted]
    assert got == {
        "python": ("py", "python", "confirmed"),
        "sql": ("new:structured query language 2", "Structured Query Language 2", "corrected"),
        "docker": (entry_id, wanted, "corrected"),
    }
