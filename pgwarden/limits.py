"""The limits the core enforces whatever the plugins say: rows written, read-only sessions,
and a statement_timeout the agent cannot lift.

Plugins decide what a statement may do; these rules decide what no statement may undo:

* ``limit: {rows_written: N}``: a statement that may write runs with the server counting
  its rows (see `pgwarden.relay.counting`); a multi-statement Query string holding one
  is refused, since the count is per statement, and so is what the count cannot see: a
  DO block or procedure that may COMMIT before the check, TRUNCATE and DDL that drops or
  rewrites rows, writes to foreign tables and to large objects, work left for after the
  count (a holdable cursor, a deferred or event trigger) and SQL built at run time (`counting`).
* When the policies allow (or approve) no write at all, the upstream session is opened with
  ``default_transaction_read_only=on``: the server itself then refuses any write the analysis
  missed (a function that inserts, called in a SELECT). Every way of lifting it is refused.
* ``limit: {statement_timeout: T}`` is the upstream session's startup value; a change to a
  value the server reads as 0, more than T, or that is not known before it runs, is refused.
  RESET (and RESET ALL, DISCARD ALL) returns to the startup value, so it may pass.
"""

from __future__ import annotations

import math
import re

import attrs

from pgwarden.policy.kinds import ALLOW, APPROVE, BLOCK
from pgwarden.policy.model import Policy, duration_ms, limit_rules, rows_written_cap, statement_timeout_ms
from pgwarden.relay.counting import CountRows
from pgwarden.verdict import Verdict

# Statements counted under rows_written: what writes, or may (a function, a block, a call).
MAY_WRITE_KINDS = frozenset({
    "insert", "update", "delete", "merge", "do", "call", "side_effect", "unknown", "execute",
    "cursor",  # a FETCH runs the cursor's query, and whatever functions it calls
})
# What a statement that leaves work for after the count (`Analysis.after_count`) may write then.
_WRITES_WHEN_RUN = MAY_WRITE_KINDS - {"cursor"}
# Statements that bring rows in that the count would not see before they are visible
# to the client's own protocol exchange (COPY FROM STDIN): refused under rows_written.
UNCOUNTABLE_KINDS = frozenset({"copy_from", "copy_file", "copy_program"})
# In a DO block (beside "do"): what may end the transaction whose rows are counted. "transaction":
# its COMMIT or ROLLBACK; "unknown": SQL built at run time, a language pgwarden does not read.
_MAY_END_TRANSACTION = frozenset({"transaction", "unknown", "call"})
# The built-in functions that write large objects: into pg_largeobject, a system catalog, which
# pg_stat_xact_user_tables does not count (`SELECT lo_unlink(oid) FROM pg_largeobject_metadata`).
LARGE_OBJECT_WRITES = frozenset({
    "lo_unlink", "lo_put", "lowrite", "lo_truncate", "lo_truncate64", "lo_from_bytea", "lo_create", "lo_creat",
    "lo_import",
})
# What a read-only session would refuse, or what may write: a policy that allows any of
# these keeps the session writable.
WRITE_KINDS = MAY_WRITE_KINDS - {"execute", "cursor"} | UNCOUNTABLE_KINDS | {
    "ddl", "truncate", "grant", "role", "system",
}
_READ_ONLY_SETTINGS = ("default_transaction_read_only", "transaction_read_only")
_TRUE = frozenset({"on", "true", "yes", "1", "t", "y"})
COMPUTED = object()  # a setting's value that is known only when the statement runs
from pgwarden.sql.syntax import COMPUTED as TEXT_COMPUTED  # noqa: E402  (how the analysis says it)


@attrs.frozen
class SessionLimits:
    """The core's limits for one session, from the policies that apply to it."""

    rows_written: CountRows | None = None
    timeout_ms: int | None = None
    timeout_where: tuple[str | None, str | None] = (None, None)
    # The statement_timeout the upstream session started with: what RESET returns to.
    startup_timeout_ms: int | None = None
    # The upstream session was opened with default_transaction_read_only=on.
    read_only: bool = False
    read_only_policy: str | None = None
    #: whether any limit applies: an attribute, not a property (read up to three times a statement)
    any: bool = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "any", self.rows_written is not None or self.timeout_ms is not None
                           or self.read_only)


