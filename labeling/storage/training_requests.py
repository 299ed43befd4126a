"""Training requests: Start Training asked of a serving host that does not train is
recorded here, in the database the training host (`skillloop worker`) polls. A counter row
of the project (`training_requests`), in the database a `labeling.store.Store` opened."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from labeling.storage.engine import Database
from labeling.storage.schema import counter_table, create_counter

TRAINING_REQUESTS = "training_requests"  # the counter's name


class TrainingRequests:
    """Project `key`'s requests for a round, counted."""

    def __init__(self, db: Database, key: str):
        self.db = db
        self.key = key

    def request(self) -> int:
        """Record one request for a round; returns how many were recorded in all."""
        with self.db.write() as conn:
            conn.execute(create_counter(conn, self.key, TRAINING_REQUESTS))
            conn.execute(_BUMP, {"b_key": self.key})
            return int(conn.execute(_COUNT, {"b_key": self.key}).scalar_one())

    def count(self) -> int:
        """How many rounds were requested through `request` (0: none yet)."""
        with self.db.read() as conn:
            return int(conn.execute(_COUNT, {"b_key": self.key}).scalar_one_or_none() or 0)


_COUNT = select(counter_table.c.value).where(
    counter_table.c.project_key == bindparam("b_key"), counter_table.c.name == TRAINING_REQUESTS
)
_BUMP = (
    update(counter_table)
    .where(
        counter_table.c.project_key == bindparam("b_key"),
        counter_table.c.name == TRAINING_REQUESTS,
    )
    .values(value=counter_table.c.value + 1)
)
