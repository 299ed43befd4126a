"""Screenshot a pre-annotated task in Label Studio's labelling page with headless Chromium,
and check that its spans are drawn in the labels' colours.

    .venv/bin/python benchmarks/screenshot_task.py --url http://127.0.0.1:8081 \
        --out docs/studio-task.png [--project-id N [--task-id M]]

With --project-id it shoots the given task, else the one Label Studio serves next (with
the project's current model version's predictions). Without it, it creates (or reuses) a
project "skillloop screenshot" holding one post from projects/linkedin-skills/gold.jsonl,
imported with its gold spans as a prediction: what an annotator sees when a post arrives
pre-annotated. Logging in is the form login of
labeling.studio.client; the session cookie reaches Chromium over its DevTools protocol, spoken
here with a minimal WebSocket client, so nothing beyond Debian's chromium is needed.

Checks (exit code 1 if one fails): Label Studio drew one highlight per region; inside each
highlight's box the pixels are tinted with that region's label colour (closer to it than
to any other label's colour).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labeling.studio.client import StudioClient, login_session  # noqa: E402
from labeling.studio.config import parse_config  # noqa: E402
from labeling.studio.tasks import spans_to_regions  # noqa: E402

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
]
PROJECT = Path(__file__).resolve().parents[1] / "projects" / "linkedin-skills"
TITLE = "skillloop screenshot"


class DevTools:
    """Just enough of a WebSocket client (RFC 6455, text frames) to drive Chromium."""

    def __init__(self, ws_url: str):
        host_port, path = ws_url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += self.sock.recv(4096)
        if b" 101 " not in reply.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"DevTools refused the WebSocket: {reply[:200]!r}")
        self.buffer = reply.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def _send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        header = bytes([0x81])
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise RuntimeError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _receive(self) -> str:
        parts = []
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            parts.append(self._read(length))
            if first & 0x80:  # FIN: the last fragment
                return b"".join(parts).decode()


def prepare_task(client: StudioClient) -> tuple[int, int, list[dict]]:
    """A project holding one gold post, imported with its spans as a prediction."""
    xml = (PROJECT / "labeling_config.xml").read_text()
    config = parse_config(xml)
    doc = _sample_post()
    regions = spans_to_regions(doc.spans, config, doc.text)
    ref = client.ensure_project(TITLE, xml)
    tasks = client.tasks(ref.id)
    if not tasks:
        prediction = {"result": regions, "score": 0.5, "model_version": "gold"}
        task = {
            "data": {config.value_key: doc.text, "post_id": doc.id},
            "predictions": [prediction],
        }
        client.ls.projects.import_tasks(id=ref.id, request=[task], return_task_ids=True)
        tasks = client.tasks(ref.id)
    task = tasks[0]
    return ref.id, task["id"], task["predictions"][0]["result"]


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


def screenshot(url: str, cookies: dict, page: str, out: Path, wait_s: float) -> list[dict]:
    """Load `page` logged in, wait for the highlights, save a PNG; the highlights' boxes."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium")
    port = _free_port()
    profile = tempfile.mkdtemp(prefix="skillloop-chromium-")
    process = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tools = DevTools(_page_socket(port))
        for name, value in cookies.items():
            tools.call("Network.setCookie", name=name, value=value, url=url)
        tools.call("Page.enable")
        tools.call("Page.navigate", url=page)
        boxes: list[dict] = []
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            boxes = tools.evaluate(HIGHLIGHTS_JS) or []
            if boxes:
                break
            time.sleep(1.0)
        time.sleep(2.0)  # let the label colours and fonts settle after the first paint
        boxes = tools.evaluate(HIGHLIGHTS_JS) or []
        shot = tools.call("Page.captureScreenshot", format="png")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        return boxes
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


# Label Studio draws a region over text as span.htx-highlight (in the page or an iframe).
HIGHLIGHTS_JS = """(() => {
  const docs = [document, ...[...document.querySelectorAll('iframe')]
      .map(f => { try { return f.contentDocument } catch (e) { return null } }).filter(Boolean)];
  const out = [];
  for (const doc of docs) {
    const frame = doc === document ? {left: 0, top: 0}
        : [...document.querySelectorAll('iframe')].find(f => f.contentDocument === doc)
            .getBoundingClientRect();
    for (const el of doc.querySelectorAll('span.htx-highlight')) {
      for (const r of el.getClientRects()) {
        out.push({text: el.textContent, left: r.left + frame.left, top: r.top + frame.top,
                  width: r.width, height: r.height,
                  background: getComputedStyle(el).backgroundColor});
      }
    }
  }
  return out;
})()"""


