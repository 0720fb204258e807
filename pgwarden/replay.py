"""`pgwarden replay --against NEW.yaml RECORDS...`: recorded statements decided again under a candidate.

What an operator wants to know before enforcing a policy change is what it would have done to
the statements agents really sent. The records hold them, in order, with everything a decision
is made of: the SQL (a prepared statement's Parse, whose record names it), the identity
(``session_start.claims``), the session state the text was read in (``search_path``, lexer
settings; a SQL-level PREPARE reaches its EXECUTE because a session's statements go through one
offline `Session`, as the proxy's go through one). Each is decided on the path
`pgwarden explain` takes (`offline.decide`) and compared with the recorded verdict and the
columns the recorded results had masked.

Never a misreading: the chain is verified first (a broken one is refused, naming the line);
a record of a type, a field or a ``format`` this pgwarden does not know is refused, since it
may carry something that changes what a statement meant. Records of format 1 (before
``claims`` and ``search_path`` were recorded) are read, and the report says what was assumed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs
import orjson

from pgwarden.chain import GENESIS, Report, open_records, verify
from pgwarden.identity import Identity
from pgwarden.offline import Decision, MaskedOutput, decide, offline_session
from pgwarden.recorder import RECORD_FORMAT
from pgwarden.schemas import record_schema
from pgwarden.sql.context import DEFAULT_PATH, SqlContext
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog
    from pgwarden.config import Config
    from pgwarden.plugins import PluginHost
    from pgwarden.session import Session

#: the kinds of change, in the order they are reported
CHANGES = ("now_blocked", "now_approval", "now_allowed", "other_rule", "masked_differently")
TITLES = {
    "now_blocked": "now blocked",
    "now_approval": "now needs approval",
    "now_allowed": "now allowed",
    "other_rule": "same action, decided by another rule",
    "masked_differently": "masked differently",
}
#: the mask plugin's verdict when the catalog does not know the tables' columns
MASK_NEEDS_CATALOG = "mask: catalog"
#: why masks are not compared without a database's catalog
MASKS_NEED_CATALOG = "on tables the catalog does not know (--dsn reads them from a database)"
#: examples kept per group
EXAMPLES = 3


class ReplayError(Exception):
    """The records cannot be replayed (unreadable, a broken chain, a format not known): why."""


@functools.cache
def known_fields() -> dict[str, frozenset[str]]:
    """Each record type's fields, as the record schema names them."""
    schema = record_schema()
    common = set(schema["$defs"]["common"]["enum"])
    fields = {}
    for kind in schema["properties"]["type"]["enum"]:
        names = set(common)
        for option in schema["$defs"][kind]["propertyNames"]["anyOf"]:
            names.update(option.get("enum", ()))
        fields[kind] = frozenset(names)
    return fields


@attrs.define
class Located:
    """A record and where it was read (for the examples and the errors)."""

    record: dict
    where: str


def read(paths: list[str]) -> Iterator[Located]:
    """The records of ``paths`` in order; a record this pgwarden cannot read faithfully raises."""
    fields = known_fields()
    for path in paths:
        with open_records(path) as f:
            for number, line in enumerate(f, 1):
                where = f"{path}:{number}"
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as e:
                    raise ReplayError(f"{where}: not a JSON record ({e})") from None
                if not isinstance(record, dict):
                    raise ReplayError(f"{where}: not a record (a JSON {type(record).__name__})")
                kind = record.get("type")
                if kind not in fields:
                    raise ReplayError(f"{where}: a record of type {kind!r}, which this pgwarden does not know "
                                      "(written by a newer pgwarden?)")
                unknown = sorted(set(record) - fields[kind])
                if unknown:
                    raise ReplayError(f"{where}: a {kind} record with field(s) {', '.join(unknown)}, which this "
                                      "pgwarden does not know (written by a newer pgwarden?): refusing to guess "
                                      "what they change")
                form = record.get("format", 1) if kind == "session_start" else None
                if form is not None and (not isinstance(form, int) or not 1 <= form <= RECORD_FORMAT):
                    raise ReplayError(f"{where}: records of format {form!r}; this pgwarden reads formats 1 to "
                                      f"{RECORD_FORMAT} (written by a newer pgwarden?)")
                yield Located(record, where)


