"""Rows written, counted by the server: the statements pgwarden runs around a write.

No syntax check finds every WHERE that matches every row, so a ``limit: {rows_written: N}``
asks the server what a statement did. ``pg_stat_xact_user_tables`` holds, per table, the rows
the current transaction has inserted, updated and deleted so far — at any depth: CTEs,
EXPLAIN ANALYZE, functions, triggers, rolled-back subtransactions included.

Around a statement that may write, pgwarden runs two statements of its own in the same
transaction (the extended protocol, with no Sync in between, so no commit):

* **before**: a SELECT of each table's count, which pgwarden reads from the answer;
* **check**, right after the client's Execute: a ``DO`` block that counts again and
  raises pgwarden's error (42501) if it grew by more than N. The server then rolls the
  transaction back (or aborts the client's transaction block) exactly as for any error.

Why this shape, and not a setting holding the value, nor a separate statement first:

* the counts are the backend's *pending* statistics: they carry over from earlier
  transactions until the backend flushes them, which it does only when idle between
  transactions. A "before" read in a transaction of its own can be followed by a flush
  that resets the counts, and the write would then look smaller than it was. Both of
  pgwarden's statements therefore run in the client's statement's own transaction;
* the value goes to pgwarden and comes back as a literal in the check. Kept in the
  session (``set_config``), it could be overwritten by the statement being counted
  (a function that calls ``set_config``), and the check would pass whatever was written.

The count is kept **per table**: the before statement reads each table's count (its relid and
rows), and the check sums, table by table, how much each grew, a table that shrank or went
away counting 0, never less. Read as one sum, the count could be made smaller than what was
written: the pending counts of a table go with it when it is dropped (or emptied by TRUNCATE,
or a temporary one by DISCARD TEMP), so a statement that wrote every row of one table and
dropped a scratch table the transaction had filled before looked as if it wrote nothing. More:
a table that had counts before the statement and has fewer, or none, after it was emptied or
dropped by it, and what it wrote there since cannot be told: the check refuses that too.

Every name is schema-qualified and every operator is ``OPERATOR(pg_catalog.…)``: the
statements run under the agent's search_path, where a ``public.+`` or a ``public.text``
could otherwise stand in for the built-ins. If ``track_counts`` is off the server keeps no
counts, and the check refuses rather than pass a write it cannot count.
"""

from __future__ import annotations

import re

import attrs

from pgwarden.relay.refusal import do_block, literal, raise_items
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m

_COUNTING = "pg_catalog.current_setting('track_counts')::pg_catalog.bool"
# Each table's rows written so far, as (relid, rows): those with any (the view has a row for every
# table of the database, and the before statement's answer and the check's text would grow with
# them).
_PER_TABLE_SQL = (
    "SELECT relid, n AS n FROM (SELECT relid,"
    " n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd OPERATOR(pg_catalog.+) n_tup_del AS n"
    " FROM pg_catalog.pg_stat_xact_user_tables) AS c WHERE n OPERATOR(pg_catalog.>) 0"
)
# One row: each table's count as text (``relid=rows,relid=rows``; empty: none), or NULL when the
# server keeps none.
BEFORE_SQL = (
    f"SELECT CASE WHEN {_COUNTING} THEN COALESCE((SELECT pg_catalog.string_agg(pg_catalog.concat("
    "t.relid::pg_catalog.int8, '=', t.n::pg_catalog.int8), ',')"
    f" FROM ({_PER_TABLE_SQL}) AS t), '') END"
)
_SNAPSHOT = re.compile(r"(?:[0-9]+=[0-9]+(?:,[0-9]+=[0-9]+)*)?")


@attrs.frozen
class CountRows:
    """A decision: the statement may run, and the rows it writes are counted against ``cap``."""

    cap: int
    policy: str | None = None
    rule: str | None = None

    def where(self) -> str:
        named = [f"policy {self.policy!r}"] if self.policy else []
        if self.rule:
            named.append(f"rule {self.rule!r}")
        return ", ".join(named) or "a policy"


def uncountable(decision: CountRows) -> Refusal:
    """The refusal when the server keeps no counts (``track_counts`` off)."""
    return Refusal(
        "42501",
        "pgwarden: blocked: the rows this statement writes cannot be counted",
        f"Refused by {decision.where()} (limit rows_written: {decision.cap}): the server's "
        "track_counts setting is off, so it keeps no count of rows written.",
        "An operator must turn track_counts on for writes to be allowed under this limit.",
    )