def session_limits(policies: tuple[Policy, ...], *, read_only: bool = False,
                   startup_timeout_ms: int | None = None) -> SessionLimits:
    cap = rows_written_cap(policies)
    counting = CountRows(cap[0], cap[1].name, cap[2].name) if cap is not None else None
    timeout = statement_timeout_ms(policies)
    where = next(((p.name, r.name) for spec, p, r in limit_rules(policies)
                  if spec.statement_timeout and duration_ms(spec.statement_timeout) == timeout), (None, None))
    blocker = read_only_policy(policies) if read_only else None
    return SessionLimits(counting, timeout, where, startup_timeout_ms, read_only, blocker)


# ---------------------------------------------------------------------- read-only sessions


def _may_match_a_write(match) -> bool:
    """Whether an allow/approve match can match some write: it names a write kind, or no kind."""
    return not match.statements or bool(WRITE_KINDS.intersection(match.statements))


def _blocks_every_write(policy: Policy) -> bool:
    if policy.default == "block":
        return not any(
            spec is not None and _may_match_a_write(spec)
            for r in policy.rules for spec in (ALLOW.of(r), APPROVE.of(r))
        )
    blocked: set[str] = set()
    for r in policy.rules:
        b = BLOCK.of(r)
        if b is not None and b.statements and not b.tables and not b.functions and b.where is None:
            blocked.update(b.statements)
    return WRITE_KINDS <= blocked


def read_only_policy(policies: tuple[Policy, ...]) -> str | None:
    """The first policy that lets no write through, if any: with it, no write can pass
    (every policy that applies must allow a statement), so the session may be read-only."""
    for p in policies:
        if _blocks_every_write(p):
            return p.name
    return None


# ---------------------------------------------------------------------- settings


def setting_changes(analysis, names: tuple[str, ...]):
    """(name, value) for each change the statement makes to one of ``names``.

    ``value`` is the literal the server receives, None for RESET / DEFAULT (the session's
    own value), or COMPUTED when it is known only at run time. A change of a setting whose
    name is computed ("*", from set_config) is reported under each of ``names``; RESET ALL
    and DISCARD ALL ("*" without set_config) return every setting to the session's value.
    """
    computed_calls = "set_config" in analysis.functions
    for name, value in analysis.settings:
        if name in names or name == "*":
            if value == TEXT_COMPUTED or (value is None and computed_calls):
                value = COMPUTED  # a value known only at run time (None from set_config: NULL or computed)
            if name != "*":
                yield name, value
            elif value is not None:  # set_config(<computed name>, value): it may be any of them
                for n in names:
                    yield n, value


_NUMBER = re.compile(
    r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*(?![.eE0-9])|[0-9]*\.?[0-9]*(?:[eE][+-]?[0-9]+)?)\s*([a-z]*)\s*$")
_TIME_UNITS_MS = {"": 1.0, "us": 0.001, "ms": 1.0, "s": 1000.0, "min": 60_000.0, "h": 3_600_000.0,
                  "d": 86_400_000.0}


def timeout_setting_ms(text: str) -> int | None:
    """The milliseconds the server makes of a statement_timeout value, as its parse_int
    does (strtol base 0, then strtod for a fraction or an exponent, a unit, rint); None when
    it is not a value the server would accept."""
    found = _NUMBER.match(text)
    if found is None or found.group(2) in ("", "."):
        return None
    sign, number, unit = found.groups()
    if unit not in _TIME_UNITS_MS:
        return None
    if number[:2].lower() == "0x":
        value = float(int(number, 16))
    elif number.startswith("0") and number.isdigit():
        value = float(int(number, 8))
    else:
        try:
            value = float(number)
        except ValueError:
            return None
    if sign == "-":
        value = -value
    ms = value * _TIME_UNITS_MS[unit]
    if math.isnan(ms) or math.isinf(ms):
        return None
    ms = round(ms)  # rint: halves to even, as the server rounds
    return ms if 0 <= ms <= 2_147_483_647 else None


