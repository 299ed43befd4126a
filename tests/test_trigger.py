"""The auto trigger as a table: each row a sequence of events on a fake clock and whether
a round is due after it (backend.loop.trigger.AutoTrigger)."""

from __future__ import annotations

import pytest

from backend.loop.trigger import AutoTrigger

# events: ("change", t) a stored change; ("count", changes, t) the store counted;
# ("consume", counter) a round took its snapshot at that counter. `due` is asked at `now`.
ROWS = [
    ("no change, nothing due", [], 100.0, False, False),
    ("changes not settled yet", [("change", 0.0), ("change", 1.0)], 5.0, False, False),
    ("settled: count first", [("change", 0.0)], 20.0, False, True),
    ("settled and enough", [("change", 0.0), ("count", 3, 20.0)], 20.0, True, False),
    ("settled, too few: dropped", [("change", 0.0), ("count", 2, 20.0)], 25.0, False, False),
    (
        "a change after the count is counted again",
        [("change", 0.0), ("count", 2, 20.0), ("change", 21.0)],
        40.0,
        False,
        True,
    ),
    (
        "overdue in a steady stream",
        [*[("change", float(t)) for t in range(0, 41, 5)], ("count", 9, 41.0)],
        41.0,
        True,
        False,
    ),
    (
        "a steady stream before overdue is not settled",
        [("change", float(t)) for t in range(0, 31, 5)],
        31.0,
        False,
        False,
    ),
    (
        "consumed by a round: counted again, from the snapshot",
        [("change", 0.0), ("count", 3, 20.0), ("consume", 50)],
        20.0,
        False,
        True,
    ),
    (
        "a skipped round consumes its trigger: recount finds nothing new",
        [("change", 0.0), ("count", 3, 20.0), ("consume", 50), ("count", 0, 20.5)],
        21.0,
        False,
        False,
    ),
    (
        "changes during a round still count after it",
        [("change", 0.0), ("count", 3, 20.0), ("consume", 50), ("count", 4, 30.0)],
        30.0,
        True,
        False,
    ),
    (
        "a round that failed before its snapshot drops the waiting changes",
        [("change", 0.0), ("count", 3, 20.0), ("consume", None)],
        20.0,
        False,
        False,
    ),
]


@pytest.mark.parametrize(("name", "events", "now", "due", "needs_count"), ROWS)
def test_auto_trigger(name, events, now, due, needs_count):
    trigger = AutoTrigger(every=3, debounce=10.0, consumed=40)
    for event in events:
        if event[0] == "change":
            trigger.observe(None, event[1])
        elif event[0] == "count":
            trigger.observe(event[1], event[2])
        else:
            trigger.consume(event[1])
    assert trigger.due(now) is due, name
    assert trigger.needs_count(now) is needs_count, name


def test_consume_never_moves_back_and_off_means_off():
    trigger = AutoTrigger(every=3, debounce=0.0, consumed=10)
    trigger.consume(7)
    assert trigger.consumed == 10
    off = AutoTrigger(every=0, debounce=0.0)
    off.observe(None, 0.0)
    off.observe(100, 1.0)
    assert not off.due(5.0) and not off.needs_count(5.0)


def test_a_skipped_round_does_not_loop():
    """The bug: a round skipped as "nothing to train on" left the changes waiting, so the
    trigger fired at every poll. Polling the trigger as the worker does now fires once."""
    trigger = AutoTrigger(every=1, debounce=0.05, consumed=0)
    store_counter, fired = 5, 0
    trigger.observe(None, 0.0)
    for tick in range(1, 200):
        now = tick * 0.05
        if trigger.needs_count(now):
            trigger.observe(store_counter - trigger.consumed, now)
        if trigger.due(now):
            fired += 1
            trigger.consume(store_counter)  # the round is skipped: nothing to train on
    assert fired == 1