def verified(paths: list[str], allow_restarts: bool = False) -> Report:
    """The chain of ``paths`` checked, or ReplayError naming the broken line."""
    try:
        report = verify(paths, allow_restarts=allow_restarts)
    except (OSError, EOFError) as e:
        raise ReplayError(f"cannot read the records: {e}") from None
    if report.problem is not None:
        raise ReplayError(f"the record chain is broken after {report.records} intact records: {report.problem}; "
                          "not replaying records that may have been changed (pgwarden verify says more)")
    return report


# ---------------------------------------------------------------------- one recorded session


@attrs.define
class _Session:
    """What the replay knows of one recorded session."""

    identity: Identity
    start_path: tuple[str, ...]
    form: int | None  # None: its session_start is not in the files given
    session: Session
    #: (format 1) the search_path the proxy tracked, rebuilt from the statements that ran
    context: SqlContext | None = None


@attrs.define
class Pending:
    """A statement decided again, waiting for its first result (the masks it had)."""

    located: Located
    decision: Decision
    recorded: dict
    compare_masks: bool


@attrs.define
class Change:
    kind: str
    policy: str | None
    rule: str | None
    example: dict


@attrs.define
class Outcome:
    """What the replay found."""

    chain: Report
    files: list[str]
    catalog: str
    statements: int = 0
    sessions: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = attrs.Factory(dict)
    #: why masking was not compared, and for how many statements
    masks_not_compared: dict[str, int] = attrs.Factory(dict)
    changes: list[Change] = attrs.Factory(list)
    assumptions: dict[str, int] = attrs.Factory(dict)

    def grouped(self) -> list[dict]:
        groups: dict[tuple[str, str | None, str | None], dict] = {}
        for change in self.changes:
            key = (change.kind, change.policy, change.rule)
            group = groups.setdefault(key, {"change": change.kind, "policy": change.policy, "rule": change.rule,
                                            "count": 0, "examples": []})
            group["count"] += 1
            if len(group["examples"]) < EXAMPLES:
                group["examples"].append(change.example)
        return sorted(groups.values(), key=lambda g: (CHANGES.index(g["change"]), -g["count"],
                                                      g["policy"] or "", g["rule"] or ""))

    def as_json(self) -> dict:
        return {
            "files": self.files,
            "chain": {"records": self.chain.records, "starts_at": self.chain.starts_at, "head": self.chain.head},
            "catalog": self.catalog,
            "sessions": self.sessions,
            "statements": self.statements,
            "unchanged": self.unchanged,
            "changed": len(self.changes),
            "skipped": self.skipped,
            "masks_not_compared": self.masks_not_compared,
            "assumptions": self.assumptions,
            "changes": self.grouped(),
        }


def _why_skipped(record: dict) -> str | None:
    """Why a statement record is not a policy's decision to replay (None: it is)."""
    verdict = record.get("verdict") or {}
    if record.get("protocol") == "function_call":
        return "FunctionCall messages (always refused)"
    if verdict.get("reason") == "records cannot be written":
        return "refused because records could not be written"
    if "kinds" not in record:
        return "refused before analysis (no policy left after a reload, a failed check)"
    if verdict.get("action") == "block" and verdict.get("policy") is None and verdict.get("rule") is None:
        return "refused by pgwarden itself, not by a policy (text it cannot read as the server would)"
    return None