def _tables(before: int) -> list[tuple[int, int]]:
    """The per-table counts `parse_count` packed into ``before``."""
    raw = before.to_bytes((before.bit_length() + 7) // 8, "big")[1:].decode("ascii")
    return [(int(a), int(b)) for a, _, b in (pair.partition("=") for pair in raw.split(",") if pair)]


def _array(values: list[int], sql_type: str) -> str:
    return "'{" + ",".join(str(v) for v in values) + "}'::" + sql_type


def emptied(decision: CountRows) -> Refusal:
    """The refusal when a table with counts before the statement had fewer, or none, after."""
    return Refusal(
        "42501",
        "pgwarden: blocked: the statement emptied or dropped a table, so the rows it wrote cannot be counted",
        f"Refused by {decision.where()} (limit rows_written: {decision.cap}). The server forgets the "
        "count of rows written to a table that is truncated or dropped. The statement's changes "
        "were rolled back.",
        "Empty or drop tables in a session without this limit.",
    )


def check_sql(decision: CountRows, before: int | None) -> str:
    """The DO block that raises pgwarden's error when more than the cap was written since ``before``
    (the per-table counts `parse_count` read, packed into one int)."""
    if before is None:
        return do_block(f"BEGIN RAISE EXCEPTION USING {raise_items(uncountable(decision))}; END")
    tables = _tables(before)
    cap = decision.cap
    detail = (f"Refused by {decision.where()} (limit rows_written: {cap}). "
              "The statement's changes were rolled back.")
    hint = (f"Write at most {cap} rows per statement: narrow the WHERE clause, "
            "or split the change into smaller statements.")
    refuse = (
        "RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = pg_catalog.concat("
        f"{literal('pgwarden: blocked: the statement wrote ')}, written, "
        f"{literal(f' rows, more than the {cap} allowed')}), "
        f"DETAIL = {literal(detail)}, HINT = {literal(hint)}"
    )
    not_counting = f"RAISE EXCEPTION USING {raise_items(uncountable(decision))}"
    lost = f"RAISE EXCEPTION USING {raise_items(emptied(decision))}"
    was = (f"ROWS FROM (pg_catalog.unnest({_array([t for t, _ in tables], 'pg_catalog.oid[]')}), "
           f"pg_catalog.unnest({_array([n for _, n in tables], 'pg_catalog.int8[]')})) AS b(relid, n)")
    # Per table, what it grew by (a table new to the counts from 0); a table that shrank or went
    # away: `shrunk`.
    return do_block(
        "DECLARE written pg_catalog.int8; shrunk pg_catalog.bool; BEGIN "
        f"IF {_COUNTING} IS NOT TRUE THEN {not_counting}; END IF; "
        "SELECT pg_catalog.sum(GREATEST(a.n OPERATOR(pg_catalog.-) COALESCE(b.n, 0), 0)), "
        "pg_catalog.bool_or(b.relid IS NOT NULL AND (a.relid IS NULL OR a.n OPERATOR(pg_catalog.<) b.n)) "
        f"INTO written, shrunk FROM ({_PER_TABLE_SQL}) AS a FULL JOIN {was} "
        "ON a.relid OPERATOR(pg_catalog.=) b.relid; "
        f"IF shrunk THEN {lost}; END IF; "
        f"written := COALESCE(written, 0); "
        f"IF written OPERATOR(pg_catalog.>) {int(cap)} THEN {refuse}; END IF; END"
    )


def own_run(name: str, sql: str) -> bytes:
    """Runs ``sql`` as pgwarden's own named statement and portal, leaving the client's unnamed ones.

    The Closes first remove what an earlier run left: its portal lives until the end of the
    transaction, and after an error that skipped its cleanup the statement lives on too.
    A Close of a name that does not exist is not an error. Answers: two CloseComplete,
    ParseComplete, BindComplete, then the Execute's.
    """
    return (
        m.Close("P", name).encode()
        + m.Close("S", name).encode()
        + m.Parse(name, sql).encode()
        + m.Bind(name, name).encode()
        + m.Execute(name, 0).encode()
    )


def parse_count(row: bytes) -> int | None:
    """The before statement's DataRow (text format): each table's count packed into one int
    (its text's bytes after a 1, so that an empty text is not 0: `check_sql` unpacks it), or
    None for NULL (no counts kept) or an answer that is not one (the check then refuses).

    An int, as the relay keeps it (`_Count.before`, a portal's ``count_before``): the relay
    carries it from this statement to the check and reads nothing of it."""
    values = m.DataRow.decode(row[5:]).values
    if not values or values[0] is None:
        return None
    text = bytes(values[0])
    if _SNAPSHOT.fullmatch(text.decode("ascii", "replace")) is None:
        return None
    return int.from_bytes(b"\x01" + text, "big")
