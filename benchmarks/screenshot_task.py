"""Screenshot a pre-annotated task in Label Studio's labelling page with headless Chromium,
and check that each region is drawn on its own text, in its label's colour.

    .venv/bin/python -m benchmarks.screenshot_task [--out PNG]
    .venv/bin/python -m benchmarks.screenshot_task --project-id N [--task-id M] \
        [--url URL | --start-studio] [--out PNG]

Without --project-id it starts a throwaway Label Studio of its own (a temp data dir on a
free port, removed afterwards), imports one post from projects/linkedin-skills/gold.jsonl
with its gold spans as a prediction (what an annotator sees when a post arrives
pre-annotated) and shoots it: nothing is created in your Label Studio. With --project-id
it shoots a task that already exists in your Label Studio (the given task, else the one
it serves next, with the project's current model version's predictions) and creates
nothing there; --start-studio starts the state folder's Label Studio for it when it is not
running (as `skillloop studio start`) and stops it afterwards.

The PNG goes to --out, by default `$SKILLLOOP_STATE_DIR/screenshots/studio-task.png`
(`state/` when unset): never into the source tree unless you name a path there.

Checks (exit code 1 if one fails): Label Studio drew one highlight per region, whose text
(read from the editor's DOM) is the region's text; inside each highlight's box the light
pixels are tinted with that region's label colour (closer to it than to any other's).
The browser is driven by labeling.studio.browser (DevTools protocol, nothing beyond
Debian's chromium).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.common import run_benchmark
from labeling.studio.browser import Highlight, chromium, open_task, save_screenshot
from labeling.studio.client import StudioClient
from labeling.studio.config import parse_config
from labeling.studio.login import login_session
from labeling.studio.server import StudioSettings
from labeling.studio.tasks import spans_to_regions
from training.cpu import cpu_info

PROJECT = Path(__file__).resolve().parents[1] / "projects" / "linkedin-skills"
TITLE = "skillloop screenshot"


def default_out() -> Path:
    return (
        Path(os.environ.get("SKILLLOOP_STATE_DIR") or "state") / "screenshots" / "studio-task.png"
    )


@contextmanager
def throwaway_studio() -> Iterator[StudioSettings]:
    """A Label Studio of our own on a free port, in a temp data dir removed afterwards."""
    from labeling.studio.server import free_port, start, stop

    root = Path(tempfile.mkdtemp(prefix="skillloop-screenshot-"))
    settings = StudioSettings.from_env(root, free_port())
    try:
        print(f"starting a throwaway Label Studio on {settings.url} (data: {root})")
        start(settings, timeout=600, quiet=True)
        yield settings
    finally:
        stop(settings)
        shutil.rmtree(root, ignore_errors=True)


def prepare_task(client: StudioClient) -> tuple[int, int, list[dict]]:
    """A project holding one gold post, imported with its spans as a prediction."""
    xml = (PROJECT / "labeling_config.xml").read_text()
    config = parse_config(xml)
    doc = _sample_post()
    regions = spans_to_regions(doc.spans, config, doc.text)
    ref = client.ensure_project(TITLE, xml)
    prediction = {"result": regions, "score": 0.5, "model_version": "gold"}
    task = {"data": {config.value_key: doc.text, "post_id": doc.id}, "predictions": [prediction]}
    client.ls.projects.import_tasks(id=ref.id, request=[task], return_task_ids=True)
    task = client.tasks(ref.id)[0]
    return ref.id, task["id"], task["predictions"][0]["result"]


def existing_task(client: StudioClient, project_id: int, task_id: int | None):
    """The given task, else the one Label Studio serves an annotator next, and the regions
    the editor shows on it: its annotation's, else its prediction's by the project's
    current model version."""
    task_id = task_id or (client.next_task(project_id) or {}).get("id")
    if task_id is None:
        raise ValueError(f"project {project_id} has no task left to label")
    task = client.request("GET", f"/api/tasks/{task_id}")
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if annotations:  # the editor opens an annotated task on its annotation
        print(f"task {task_id} is annotated: checking its annotation's regions")
        return project_id, task_id, annotations[-1].get("result") or []
    version = client.project(project_id).get("model_version")
    predictions = task.get("predictions") or [{}]
    current = [p for p in predictions if p.get("model_version") == version] or predictions
    return project_id, task_id, current[0].get("result") or []


def _sample_post():
    """The shortest gold post; before gold exists, a post with the labels' examples marked."""
    import re

    from labeling.project import load_project
    from training.text import Document, Span

    project = load_project(PROJECT)
    gold = project.gold()
    if gold:
        return min(gold, key=lambda d: len(d.text))
    best: Document | None = None
    for post in project.posts():
        spans = []
        for label in project.labels:
            for example in [*label.examples, label.value]:
                for m in re.finditer(rf"\b{re.escape(example)}\b", post.text, re.IGNORECASE):
                    spans.append(Span(m.start(), m.end(), label.value, m.group()))
        spans = sorted({(s.start, s.end): s for s in spans}.values(), key=lambda s: s.start)
        kept = [s for i, s in enumerate(spans) if i == 0 or s.start >= spans[i - 1].end]
        if best is None or len({s.label for s in kept}) > len({s.label for s in best.spans}):
            best = Document(post.text, kept, id=post.id)
    if best is None:
        raise ValueError(f"{PROJECT} has no posts to screenshot")
    return best


