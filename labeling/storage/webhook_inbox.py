"""The webhook inbox: bodies too big to read inside Label Studio's 1 s webhook timeout are
kept here as sent (one committed write) and read afterwards by
backend.service.inbox_reader.InboxReader. A row
still "pending" after a crash is read at the next start, so an acknowledged payload is
never lost. These run inside a transaction the store opens (labeling/store.py)."""

from __future__ import annotations

from sqlalchemy import Connection, func, insert, select, update

from labeling.storage.records import now, store_text
from labeling.storage.schema import inbox_table

ERROR_CHARS = 2000  # a refusal's reason, as kept


def enqueue(conn: Connection, key: str, body: bytes) -> int:
    row = {"project_key": key, "received_at": now(), "body": body, "state": "pending"}
    return int(
        conn.execute(insert(inbox_table).values(row).returning(inbox_table.c.id)).scalar_one()
    )


def pending(conn: Connection, key: str) -> list[tuple[int, bytes]]:
    rows = conn.execute(
        select(inbox_table.c.id, inbox_table.c.body)
        .where(inbox_table.c.project_key == key, inbox_table.c.state == "pending")
        .order_by(inbox_table.c.id)
    )
    return [(int(i), bytes(body)) for i, body in rows]


def mark_stored(conn: Connection, key: str, inbox_id: int, changed: int) -> None:
    """Read: its body is dropped (the records hold what it said), how many changed kept."""
    conn.execute(
        update(inbox_table)
        .where(inbox_table.c.project_key == key, inbox_table.c.id == inbox_id)
        .values(state="stored", stored=changed, body=b"")
    )


def mark_refused(conn: Connection, key: str, inbox_id: int, error: str) -> None:
    """Refused: nothing of it stored, its body kept for a look, the reason recorded."""
    conn.execute(
        update(inbox_table)
        .where(inbox_table.c.project_key == key, inbox_table.c.id == inbox_id)
        .values(state="refused", error=store_text(error)[:ERROR_CHARS])
    )


def counts(conn: Connection, key: str) -> dict[str, int]:
    rows = conn.execute(
        select(inbox_table.c.state, func.count())
        .where(inbox_table.c.project_key == key)
        .group_by(inbox_table.c.state)
    )
    return {"pending": 0, "stored": 0, "refused": 0, **{str(s): int(n) for s, n in rows}}


def refusals(conn: Connection, key: str, limit: int) -> list[dict]:
    rows = conn.execute(
        select(inbox_table.c.id, inbox_table.c.received_at, inbox_table.c.error)
        .where(inbox_table.c.project_key == key, inbox_table.c.state == "refused")
        .order_by(inbox_table.c.id.desc())
        .limit(limit)
    )
    return [{"id": i, "received_at": at, "error": e} for i, at, e in rows]
