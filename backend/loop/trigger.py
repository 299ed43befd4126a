"""When annotation changes start a round by themselves: a pure state machine with the clock
passed in (no threads, no I/O), so each rule is a row in a table-driven test.

A round is due once `every` annotations have changed (inserted, really updated or
deleted: the store's `changes_since(consumed)`) since the snapshot of the last round, and
the changes are settled: no change for `debounce` seconds, or MAX_WAIT_FACTOR x debounce
(at least that many seconds) since the first of them, so a steady stream still gets rounds.

The caller reports each change as it is stored (`observe(None, now)`, no I/O), and
counts the changes in the store only when `needs_count(now)` says they have settled
(`observe(store.changes_since(trigger.consumed), now)`, with `now` taken before the
read). Every round started, skipped or failed calls `consume(counter)` with the store's
change counter its snapshot read: from then
on only later changes count, so a round that finds nothing to train on is not retried at
every poll.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_WAIT_FACTOR = 4


@dataclass
class AutoTrigger:
    every: int  # changes per round; 0 turns the trigger off
    debounce: float  # seconds without a change before the changes count
    consumed: int = 0  # the store's change counter at the last round's snapshot
    counted: int | None = None  # annotations changed after `consumed`, last counted ...
    counted_at: float | None = None  # ... at this time (taken before the read)
    first_change: float | None = None  # of the changes not yet settled by a count
    last_change: float | None = None

    def observe(self, changes: int | None, now: float) -> None:
        """A change stored at `now` (`changes` None), or the number of annotations changed
        after `consumed`, counted in the store at `now`."""
        if changes is None:
            if self.first_change is None:
                self.first_change = now
            self.last_change = now
            return
        self.counted, self.counted_at = changes, now
        counted_all = self.last_change is not None and self.last_change <= now
        if counted_all and not self._enough():
            self.first_change = self.last_change = None  # too few: wait for more changes

    def settled(self, now: float) -> bool:
        """Changes are waiting and quiet (or overdue) enough to count them."""
        if self.every <= 0 or self.last_change is None or self.first_change is None:
            return False
        quiet = now - self.last_change >= self.debounce
        overdue = now - self.first_change >= MAX_WAIT_FACTOR * max(self.debounce, 1.0)
        return quiet or overdue

    def needs_count(self, now: float) -> bool:
        """Settled changes that the last count did not include: read the store's counter."""
        if not self.settled(now):
            return False
        return self.counted_at is None or self.counted_at < (self.last_change or 0.0)

    def due(self, now: float) -> bool:
        """A round should start now."""
        return self.settled(now) and not self.needs_count(now) and self._enough()

    def consume(self, counter: int | None = None) -> None:
        """A round took its snapshot at the store's change counter `counter`: changes up to
        it are spent, later ones are counted again (a round may be due at once). None (a
        round that failed before its snapshot): the waiting changes are dropped."""
        if counter is None:
            self.first_change = self.last_change = None
        else:
            self.consumed = max(self.consumed, counter)
        self.counted = self.counted_at = None

    def _enough(self) -> bool:
        return self.counted is not None and self.counted >= self.every