def check_drawn(drawn: list[Highlight], regions: list[dict]) -> list[str]:
    """Problems found: one highlight per region, in order, holding the region's text."""
    expected = [r["value"]["text"] for r in sorted(regions, key=lambda r: r["value"]["start"])]
    seen = [h.text for h in drawn]
    if len(seen) != len(expected):
        return [f"{len(seen)} highlights drawn for {len(expected)} regions"]
    # a region across a line break is drawn line by line: compare without the breaks
    return [
        f"region {want!r} is drawn on {got!r}"
        for got, want in zip(seen, expected, strict=True)
        if got.split() != want.split()
    ]


def check_colours(
    png: Path, drawn: list[Highlight], regions: list[dict], colours: dict
) -> list[str]:
    """Problems found: each region's highlight must be tinted with its label's colour."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    palette = {label: _rgb(hex_colour) for label, hex_colour in colours.items()}
    problems, checked = [], 0
    ordered = sorted(regions, key=lambda r: r["value"]["start"])
    for highlight, region in zip(drawn, ordered, strict=False):
        label = region["value"]["labels"][0]
        box = next((b for b in highlight.boxes if b["width"] > 2), None)
        tint = _mean_tint(image, box) if box else None
        if tint is None:
            continue  # scrolled out of the viewport
        nearest = min(palette, key=lambda name: _hue_distance(tint, palette[name]))
        checked += 1
        if nearest != label:
            problems.append(f"{highlight.text!r} is tinted like {nearest}, not {label} ({tint})")
    if not checked:
        problems.append("no highlight inside the screenshot to check colours on")
    print(f"{len(drawn)} highlights, {checked} colour-checked")
    return problems


def _mean_tint(image, box: dict) -> tuple[float, float, float] | None:
    """The mean colour of the box's non-text (light) pixels, where the highlight shows."""
    left, top = int(box["left"]) + 1, int(box["top"]) + 1
    right, bottom = int(box["left"] + box["width"]) - 1, int(box["top"] + box["height"]) - 1
    if left < 0 or top < 0 or right > image.width or bottom > image.height or right <= left:
        return None
    import numpy as np

    pixels = np.asarray(image.crop((left, top, right, bottom)), dtype=float).reshape(-1, 3)
    pixels = pixels[pixels.sum(axis=1) > 300]
    if not len(pixels):
        return None
    return tuple(float(v) for v in pixels.mean(axis=0))  # type: ignore


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = hex_colour.lstrip("#")
    return tuple(int(value[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore


def _hue_distance(tint, colour) -> float:
    """Distance between a pale tint and a full colour: compare their offsets from white."""
    offset = [255 - c for c in tint]
    target = [255 - c for c in colour]
    norm_a = sum(x * x for x in offset) ** 0.5 or 1.0
    norm_b = sum(x * x for x in target) ** 0.5 or 1.0
    return 1.0 - sum(a * b for a, b in zip(offset, target, strict=True)) / (norm_a * norm_b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="with --project-id (default $LABEL_STUDIO_URL or :8081)")
    parser.add_argument("--username", default="admin@example.com")
    parser.add_argument("--password", default="skillloop-admin")
    token = os.environ.get("LABEL_STUDIO_API_KEY", "skillloop-demo-token")
    parser.add_argument("--api-key", default=token)
    parser.add_argument("--project-id", type=int, help="shoot a task of this existing project")
    parser.add_argument("--task-id", type=int)
    parser.add_argument("--out", type=Path, default=None, help=f"PNG (default {default_out()})")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the page")
    parser.add_argument(
        "--start-studio",
        action="store_true",
        help="with --project-id: start the state folder's Label Studio (as `skillloop studio "
        "start`) if needed and stop it afterwards",
    )
    args = parser.parse_args()
    args.out = args.out or default_out()
    if args.project_id is None:
        if args.url or args.start_studio:
            parser.error("--url and --start-studio name your Label Studio: add --project-id")
        with throwaway_studio() as settings:
            return run(args, settings)
    if not args.start_studio:
        args.url = args.url or os.environ.get("LABEL_STUDIO_URL") or "http://127.0.0.1:8081"
        return run(args, None)
    from labeling.studio.server import start, status, stop

    settings = StudioSettings.from_env()
    started = not status(settings)["running"]
    start(settings)
    try:
        return run(args, settings)
    finally:
        if started:
            stop(settings)


def run(args, settings: StudioSettings | None) -> int:
    if settings is not None:
        args.url, args.api_key = settings.url, settings.token
        args.username, args.password = settings.username, settings.password
    url = args.url.rstrip("/")
    client = StudioClient(url, args.api_key)
    if args.project_id is None:
        project_id, task_id, regions = prepare_task(client)
    else:
        project_id, task_id, regions = existing_task(client, args.project_id, args.task_id)
    regions = [r for r in regions if "start" in (r.get("value") or {})]  # text spans
    xml = client.project(project_id)["label_config"]
    colours = {label.value: label.background for label in parse_config(xml).labels}
    session = login_session(url, args.username, args.password)
    page = f"{url}/projects/{project_id}/data?task={task_id}"
    print(cpu_info().line())
    started = time.monotonic()
    with chromium(session.cookies.get_dict(), url) as tools:
        drawn = open_task(tools, page, args.wait)
        save_screenshot(tools, args.out)
    print(f"screenshot of {page} -> {args.out} in {time.monotonic() - started:.0f} s")
    problems = check_drawn(drawn, regions)
    problems += check_colours(args.out, drawn, regions, colours)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: {len(regions)} regions drawn on their own text, in their label colours")
    return 1 if problems else 0


if __name__ == "__main__":
    run_benchmark(main)
