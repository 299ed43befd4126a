"""The store's one schema, for SQLite and PostgreSQL alike, and the migrations that bring
any database to it when a store opens.

Every row carries `project_key`, the project it belongs to, so several projects can share
one PostgreSQL database (a SQLite file is one project's, but its rows carry the key too:
one schema). Times are ISO-8601 text (compared as text, as before), spans and the raw
payload JSON text, the inbox body bytes as Label Studio sent them.

Migrations are a short ordered list of steps and a `schema_migrations` table (one row per
step applied). Opening a store runs, in one transaction that holds the database's write
lock (SQLite `BEGIN IMMEDIATE`, a PostgreSQL advisory lock), so several processes starting
at once migrate exactly once:
- an empty database: the current tables are created and every step is recorded;
- tables without `schema_migrations`: a file from before the migrations (version 1);
- then each step past the recorded version, in order.
Alembic was not used: its script folder, env.py and ini file are much machinery for a
couple of steps, and these steps need the opening project's key (step 2 tags the rows of
a pre-migration file with it), which a plain function takes as an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from labeling.storage.engine import describe

metadata = MetaData()

annotation_table = Table(
    "annotations",
    metadata,
    Column("project_key", Text, nullable=False),
    Column("annotation_id", BigInteger, nullable=False),
    Column("task_id", BigInteger, nullable=False),
    Column("project", Text, nullable=False),  # the Label Studio project id, "" if unknown
    Column("text", Text, nullable=False),
    Column("spans", Text, nullable=False),
    Column("annotator", Text),
    Column("created_at", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
    Column("lead_time", Float),
    Column("cancelled", Boolean, nullable=False),
    Column("ground_truth", Boolean, nullable=False),
    Column("prediction_model_version", Text),
    Column("prediction_spans", Text, nullable=False),
    Column("selected_by", Text),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("raw", Text, nullable=False),
    Column("change", BigInteger, nullable=False),
    PrimaryKeyConstraint("project_key", "annotation_id", name="annotations_pkey"),
    Index("annotations_task", "project_key", "task_id"),
    Index("annotations_change", "project_key", "change"),
)

counter_table = Table(
    "counters",
    metadata,
    Column("project_key", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("value", BigInteger, nullable=False),
    PrimaryKeyConstraint("project_key", "name", name="counters_pkey"),
)

inbox_table = Table(
    "inbox",
    metadata,
    # INTEGER on SQLite: only an INTEGER PRIMARY KEY is its autoincrementing rowid
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("project_key", Text, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("state", Text, nullable=False, default="pending"),
    Column("error", Text),
    Column("stored", Integer),
    Index("inbox_state", "project_key", "state"),
)


def create_counter(conn: Connection, key: str, name: str) -> Any:
    """The statement that creates project `key`'s counter row `name`, unless it exists
    (both dialects say it alike)."""
    dialect_insert = postgres_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return (
        dialect_insert(counter_table)
        .values(project_key=key, name=name, value=0)
        .on_conflict_do_nothing(index_elements=["project_key", "name"])
    )


migration_table = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Text, nullable=False),
)

# any constant: the advisory lock that makes concurrent starts migrate one at a time
MIGRATION_LOCK = 0x5C1_1100


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection, str], None]  # (connection, the opening project's key)


def _baseline(conn: Connection, key: str) -> None:
    """Version 1 is the schema before migrations existed; nothing creates it any more."""
    raise RuntimeError("version 1 is only ever found, never applied")


def _add_project_key(conn: Connection, key: str) -> None:
    """Version 1 -> 2: one project a file, to rows that carry the project key (a table
    rebuild: SQLite cannot change a primary key in place)."""
    old = {t: f"{t}_v1" for t in ("annotations", "counters", "inbox")}
    for table, renamed in old.items():
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {renamed}")
    for index in ("annotations_task", "annotations_change", "inbox_state"):
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {index}")
    metadata.create_all(conn, tables=[annotation_table, counter_table, inbox_table])
    columns = [c.name for c in annotation_table.columns if c.name != "project_key"]
    listed = ", ".join(columns)
    conn.execute(
        text(
            f"INSERT INTO annotations (project_key, {listed}) "
            f"SELECT :key, {listed} FROM {old['annotations']}"
        ),
        {"key": key},
    )
    conn.execute(
        text(
            "INSERT INTO counters (project_key, name, value) "
            f"SELECT :key, name, value FROM {old['counters']}"
        ),
        {"key": key},
    )
    inbox_columns = "id, received_at, body, state, error, stored"
    conn.execute(
        text(
            f"INSERT INTO inbox (project_key, {inbox_columns}) "
            f"SELECT :key, {inbox_columns} FROM {old['inbox']}"
        ),
        {"key": key},
    )
    for renamed in old.values():
        conn.exec_driver_sql(f"DROP TABLE {renamed}")


MIGRATIONS = (
    Migration(1, "annotation_table, counters and the inbox: one project a file", _baseline),
    Migration(2, "rows carry the project key: several projects share a database", _add_project_key),
)
LATEST = MIGRATIONS[-1].version


def migrate(conn: Connection, key: str, applied_at: str) -> list[int]:
    """Bring the database to LATEST inside the caller's write transaction; returns the
    versions applied now ([] when it was up to date)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))
    tables = set(inspect(conn).get_table_names())
    if "schema_migrations" in tables:
        version = conn.execute(select(func.max(migration_table.c.version))).scalar() or 0
    elif "annotations" in tables:
        migration_table.create(conn)
        version = 1  # a store written before migrations existed
        _record(conn, MIGRATIONS[0], applied_at)
    else:
        metadata.create_all(conn)
        for step in MIGRATIONS:
            _record(conn, step, applied_at)
        return [step.version for step in MIGRATIONS]
    if version > LATEST:
        raise RuntimeError(
            f"the annotation store at {describe(str(conn.engine.url))} has schema version "
            f"{version}, newer than this skillloop knows ({LATEST}): upgrade skillloop"
        )
    done = []
    for step in MIGRATIONS:
        if step.version > version:
            step.apply(conn, key)
            _record(conn, step, applied_at)
            done.append(step.version)
    return done


def _record(conn: Connection, step: Migration, applied_at: str) -> None:
    conn.execute(
        insert(migration_table).values(
            version=step.version, description=step.description, applied_at=applied_at
        )
    )
