"""The editor's taxonomy search with all of ESCO in it, in headless Chromium: how long the
13,412 entries (96,135 labels) take to load into the link search, and how long typing
takes to list what matches.

Usage:
    python -m benchmarks.link_search_browser [--query spreadsheet]

A throwaway Label Studio (temp data dir, removed afterwards), a project with the link
controls, one task with a region and `link_search` pointing at a local HTTP server that
answers ESCO's items as the backend's GET /taxonomy does (labeling.studio.links.
taxonomy_items, gzipped, CORS). Prints the CPU, the payload, and the timings.
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks.screenshot_task import throwaway_studio
from labeling.studio.browser import chromium, click, open_task, type_text
from labeling.studio.client import StudioClient
from labeling.studio.config import LabelSpec, build_config, parse_config
from labeling.studio.links import taxonomy_items
from labeling.studio.login import login_session
from labeling.studio.server import free_port
from training.cpu import cpu_info
from training.taxonomy import load_esco

TEXT = "We run kubernetes clusters"
SEARCH_BOX = "[...document.querySelectorAll('.htx-taxonomy')].find(e => e.offsetParent)"
SEARCH_INPUT = "document.querySelector('.htx-taxonomy-dropdown input[name=taxonomy-search-input]')"
FOUND_JS = """(() => [...document.querySelectorAll(
    '.htx-taxonomy-dropdown .ant-select-tree-treenode:not([aria-hidden])')]
  .filter(n => n.offsetParent !== null).map(n => n.textContent))()"""


def serve(body: bytes) -> str:
    packed = gzip.compress(body, 6)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.send_header("Content-Length", str(len(packed)))
            self.end_headers()
            self.wfile.write(packed)

        def log_message(self, *args):
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}/taxonomy"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--query", default="spreadsheet")
    args = parser.parse_args()
    print(cpu_info().line(), flush=True)
    taxonomy = load_esco()
    body = json.dumps({"items": taxonomy_items(taxonomy)}, ensure_ascii=False).encode()
    print(f"{taxonomy.summary()}; {len(body):,} bytes of JSON", flush=True)
    url = serve(body)
    xml = build_config([LabelSpec("Skill")], link=True)
    config = parse_config(xml)
    with throwaway_studio() as studio:
        client = StudioClient(studio.url, studio.token)
        ref = client.ensure_project("skillloop link search", xml)
        start = TEXT.index("kubernetes")
        region = {
            "id": "r1",
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "labels",
            "value": {"start": start, "end": start + 10, "text": "kubernetes", "labels": ["Skill"]},
        }
        task = {
            "data": {"text": TEXT, "link_choices": [], "link_search": url},
            "predictions": [{"result": [region], "score": 0.5, "model_version": "x"}],
        }
        client.ls.projects.import_tasks(id=ref.id, request=[task], return_task_ids=True)
        task_id = client.tasks(ref.id)[0]["id"]
        session = login_session(studio.url, studio.username, studio.password)
        with chromium(session.cookies.get_dict(), studio.url) as tools:
            started = time.perf_counter()
            open_task(tools, f"{studio.url}/projects/{ref.id}/data?task={task_id}", 120)
            print(f"task drawn in {time.perf_counter() - started:.1f} s", flush=True)
            tools.evaluate(
                "[...document.querySelectorAll('span.htx-highlight')][0]"
                ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
            )
            started = time.perf_counter()
            tools.wait_for(f"!!{SEARCH_BOX}?.querySelector('.ant-select-selector')", 120, 0.2)
            loaded = time.perf_counter() - started
            print(f"search box ready (items loaded) {loaded:.1f} s after selecting", flush=True)
            started = time.perf_counter()
            click(tools, f"{SEARCH_BOX}.querySelector('.ant-select-selector')")
            tools.wait_for(f"!!{SEARCH_INPUT}", 60, 0.1)
            print(f"dropdown open in {time.perf_counter() - started:.1f} s", flush=True)
            tools.evaluate(f"{SEARCH_INPUT}.focus()")
            print(f"unfiltered, first rows: {tools.wait_for(FOUND_JS, 60, 0.1)[:5]}", flush=True)
            started = time.perf_counter()
            type_text(tools, args.query)
            found = tools.wait_for(
                # filtered: every row matches, or is the entry of the row under it that does
                f"(() => {{ const q = {json.dumps(args.query.lower())}; const f = {FOUND_JS}; "
                "const hit = t => (t || '').toLowerCase().includes(q); "
                "return f.length && f.every((t, i) => hit(t) || hit(f[i + 1])) ? f : null })()",
                120,
                0.1,
            )
            # the search waits 300 ms after the last keystroke before filtering
            print(
                f"typed {args.query!r}: listed in {time.perf_counter() - started:.1f} s", flush=True
            )
            print(f"first rows listed: {(found or ['nothing'])[:8]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