def _masked_keys(result: dict, masked: tuple[MaskedOutput, ...]) -> tuple[frozenset, frozenset]:
    """What the recorded result had masked and what the candidate would mask, comparably: outputs
    and strategies (``masks``), or for records that name only the sources (``masked``), sources."""
    if "masked" in result and "masks" not in result:
        return (frozenset((name, None) for name in result["masked"]),
                frozenset((m.source or m.column, None) for m in masked))
    return (frozenset((str(m.get("column")), m.get("strategy")) for m in result.get("masks") or ()),
            frozenset((m.column, m.strategy) for m in masked))


class Replayer:
    """Decides each recorded statement again under ``config`` and collects the differences."""

    def __init__(self, config: Config, host: PluginHost, catalog: Catalog, outcome: Outcome) -> None:
        self.config = config
        self.host = host
        self.catalog = catalog
        self.outcome = outcome
        self.sessions: dict[str, _Session] = {}
        self.pending: dict[tuple[str, int], Pending] = {}

    def _assume(self, what: str) -> None:
        self.outcome.assumptions[what] = self.outcome.assumptions.get(what, 0) + 1

    def _session(self, record: dict) -> _Session:
        sid = record.get("session", "")
        known = self.sessions.get(sid)
        if known is not None:
            return known
        who = record.get("identity") or {}
        subject, groups = who.get("subject") or "", who.get("groups") or []
        start = record if record.get("type") == "session_start" else None
        form = None if start is None else start.get("format", 1)
        claims = start.get("claims") if start is not None else None
        if claims is None:
            self._assume("sessions whose claims are not recorded: matched on subject and groups only")
            claims = {"sub": subject, "groups": list(groups)}
        path = start.get("search_path") if start is not None else None
        if path is None:
            self._assume("sessions whose starting search_path is not recorded: the default assumed")
            start_path = DEFAULT_PATH
        else:
            start_path = tuple(path)
        identity = Identity(subject, frozenset(groups), claims)
        session = offline_session(self.config, identity, sid)
        one = _Session(identity, start_path, form, session)
        if form != RECORD_FORMAT:
            one.context = self._context(start_path, start_path, frozenset(), DEFAULT_LEXER)
        self.sessions[sid] = one
        self.outcome.sessions += 1
        return one

    def _context(self, path: tuple[str, ...] | None, start: tuple[str, ...], possible: frozenset[str],
                 lexer: LexerSettings) -> SqlContext:
        return SqlContext(self.catalog, user=self.config.upstream.user, search_path=path, default_path=start,
                          possible=possible, lexer=lexer)

    def _statement_context(self, one: _Session, record: dict) -> SqlContext:
        if one.context is not None:  # format 1, or a session whose start is not in the files
            return one.context
        if "search_path" not in record:
            return self._context(one.start_path, one.start_path, frozenset(), DEFAULT_LEXER)
        path = record["search_path"]
        lexer = LexerSettings(**record["lexer"]) if "lexer" in record else DEFAULT_LEXER
        return self._context(None if path is None else tuple(path), one.start_path,
                             frozenset(record.get("search_path_possible") or ()), lexer)

    def add(self, located: Located) -> None:
        record = located.record
        kind = record["type"]
        if kind == "session_start":
            self._session(record)
        elif kind == "statement":
            self._statement(located)
        elif kind == "result":
            pending = self.pending.pop((record["session"], record["statement"]), None)
            if pending is not None:
                self._settle(pending, record)
        elif kind == "session_end":
            sid = record["session"]
            for key in [k for k in self.pending if k[0] == sid]:
                self._settle(self.pending.pop(key), None)
            self.sessions.pop(sid, None)

    def finish(self) -> None:
        for key in list(self.pending):
            self._settle(self.pending.pop(key), None)

    def _skip(self, why: str) -> None:
        self.outcome.skipped[why] = self.outcome.skipped.get(why, 0) + 1

    def _statement(self, located: Located) -> None:
        record = located.record
        why = _why_skipped(record)
        if why is not None:
            self._skip(why)
            return
        one = self._session(record)
        context = self._statement_context(one, record)
        decision = decide(self.config, self.host, one.identity, record["sql"], context, self.catalog,
                          session=one.session)
        unmasked = decision.verdict.rule == MASK_NEEDS_CATALOG and not self.catalog.complete
        if unmasked:
            # The mask plugin refuses what may read masked columns until it knows the tables'
            # columns, which only a database's catalog tells: the other rules still decide.
            decision = decide(self.config, self.host, one.identity, record["sql"], context, self.catalog,
                              session=self._without_masks(one.session), masking=False)
        self.outcome.statements += 1
        recorded = record["verdict"]
        if one.context is not None and recorded["action"] != "block":
            # Format 1: the proxy followed the search_path through what ran; so does the replay.
            analysis = decision.statement.analysed
            if analysis is not None:
                one.context = one.context.after(analysis)
        # Masks are compared where the recorded run and the candidate both let rows through
        # and the catalog knows the tables (else every output is opaque, masked whole).
        compare = recorded["action"] != "block" and decision.verdict.action != "block"
        if compare:
            why = MASKS_NEED_CATALOG if unmasked else self._masks_unknown(record, decision)
            if why is not None:
                self.outcome.masks_not_compared[why] = self.outcome.masks_not_compared.get(why, 0) + 1
                compare = False
        pending = Pending(located, decision, recorded, compare)
        key = (record["session"], record["statement"])
        previous = self.pending.pop(key, None)
        if previous is not None:  # decided again at a Bind (an approval): the earlier one ran no result
            self._settle(previous, None)
        self.pending[key] = pending

    @staticmethod
    def _without_masks(session: Session) -> Session:
        """``session`` with its policies' mask rules left out (its store, what the plugins keep of
        the session, shared)."""
        policies = tuple(attrs.evolve(p, rules=tuple(r for r in p.rules if r.kind != "mask")) for p in session.policies)
        return attrs.evolve(session, policies=policies)

    def _masks_unknown(self, record: dict, decision: Decision) -> str | None:
        """Why what masking would do cannot be told offline (None: it can)."""
        if not self.catalog.complete and not all(self._knows(t) for t in record.get("tables") or ()):
            return MASKS_NEED_CATALOG
        if any(lineage.refers is not None for lineage in decision.statement.lineage):
            return "that return the rows of a prepared statement or cursor the session defined"
        return None

    def _knows(self, table: str) -> bool:
        schema, _, name = table.rpartition(".")
        return any(r.schema == schema for r in self.catalog.relations_named(name))

    def _settle(self, pending: Pending, result: dict | None) -> None:
        recorded, verdict = pending.recorded, pending.decision.verdict
        record = pending.located.record
        example = {
            "sql": record["sql"],
            "subject": (record.get("identity") or {}).get("subject"),
            "session": record["session"],
            "statement": record["statement"],
            "where": pending.located.where,
            "recorded": recorded,
            "now": {"action": verdict.action, "policy": verdict.policy, "rule": verdict.rule,
                    "reason": verdict.reason},
        }
        if record.get("name"):
            example["name"] = record["name"]
        if result is not None and result.get("parameters") is not None:
            example["parameters"] = result["parameters"]
        action = verdict.action
        if action != recorded["action"]:
            kind = {"block": "now_blocked", "approve": "now_approval", "allow": "now_allowed"}[action]
            policy, rule = (recorded["policy"], recorded["rule"]) if action == "allow" else (verdict.policy,
                                                                                              verdict.rule)
            self.outcome.changes.append(Change(kind, policy, rule, example))
            return
        if action != "allow" and (verdict.policy, verdict.rule) != (recorded["policy"], recorded["rule"]):
            self.outcome.changes.append(Change("other_rule", verdict.policy, verdict.rule, example))
            return
        if pending.compare_masks and result is not None and result.get("sqlstate") is None:
            masked = pending.decision.masked
            was, now = _masked_keys(result, masked)
            if was != now:
                rules = sorted({m.rule for m in masked if m.rule} | {m["rule"] for m in result.get("masks") or ()})
                example["masked_before"] = sorted(f"{c} ({s})" if s else c for c, s in was)
                example["masked_now"] = sorted(f"{c} ({s})" if s else c for c, s in now)
                policy, _, rule = (rules[0] if len(rules) == 1 else ",".join(rules)).partition("/")
                self.outcome.changes.append(Change("masked_differently", policy or None, rule or None, example))
                return
        self.outcome.unchanged += 1


