"""The queue "Label All Tasks" serves: a Data Manager tab ordered by prediction score.

Label Studio 1.23's editor never takes the project's sampling setting: its label stream
calls `POST /api/dm/actions?id=next_task` with the selected tab's `ordering`, `filters`
and `selectedItems`, and any of them (`selectedItems` is always a non-empty dict) makes
`get_next_task` serve a Data Manager queue: the first unlabelled task in the tab's order
(`projects/functions/next_task.py`), by task id when the tab has no ordering. The Data
Manager opens the first tab (`views` ordered by `order`, then id) when the URL names none.

So skillloop keeps one tab of its own, titled RANKED_TAB_TITLE, ordered by
`tasks:predictions_score` ascending (the average score of the predictions of the
project's `model_version`, tasks without one last), and makes it the first tab. Found by
title, so every call updates the same tab; a user's own filters on it are kept, only its
ordering is restored. In that queue Label Studio consults no task locks (it only sets
them), so a task an annotator opened and left is served to the next annotator too; a
skipped task goes back to the others (the default "Requeue for others"). The facts, read
in Label Studio 1.23.2's source and measured in headless Chromium, are in docs/studio.md.
"""

from __future__ import annotations

import time
from typing import Any, Protocol


class StudioClient(Protocol):
    """What the queue asks of labeling.studio.client.StudioClient (which calls
    `rank_tab` from `publish_model`): raw API calls and a project's ML backends."""

    def request(self, method: str, path: str, **kwargs) -> Any: ...

    def backends(self, project_id: int) -> list[Any]: ...


RANKED_TAB_TITLE = "skillloop: most useful first"
RANKED_ORDERING = ["tasks:predictions_score"]  # ascending: the lowest score first


def views(client: StudioClient, project_id: int) -> list[dict]:
    """The project's Data Manager tabs, in the order the Data Manager shows them."""
    found = client.request("GET", "/api/dm/views", params={"project": project_id}) or []
    return [v for v in found if v.get("project") == project_id]


def rank_tab(client: StudioClient, project_id: int) -> int:
    """Create or update skillloop's tab (ordered by prediction score, lowest first) and
    make it the project's first tab; its id. Idempotent: one tab, whatever the calls."""
    tabs = views(client, project_id)
    ours = [v for v in tabs if (v.get("data") or {}).get("title") == RANKED_TAB_TITLE]
    if not ours:
        body = {
            "project": project_id,
            "data": {
                "title": RANKED_TAB_TITLE,
                "ordering": RANKED_ORDERING,
                "filters": {"conjunction": "and", "items": []},
            },
        }
        tab_id = int(client.request("POST", "/api/dm/views", json=body)["id"])
    else:
        tab = ours[0]
        tab_id = int(tab["id"])
        data: dict[str, Any] = dict(tab.get("data") or {})
        if data.get("ordering") != RANKED_ORDERING:
            # Label Studio's update needs `data`; without `filters` it keeps the tab's own
            data = {k: v for k, v in data.items() if k not in ("filters", "selectedItems")}
            data["ordering"] = RANKED_ORDERING
            client.request(
                "PATCH", f"/api/dm/views/{tab_id}", json={"project": project_id, "data": data}
            )
    shown = [int(v["id"]) for v in tabs] + ([] if ours else [tab_id])  # a new tab comes last
    order = [tab_id] + [i for i in shown if i != tab_id]
    if shown != order:
        client.request("POST", "/api/dm/views/order", json={"project": project_id, "ids": order})
    return tab_id


def wait_for_connection(client: StudioClient, project_id: int, timeout: float = 30.0) -> None:
    """Label Studio calls a backend's /setup before it saves a new connection, and fetches
    predictions only from a backend it has saved: wait until it lists one for the project."""
    deadline = time.monotonic() + timeout
    while not client.backends(project_id):
        if time.monotonic() > deadline:
            raise RuntimeError(f"Label Studio lists no ML backend for project {project_id}")
        time.sleep(1.0)