# ---------------------------------------------------------------------- the core's verdicts


def refusal(analysis, limits: SessionLimits) -> Verdict | None:
    """A statement that would undo a limit: a read-only session made writable, the
    statement_timeout lifted, or the server's write counts switched off."""
    if not limits.any:
        return None
    if limits.read_only:
        where = {"policy": limits.read_only_policy, "rule": "read-only session"}
        hint = "This session is read-only: the policies that apply to it allow no writes."
        if analysis.read_write:
            return Verdict.block("a read-write transaction is not allowed", hint, **where)
        for name, value in setting_changes(analysis, _READ_ONLY_SETTINGS):
            if value is None and name == "default_transaction_read_only":
                continue  # RESET / DEFAULT: back to the startup value, on
            if value is not None and value is not COMPUTED and value.strip().lower() in _TRUE:
                continue  # on
            # (transaction_read_only's RESET / DEFAULT is its boot value, off, not the session's:
            # the server reads default_transaction_read_only only when a transaction starts)
            return Verdict.block(f"changing {name} is not allowed", hint, **where)
    if limits.timeout_ms is not None:
        found = _timeout_refusal(analysis, limits)
        if found is not None:
            return found
    if limits.rows_written is not None:
        for _name, _value in setting_changes(analysis, ("track_counts",)):
            return Verdict.block(
                "changing track_counts is not allowed",
                "The server's count of rows written enforces this session's rows_written limit.",
                policy=limits.rows_written.policy, rule=limits.rows_written.rule,
            )
    return None


def _timeout_refusal(analysis, limits: SessionLimits) -> Verdict | None:
    limit = limits.timeout_ms
    if limit is None:
        return None
    policy, rule = limits.timeout_where
    for _name, value in setting_changes(analysis, ("statement_timeout",)):
        if value is None:  # RESET / DEFAULT: the value the session started with
            start = limits.startup_timeout_ms
            if start is not None and 0 < start <= limit:
                continue
            why = "resetting statement_timeout is not allowed in this session"
        elif value is COMPUTED:
            why = "statement_timeout may only be set to a literal value"
        else:
            ms = timeout_setting_ms(value)
            if ms is not None and 0 < ms <= limit:
                continue
            why = f"statement_timeout = {value!r} is not allowed"
        return Verdict.block(
            why,
            f"statement_timeout may be lowered but not above {limit}ms nor to 0 "
            "(limit statement_timeout); RESET returns to the limit.",
            policy=policy, rule=rule,
        )
    return None


def _not_a_user_table(qualified: str) -> bool:
    """Whether rows written to ``schema.table`` go uncounted: pg_stat_xact_user_tables (the count's
    view) is pg_stat_xact_all_tables without the schemas ``pg_catalog``, ``information_schema``
    and those whose name starts with ``pg_toast`` (its definition in system_views.sql). A superuser
    upstream may write them (`DELETE FROM pg_largeobject WHERE loid > 0`, red team ten)."""
    schema = qualified.partition(".")[0]
    return schema in ("pg_catalog", "information_schema") or schema.startswith("pg_toast")


def _may_write(kinds: frozenset[str], analysis) -> bool:
    """Whether its kinds say it may write: "cursor" only where a cursor's query runs (FETCH,
    MOVE, a function that fetches), not for DECLARE or CLOSE alone."""
    may = kinds & MAY_WRITE_KINDS
    return bool(may) and (may != _CURSOR_ONLY or analysis.runs_cursors)


_CURSOR_ONLY = frozenset({"cursor"})