def replay(paths: list[str], config: Config, host: PluginHost, catalog: Catalog, *,
           allow_restarts: bool = False) -> Outcome:
    """Every statement of ``paths`` (oldest first) decided again under ``config``."""
    chain = verified(paths, allow_restarts)
    outcome = Outcome(chain, list(paths), catalog.source)
    replayer = Replayer(config, host, catalog, outcome)
    try:
        for located in read(paths):
            replayer.add(located)
    except (OSError, EOFError) as e:
        raise ReplayError(f"cannot read the records: {e}") from None
    replayer.finish()
    return outcome


# ---------------------------------------------------------------------- the report


def _short(sql: str, width: int = 120) -> str:
    one = " ".join(sql.split())
    return one if len(one) <= width else one[:width - 1] + "…"


def _literal(value: str | None) -> str:
    """A recorded parameter as SQL would show it: NULL, or quoted."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _verdict(v: dict) -> str:
    by = f" by {v['policy']}/{v['rule']}" if v.get("rule") else f" by {v['policy']}" if v.get("policy") else ""
    return f"{v['action']}{by}"


def report_lines(outcome: Outcome, candidate: str) -> list[str]:
    chain = outcome.chain
    start = "the start of the chain" if chain.starts_at == GENESIS else f"prev {chain.starts_at[:16]}… " \
        "(earlier files not given)"
    lines = [
        f"chain ok: {chain.records} records from {start}; head {(chain.head or '-')[:16]}…",
        f"replayed {outcome.statements} statements of {outcome.sessions} sessions against {candidate} "
        f"(catalog: {outcome.catalog})",
    ]
    for why, count in sorted(outcome.skipped.items()):
        lines.append(f"  not replayed: {count} {why}")
    for what, count in sorted(outcome.assumptions.items()):
        lines.append(f"  assumed: {count} {what}")
    for why, count in sorted(outcome.masks_not_compared.items()):
        lines.append(f"  masking not compared: {count} statements {why}")
    groups = outcome.grouped()
    for kind in CHANGES:
        mine = [g for g in groups if g["change"] == kind]
        if not mine:
            continue
        lines.append("")
        lines.append(f"{TITLES[kind]}: {sum(g['count'] for g in mine)}")
        for g in mine:
            rule = f"{g['policy'] or '-'}/{g['rule'] or '-'}" if g["policy"] or g["rule"] else "(no rule)"
            was = " (the rule that decided before)" if kind == "now_allowed" else ""
            lines.append(f"  {rule}{was}: {g['count']}")
            for ex in g["examples"]:
                lines.append(f"    {_short(ex['sql'])}")
                detail = f"was {_verdict(ex['recorded'])}, now {_verdict(ex['now'])}"
                if "masked_before" in ex:
                    detail = f"masked before: {', '.join(ex['masked_before']) or 'none'}; " \
                             f"now: {', '.join(ex['masked_now']) or 'none'}"
                params = f" · parameters {', '.join(_literal(p) for p in ex['parameters'])}" \
                    if "parameters" in ex else ""
                lines.append(f"      {ex['subject']} · {ex['where']} · {detail}{params}")
    lines.append("")
    changed = len(outcome.changes)
    lines.append(f"{changed} of {outcome.statements} statements decided differently" if changed
                 else f"no difference: {outcome.statements} statements decided as recorded")
    return lines