def check_colours(png: Path, boxes: list[dict], regions: list[dict], colours: dict) -> list[str]:
    """Problems found: each region's text must sit in a box tinted with its label's colour."""
    from PIL import Image

    image = Image.open(png).convert("RGB")
    problems = []
    if len(boxes) < len(regions):
        problems.append(f"{len(boxes)} highlight boxes drawn for {len(regions)} regions")
    palette = {label: _rgb(hex_colour) for label, hex_colour in colours.items()}
    checked = 0
    for region in regions:
        label = region["value"]["labels"][0]
        text = region["value"]["text"]
        # a span across a line break is drawn as one highlight per line: check the first
        pieces = {text.strip(), text.strip().splitlines()[0].strip()}
        box = next((b for b in boxes if b["text"].strip() in pieces and b["width"] > 2), None)
        if box is None:
            problems.append(f"no highlight drawn for {text!r} ({label})")
            continue
        tint = _mean_tint(image, box)
        if tint is None:
            continue  # scrolled out of the viewport
        nearest = min(palette, key=lambda name: _hue_distance(tint, palette[name]))
        checked += 1
        if nearest != label:
            problems.append(f"{text!r} is tinted like {nearest}, not {label} (mean {tint})")
    if not checked:
        problems.append("no highlight inside the screenshot to check colours on")
    print(f"{len(boxes)} highlight boxes, {checked} regions colour-checked")
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _page_socket(port: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("Chromium's DevTools did not answer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("LABEL_STUDIO_URL", "http://127.0.0.1:8081")
    )
    parser.add_argument("--username", default="admin@example.com")
    parser.add_argument("--password", default="skillloop-admin")
    token = os.environ.get("LABEL_STUDIO_API_KEY", "skillloop-demo-token")
    parser.add_argument("--api-key", default=token)
    parser.add_argument("--project-id", type=int)
    parser.add_argument("--task-id", type=int)
    parser.add_argument("--out", type=Path, default=Path("docs/studio-task.png"))
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the page")
    parser.add_argument(
        "--start-studio",
        action="store_true",
        help="start the local Label Studio (state dir, as `skillloop studio start`) if needed "
        "and stop it afterwards",
    )
    args = parser.parse_args()
    if not args.start_studio:
        return run(args)
    from labeling.studio.server import StudioSettings, start, status, stop

    settings = StudioSettings.from_env()
    started = not status(settings)["running"]
    start(settings)
    args.url, args.api_key = settings.url, settings.token
    args.username, args.password = settings.username, settings.password
    try:
        return run(args)
    finally:
        if started:
            stop(settings)


def run(args) -> int:
    url = args.url.rstrip("/")
    client = StudioClient(url, args.api_key)
    if args.project_id:
        # the given task, else the one Label Studio serves an annotator next
        project_id = args.project_id
        task_id = args.task_id or (client.next_task(project_id) or {}).get("id")
        if task_id is None:
            raise ValueError(f"project {project_id} has no task left to label")
        task = client.request("GET", f"/api/tasks/{task_id}")
        version = client.project(project_id).get("model_version")
        predictions = task.get("predictions") or [{}]
        current = [p for p in predictions if p.get("model_version") == version] or predictions
        regions = current[0].get("result") or []
    else:
        project_id, task_id, regions = prepare_task(client)
    xml = client.project(project_id)["label_config"]
    colours = {label.value: label.background for label in parse_config(xml).labels}
    session = login_session(url, args.username, args.password)
    page = f"{url}/projects/{project_id}/data?task={task_id}"
    started = time.monotonic()
    boxes = screenshot(url, session.cookies.get_dict(), page, args.out, args.wait)
    print(f"screenshot of {page} -> {args.out} in {time.monotonic() - started:.0f} s")
    problems = check_colours(args.out, boxes, regions, colours)
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: {len(regions)} predicted spans drawn in their label colours")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
