"""Label Studio's labelling page in headless Chromium: what an annotator sees, read back.

Chromium is driven over its DevTools protocol, spoken here with a minimal WebSocket client
(RFC 6455 text frames), so nothing beyond Debian's `chromium` package is needed: no
Playwright, no driver to download. The Label Studio session cookie (from the form login
of `labeling.studio.login.login_session`) is handed to Chromium before the page loads.

Used by `make screenshot` (benchmarks/screenshot_task.py) and by the browser test
(tests/test_studio_browser.py), which reads the drawn highlights' text from the editor's
DOM to check that regions sit on the characters their offsets name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling.studio.server import free_port

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
]
INSTALL_HINT = "apt-get install -y chromium (make test and make screenshot do it)"


def find_chromium() -> str | None:
    """The Chromium executable on PATH (`$SKILLLOOP_CHROMIUM` first), or None."""
    for name in (os.environ.get("SKILLLOOP_CHROMIUM"), "chromium", "chromium-browser"):
        found = name and shutil.which(name)
        if found:
            return found
    return None


class DevTools:
    """Just enough of a WebSocket client (RFC 6455, text frames) to drive Chromium."""

    def __init__(self, ws_url: str, timeout: float = 60.0):
        host_port, path = ws_url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
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

    def call(self, method: str, **params: Any) -> dict:
        """Send one command and return its result (events in between are dropped)."""
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            message = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"JavaScript error: {message}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float, every: float = 0.5) -> Any:
        """Poll `expression` until it is truthy; its value, or None after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value or None
            time.sleep(every)

    def close(self) -> None:
        self.sock.close()

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


