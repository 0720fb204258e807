"""The approval store's tables in PostgreSQL: created and migrated by pgwarden, versioned.

Every sidecar of a fleet, and the inbox, may start at the same moment against the same
database, some of them running a newer pgwarden than others. So:

- the migration runs in one transaction under an advisory lock of the schema's own (a
  second pgwarden waits for the first, then finds nothing left to do), and PostgreSQL's
  DDL is transactional: a step that fails leaves the schema as it was;
- ``schema_version`` holds one row per step applied; the steps are an ordered list, each
  applied once, in order, never edited once released (a change is a new step);
- a schema at a version this pgwarden does not know was migrated by a newer one: its
  tables may mean something this code would get wrong, so it is refused with a message
  that says so, and the store stays unavailable (approvals fail closed) rather than
  guess.

Nothing here knows about Twisted: `migrate` takes a psycopg connection and runs where
the store's connection lives (its worker thread).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import psycopg
from psycopg import sql

#: The first half of the advisory lock key: "pgwd" in ASCII, so pgwarden's locks are
#: told apart from an application's in pg_locks; the second half is the schema's hash.
LOCK_CLASS = 0x70677764


class SchemaTooNew(Exception):
    """The schema was migrated by a newer pgwarden than this one."""


@attrs.frozen
class Step:
    """One migration: applied once, in order of ``version``; ``statements`` name the schema as ``{schema}``."""

    version: int
    summary: str
    statements: tuple[str, ...]


STEPS: tuple[Step, ...] = (
    Step(1, "requests and decisions; NOTIFY on every change of a request", (
        # One row per approval request. `request` is the whole request as the store contract
        # defines it (`store.to_json`), the one source of truth; the other columns repeat what
        # the store selects by (and an operator reads with psql), written in the same statement.
        """
        CREATE TABLE {schema}.requests (
            id text PRIMARY KEY,
            state text NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'approved', 'denied', 'expired', 'withdrawn')),
            mode text NOT NULL CHECK (mode IN ('hold', 'retry')),
            subject text NOT NULL,
            fingerprint text,
            params_hash text NOT NULL,
            created_at timestamptz NOT NULL,
            expires_at timestamptz NOT NULL,
            closed_at timestamptz,
            grant_until timestamptz,
            used boolean NOT NULL DEFAULT false,
            request jsonb NOT NULL,
            CHECK ((state = 'pending') = (closed_at IS NULL))
        )
        """,
        "CREATE INDEX requests_pending ON {schema}.requests (created_at) WHERE state = 'pending'",
        "CREATE INDEX requests_closed ON {schema}.requests (closed_at DESC) WHERE state <> 'pending'",
        "CREATE INDEX requests_grants ON {schema}.requests (subject) WHERE state = 'approved' AND mode = 'retry'",
        # Each approver's yes or no, once per request: the primary key counts distinct approvers
        # whatever the sidecars and inboxes that decide at once.
        """
        CREATE TABLE {schema}.decisions (
            request_id text NOT NULL REFERENCES {schema}.requests (id) ON DELETE CASCADE,
            approver text NOT NULL,
            approved boolean NOT NULL,
            decided_at timestamptz NOT NULL,
            reason text,
            PRIMARY KEY (request_id, approver)
        )
        """,
        # The payload is the request's id; the channel is the schema's name, so two stores
        # in one database (two fleets) do not wake each other. A trigger, so that a request
        # changed by anything (an inbox, psql) wakes the sidecar that waits on it too.
        """
        CREATE FUNCTION {schema}.notify_change() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN
            PERFORM pg_catalog.pg_notify(TG_TABLE_SCHEMA, NEW.id);
            RETURN NULL;
        END
        $body$
        """,
        """
        CREATE TRIGGER requests_notify AFTER INSERT OR UPDATE ON {schema}.requests
            FOR EACH ROW EXECUTE FUNCTION {schema}.notify_change()
        """,
    )),
)


def latest(steps: Sequence[Step] = STEPS) -> int:
    return steps[-1].version if steps else 0


def lock_key(schema: str) -> sql.Composed:
    return sql.SQL("pg_catalog.pg_advisory_xact_lock({}, pg_catalog.hashtext({}))").format(
        sql.Literal(LOCK_CLASS), sql.Literal(schema))


def version_of(conn: psycopg.Connection, schema: str) -> int | None:
    """The schema's version, or None when there is no schema_version table yet."""
    row = conn.execute("SELECT pg_catalog.to_regclass(%s)",
                       [sql.Identifier(schema, "schema_version").as_string(conn)]).fetchone()
    if row is None or row[0] is None:
        return None
    query = sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(sql.Identifier(schema, "schema_version"))
    found = conn.execute(query).fetchone()
    return int(found[0]) if found else 0


def migrate(conn: psycopg.Connection, schema: str, by: str, steps: Sequence[Step] = STEPS) -> tuple[int, int]:
    """Brings ``schema`` to the latest version ``steps`` know; returns (version before, version after).

    ``conn`` is in autocommit mode; the migration is one transaction of its own.
    ``by`` is written beside each step applied (which pgwarden did it).
    Raises `SchemaTooNew` when the schema is ahead of ``steps``.
    """
    known = latest(steps)
    with conn.transaction():
        conn.execute(sql.SQL("SELECT {}").format(lock_key(schema)))
        exists = conn.execute("SELECT pg_catalog.to_regnamespace(%s)",
                              [sql.Identifier(schema).as_string(conn)]).fetchone()
        if exists is None or exists[0] is None:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS would need CREATE on the
            # database even for a schema an administrator made beforehand.
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, summary text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(), applied_by text NOT NULL)"
        ).format(sql.Identifier(schema, "schema_version")))
        before = version_of(conn, schema) or 0
        if before > known:
            raise SchemaTooNew(
                f"the approval store's schema {schema!r} is at version {before}, and this pgwarden knows "
                f"versions up to {known}: a newer pgwarden migrated it; upgrade this one (approvals are "
                "refused until then)")
        for step in steps:
            if step.version <= before:
                continue
            for statement in step.statements:
                conn.execute(sql.SQL(statement).format(schema=sql.Identifier(schema)))
            conn.execute(sql.SQL("INSERT INTO {} (version, summary, applied_by) VALUES (%s, %s, %s)").format(
                sql.Identifier(schema, "schema_version")), [step.version, step.summary, by])
    return before, max(before, known)
