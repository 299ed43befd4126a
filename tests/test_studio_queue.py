"""skillloop's Data Manager tab (labeling/studio/queue.py), against a recorded Label
Studio: created once, updated in place, made the first tab, and nothing asked of Label
Studio when it is already so. The browser test (test_studio_label_all.py) shows what the
tab does to "Label Tasks As Displayed" on a real Label Studio."""

from __future__ import annotations

from labeling.studio.queue import RANKED_ORDERING, RANKED_TAB_TITLE, rank_tab


class RecordedStudio:
    """Answers GET /api/dm/views with `tabs`, records every other call."""

    def __init__(self, tabs: list[dict]):
        self.tabs = tabs
        self.calls: list[tuple] = []

    def request(self, method, path, params=None, json=None):
        if method == "GET":
            return self.tabs
        self.calls.append((method, path, json))
        return {"id": 9} if method == "POST" and path == "/api/dm/views" else None


def _tab(tab_id: int, title: str, **data) -> dict:
    return {"id": tab_id, "project": 3, "data": {"title": title, **data}}


def test_a_project_without_the_tab_gets_it_first():
    studio = RecordedStudio([_tab(4, "Default", hiddenColumns={"explore": []})])
    assert rank_tab(studio, 3) == 9
    created, ordered = studio.calls
    assert created[:2] == ("POST", "/api/dm/views")
    assert created[2]["data"]["title"] == RANKED_TAB_TITLE
    assert created[2]["data"]["ordering"] == RANKED_ORDERING == ["tasks:predictions_score"]
    assert ordered == ("POST", "/api/dm/views/order", {"project": 3, "ids": [9, 4]})


def test_the_tab_is_updated_in_place_keeping_a_users_filters_and_moved_first():
    filters = {"conjunction": "and", "items": [{"filter": "filter:tasks:id"}]}
    ours = _tab(7, RANKED_TAB_TITLE, ordering=["-tasks:id"], filters=filters, gridWidth=4)
    studio = RecordedStudio([_tab(4, "Default"), ours, _tab(5, "mine")])
    assert rank_tab(studio, 3) == 7
    patched, ordered = studio.calls
    assert patched[:2] == ("PATCH", "/api/dm/views/7")
    # without "filters" Label Studio keeps the tab's own; the rest of its data stays
    assert patched[2]["data"] == {
        "title": RANKED_TAB_TITLE,
        "ordering": RANKED_ORDERING,
        "gridWidth": 4,
    }
    assert ordered == ("POST", "/api/dm/views/order", {"project": 3, "ids": [7, 4, 5]})


def test_a_tab_already_first_and_ordered_asks_nothing_more():
    studio = RecordedStudio([_tab(7, RANKED_TAB_TITLE, ordering=RANKED_ORDERING), _tab(4, "x")])
    assert rank_tab(studio, 3) == 7
    assert studio.calls == []