@contextmanager
def chromium(
    cookies: Mapping[str, str], url: str, size: tuple[int, int] = (1400, 1000)
) -> Iterator[DevTools]:
    """A headless Chromium holding `cookies` for `url`, on a blank page; closed afterwards."""
    executable = find_chromium()
    if not executable:
        raise FileNotFoundError(f"chromium not found: {INSTALL_HINT}")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="skillloop-chromium-")
    process = subprocess.Popen(
        [
            executable,
            *CHROMIUM_FLAGS,
            f"--window-size={size[0]},{size[1]}",
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tools = None
    try:
        tools = DevTools(_page_socket(port, process))
        for name, value in cookies.items():
            tools.call("Network.setCookie", name=name, value=value, url=url)
        tools.call("Page.enable")
        yield tools
    finally:
        if tools is not None:
            tools.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Highlight:
    """One region as the editor drew it: the text inside its highlight elements, the
    boxes (page pixels) they cover, its colour and label."""

    text: str
    boxes: list[dict]
    background: str
    label: str = ""  # the region's label, as the editor writes it on the element


def open_task(tools: DevTools, page: str, wait_s: float = 60.0) -> list[Highlight]:
    """Load a task's labelling page and wait until the editor has drawn its highlights
    (an empty list when it drew none in `wait_s`)."""
    tools.call("Page.navigate", url=page)
    if tools.wait_for(f"({HIGHLIGHTS_JS}).length > 0", wait_s) is None:
        return []
    time.sleep(1.5)  # the label colours and fonts settle after the first paint
    return highlights(tools)


def highlights(tools: DevTools) -> list[Highlight]:
    """The regions drawn in the text editor now, in document order."""
    return [Highlight(**h) for h in tools.evaluate(HIGHLIGHTS_JS) or []]


def save_screenshot(tools: DevTools, out: Path) -> Path:
    shot = tools.call("Page.captureScreenshot", format="png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    return out


def label_word(tools: DevTools, word: str, label: str) -> str:
    """Make a region the way an annotator does: click the label's button, select the first
    free occurrence of `word` (not inside a drawn region) with a DOM Range, release the
    mouse on it. Returns the text the selection held; raises when the word is not there."""
    found = tools.evaluate(f"({LABEL_WORD_JS})({json.dumps(word)}, {json.dumps(label)})")
    if not found or not found.get("selected"):
        raise ValueError(f"cannot label {word!r} as {label!r}: {found}")
    return found["selected"]


def submit(tools: DevTools) -> None:
    """Press the editor's Submit button (a new annotation) or Update (an existing one)."""
    pressed = tools.evaluate(
        """(() => { const b = document.querySelector(
            'button[aria-label="Submit current annotation"], button[aria-label="submit"],'
            + ' button[aria-label="Update current annotation"]');
          if (!b) return false; b.click(); return true })()"""
    )
    if not pressed:
        raise ValueError("the editor shows no Submit button")


def click(tools: DevTools, element_js: str) -> None:
    """A real mouse click (pressed and released) at the middle of the element that the JS
    expression `element_js` evaluates to: what widgets listening for mousedown need."""
    box = tools.evaluate(
        f"(() => {{ const el = {element_js}; if (!el) return null; el.scrollIntoViewIfNeeded();"
        " const r = el.getBoundingClientRect();"
        " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
    )
    if not box:
        raise ValueError(f"nothing to click: {element_js}")
    for kind in ("mousePressed", "mouseReleased"):
        tools.call(
            "Input.dispatchMouseEvent",
            type=kind,
            x=box["x"],
            y=box["y"],
            button="left",
            clickCount=1,
        )


def type_text(tools: DevTools, text: str) -> None:
    """Type `text` into the focused element, as a keyboard would (React sees input events)."""
    tools.call("Input.insertText", text=text)


def press_enter(tools: DevTools) -> None:
    """The Enter key, down and up, on the focused element (a form's input submits it)."""
    key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
    tools.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
    tools.call("Input.dispatchKeyEvent", type="keyUp", **key)


LABEL_WORD_JS = r"""((word, label) => {
  const button = [...document.querySelectorAll('.lsf-label')]
      .find(el => el.querySelector('.lsf-label__text')?.textContent === label);
  if (!button) return {error: 'no label button ' + label};
  button.click();
  const root = document.querySelector('.lsf-richtext__container');
  if (!root) return {error: 'no text editor on the page'};
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp('(^|[^\\p{L}\\p{N}_])' + escaped + '(?![\\p{L}\\p{N}_])', 'u');
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    if (node.parentElement.closest('.htx-highlight')) continue;
    const match = pattern.exec(node.textContent);
    if (!match) continue;
    const at = match.index + match[1].length;  // UTF-16 units: what DOM Ranges count in
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + word.length);
    const selected = range.toString();
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    const box = range.getBoundingClientRect();
    node.parentElement.dispatchEvent(new MouseEvent('mouseup',
        {bubbles: true, clientX: box.right, clientY: box.bottom}));
    return {selected};
  }
  return {error: 'no free occurrence of ' + word};
})"""


# The editor draws a region over text as span.htx-highlight elements (one per text node it
# covers), all carrying the region's own class `htx-highlight-<region id>`... in the page
# or in an iframe; the region's drawn text is its elements' text joined. Overlapping
# regions nest their elements; each region's text is still its own characters.
HIGHLIGHTS_JS = """(() => {
  const frames = [...document.querySelectorAll('iframe')];
  const docs = [[document, {left: 0, top: 0}]];
  for (const f of frames) {
    try { if (f.contentDocument) docs.push([f.contentDocument, f.getBoundingClientRect()]) }
    catch (e) {}
  }
  const regions = new Map();
  for (const [doc, frame] of docs) {
    for (const el of doc.querySelectorAll('span.htx-highlight')) {
      const own = [...el.classList].find(c => /^htx-highlight-./.test(c)
          && c !== 'htx-highlight-last') || ('element-' + regions.size);
      if (!regions.has(own)) regions.set(own, {text: '', boxes: [],
          background: getComputedStyle(el).backgroundColor,
          label: (el.dataset.label || '').replace(/^\\d+:/, '')});
      const region = regions.get(own);
      // overlapping regions nest: a region's element inside another element of the same
      // region is counted there (its text is in that one's), one inside another region's
      // element is the region's own text (a Knowledge word inside a Skill phrase)
      let outer = el.parentElement && el.parentElement.closest('span.htx-highlight');
      while (outer && !outer.classList.contains(own)) {
        outer = outer.parentElement && outer.parentElement.closest('span.htx-highlight');
      }
      if (outer) continue;
      region.text += el.textContent;
      for (const r of el.getClientRects()) {
        region.boxes.push({left: r.left + frame.left, top: r.top + frame.top,
                           width: r.width, height: r.height});
      }
    }
  }
  return [...regions.values()];
})()"""


def _page_socket(port: int, process: subprocess.Popen, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("Chromium's DevTools did not answer")


def label_all_tasks(
    tools: DevTools, url: str, project_id: int, as_displayed: bool = False, wait_s: float = 60.0
) -> str:
    """Open the project's Data Manager as an annotator does (no tab named: the first tab),
    press "Label All Tasks" (or, `as_displayed`, its menu's "Label Tasks As Displayed")
    and return the text of the post the editor opened."""
    tools.call("Page.navigate", url=f"{url.rstrip('/')}/projects/{project_id}/data")
    if not tools.wait_for(f"({LABEL_BUTTON_JS})() !== null", wait_s):
        raise ValueError("the Data Manager shows no enabled 'Label All Tasks' button")
    if as_displayed:
        tools.evaluate(
            f"({LABEL_BUTTON_JS})().parentElement.querySelector("
            "'button[aria-label=\"Toggle open\"]').click()"
        )
        clicked = tools.wait_for(_click_text_js("Label Tasks As Displayed"), 10, every=0.3)
    else:
        clicked = tools.evaluate(f"(() => {{ ({LABEL_BUTTON_JS})().click(); return true }})()")
    if not clicked:
        raise ValueError("cannot press the label button")
    return _editor_text(tools, wait_s)


def skip_task(tools: DevTools, wait_s: float = 60.0) -> str:
    """Press the editor's Skip button; the text of the post the label stream opens next."""
    before = tools.evaluate(EDITOR_TEXT_JS)
    if not tools.evaluate(_click_js('button[aria-label="skip-task"]')):
        raise ValueError("the editor shows no Skip button")
    return _editor_text(tools, wait_s, other_than=before)


def _editor_text(tools: DevTools, wait_s: float, other_than: str | None = None) -> str:
    differs = "" if other_than is None else f" && t !== {json.dumps(other_than)}"
    text = tools.wait_for(
        f"(() => {{ const t = {EDITOR_TEXT_JS}; return t{differs} ? t : null }})()", wait_s
    )
    if text is None:
        raise ValueError(f"the editor opened no post in {wait_s:.0f} s")
    return text


def _click_js(selector: str) -> str:
    return (
        f"(() => {{ const b = document.querySelector({json.dumps(selector)}); "
        "if (!b) return false; b.click(); return true })()"
    )


def _click_text_js(text: str) -> str:
    return (
        f"(() => {{ const el = [...document.querySelectorAll('[class*=menu-dm__item]')]"
        f".find(e => e.textContent.trim() === {json.dumps(text)}); "
        "if (!el) return false; el.click(); return true })()"
    )


EDITOR_TEXT_JS = "document.querySelector('.lsf-richtext__container')?.textContent"
LABEL_BUTTON_JS = """(() => [...document.querySelectorAll('button')].find(
    b => b.textContent.trim() === 'Label All Tasks' && !b.disabled) ?? null)"""