def counting(analysis, statements: int, limits: SessionLimits, protocol: str, in_block: bool = False):
    """For an allowed statement under rows_written: a CountRows to run it with, a refusal
    (Verdict) when it cannot be counted, or None when it does not write.

    ``in_block``: the statement is sure to run inside the client's explicit transaction block
    (a simple Query decided while the server owes nothing and said so with ReadyForQuery 'T'),
    where a DO block or a procedure runs atomic (its COMMIT is an error): then they are counted
    like any write. (Not for a Parse: its Executes may follow a COMMIT sent after it.)"""
    decision = limits.rows_written
    if decision is None:
        return None
    kinds = analysis.kinds
    where = {"policy": decision.policy, "rule": decision.rule}
    if kinds & UNCOUNTABLE_KINDS:
        return Verdict.block(
            "COPY FROM is not allowed under a rows_written limit",
            f"Insert the rows with INSERT statements, at most {decision.cap} per statement.",
            **where,
        )
    if analysis.uncounted or "truncate" in kinds:
        return Verdict.block(
            "a statement that empties, drops or rewrites tables is not allowed under a rows_written limit",
            "The server does not count the rows TRUNCATE, DROP TABLE, ALTER TABLE ... TYPE or DROP COLUMN "
            f"remove or rewrite. Use DELETE or UPDATE, at most {decision.cap} rows per statement.",
            **where,
        )
    if not (analysis.writes or _may_write(kinds, analysis)):
        return None
    if not in_block and ("call" in kinds or "do" in kinds and not kinds.isdisjoint(_MAY_END_TRANSACTION)):
        # Outside a transaction block a DO block or a procedure may COMMIT (itself, or a
        # procedure or DO block it runs): what it wrote before is then committed, and pgwarden's
        # check after the statement rolls back only what came after.
        return Verdict.block(
            "a procedure, or a DO block that may commit, is not allowed under a rows_written limit",
            "A COMMIT or ROLLBACK inside a DO block or a procedure ends the transaction whose rows "
            "are counted. Send the writes as statements of their own, or a DO block without "
            "COMMIT, ROLLBACK, CALL or SQL built at run time.",
            **where,
        )
    if analysis.after_count and (analysis.writes or bool(kinds & _WRITES_WHEN_RUN)) or "unknown" in kinds:
        # What the server runs after the statement comes after pgwarden's check: at the commit a
        # deferred trigger's writes and a holdable cursor's query (red team eight), declared by a
        # function's body too; at every later DDL statement, never counted, an event trigger's
        # function (red team nine). SQL built at run time may leave any of these: no analysis
        # sees what it does (a DO block holding it is refused above, outside a block).
        return Verdict.block(
            "a write the server would do after the count is not allowed under a rows_written limit",
            "The rows a statement writes are counted when it ends. What it leaves for later runs "
            "uncounted: at COMMIT, a DEFERRABLE constraint trigger whose function writes and "
            "DECLARE ... WITH HOLD over a query that may write (by the statement or by a function it "
            "calls); at every later DDL statement, an event trigger whose function writes; and SQL "
            "built at run time (EXECUTE of a computed string) may do either. Declare cursors without "
            "WITH HOLD, write with plain statements, or write from a session without this limit.",
            **where,
        )
    if not analysis.functions.isdisjoint(LARGE_OBJECT_WRITES):
        return Verdict.block(
            "writing large objects is not allowed under a rows_written limit",
            "The server does not count what lo_unlink, lo_put, lowrite and their kin write (a system "
            "catalog); write large objects from a session without this limit.",
            **where,
        )
    uncounted_tables = sorted(name for name in analysis.writes if _not_a_user_table(name))
    if uncounted_tables:
        return Verdict.block(
            "a write of a system catalog is not allowed under a rows_written limit",
            f"The server counts rows written to user tables only ({', '.join(uncounted_tables)} is not one: "
            "pg_stat_xact_user_tables leaves out pg_catalog, information_schema and pg_toast); "
            "write to it from a session without this limit.",
            **where,
        )
    if analysis.foreign:
        return Verdict.block(
            "a statement that may write to a foreign table is not allowed under a rows_written limit",
            f"The server does not count rows written to foreign tables ({', '.join(sorted(analysis.foreign))}); "
            "write to them from a session without this limit.",
            **where,
        )
    if statements > 1 and protocol == "simple":
        return Verdict.block(
            "a statement that may write must be sent on its own under a rows_written limit",
            f"Send one write per query (the limit of {decision.cap} rows applies to each statement).",
            **where,
        )
    return decision
