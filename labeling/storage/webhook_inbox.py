"""The webhook inbox: bodies too big to read inside Label Studio's 1 s webhook timeout are
kept here as sent (one committed write) and read afterwards by
backend.service.inbox_reader.InboxReader. A row still "pending" after a crash is read at
the next start, so an acknowledged payload is never lost. One project's rows of the
`inbox` table, in the database a `labeling.store.Store` opened."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, insert, select, update

from labeling.storage.annotations import AnnotationStore
from labeling.storage.engine import Database
from labeling.storage.records import AnnotationRecord, check_id, now, store_text, to_row
from labeling.storage.schema import inbox_table

ERROR_CHARS = 2000  # a refusal's reason, as kept


class WebhookInbox:
    """Project `key`'s queued webhook bodies. A body is settled into `annotations` (the
    same project's, in the same database) in one transaction with marking its row read."""

    def __init__(self, db: Database, key: str, annotations: AnnotationStore):
        self.db = db
        self.key = key
        self.annotations = annotations

    def enqueue(self, body: bytes) -> int:
        """Keep a request body for later; committed before returning its id."""
        row = {"project_key": self.key, "received_at": now(), "body": body, "state": "pending"}
        with self.db.write() as conn:
            query = insert(inbox_table).values(row).returning(inbox_table.c.id)
            return int(conn.execute(query).scalar_one())

    def pending(self) -> list[tuple[int, bytes]]:
        """Inbox rows not read yet, oldest first."""
        query = (
            select(inbox_table.c.id, inbox_table.c.body)
            .where(inbox_table.c.project_key == self.key, inbox_table.c.state == "pending")
            .order_by(inbox_table.c.id)
        )
        with self.db.read() as conn:
            return [(int(i), bytes(body)) for i, body in conn.execute(query)]

    def settle(
        self,
        inbox_id: int,
        records: Sequence[AnnotationRecord] = (),
        deleted: Sequence[int] = (),
        error: str | None = None,
    ) -> int:
        """Store an inbox row's records (or tombstone its `deleted` ids) and mark it read,
        in one transaction; with `error`, change nothing and mark it refused (its body kept
        for a look). Records older than what is stored for their id (a later webhook won
        the race) are left out. Returns how many annotations changed."""
        rows = [to_row(record) for record in records] if error is None else []
        this_row = (inbox_table.c.project_key == self.key) & (inbox_table.c.id == inbox_id)
        with self.db.write() as conn:
            if error is not None:
                # refused: nothing of it stored, its body kept for a look, the reason kept
                refused = {"state": "refused", "error": store_text(error)[:ERROR_CHARS]}
                conn.execute(update(inbox_table).where(this_row).values(refused))
                return 0
            changed = self.annotations.write_rows_in(conn, rows, keep_newer=True)
            if deleted:
                ids = sorted({check_id(i, "id") for i in deleted})
                changed += self.annotations.tombstone_in(conn, ids)
            # read: its body is dropped (the records hold what it said), how many changed kept
            read = {"state": "stored", "stored": changed, "body": b""}
            conn.execute(update(inbox_table).where(this_row).values(read))
        return changed

    def counts(self) -> dict[str, int]:
        """Inbox rows by state: pending, stored, refused."""
        query = (
            select(inbox_table.c.state, func.count())
            .where(inbox_table.c.project_key == self.key)
            .group_by(inbox_table.c.state)
        )
        with self.db.read() as conn:
            rows = conn.execute(query)
            return {"pending": 0, "stored": 0, "refused": 0, **{str(s): int(n) for s, n in rows}}

    def refusals(self, limit: int = 5) -> list[dict]:
        """The last `limit` refused rows, newest first: id, received_at, error."""
        query = (
            select(inbox_table.c.id, inbox_table.c.received_at, inbox_table.c.error)
            .where(inbox_table.c.project_key == self.key, inbox_table.c.state == "refused")
            .order_by(inbox_table.c.id.desc())
            .limit(limit)
        )
        with self.db.read() as conn:
            return [{"id": i, "received_at": at, "error": e} for i, at, e in conn.execute(query)]
