"""Built-in plugin ``block``: interprets ``block`` and ``allow`` rules and ``default: block``.

Every matching rule of every policy that applies to the session is considered;
the strictest verdict wins. A policy with ``default: block`` blocks what none of
its ``allow`` (or ``approve``) rules matches. Refusals follow the error contract:
SQLSTATE 42501, ``pgwarden: blocked: <reason>``, DETAIL naming policy and rule,
and a HINT an agent can act on.
"""

from __future__ import annotations

import fnmatch

import attrs

from pgwarden.api import ALLOW, APPROVE, BLOCK, Policy, Session, Statement, StatementMatch, StoreKey, Verdict, hookimpl
from pgwarden.plugin_call import Precheck
from pgwarden.session import PROTOCOL_PREPARED, UNCHECKED
from pgwarden.sql.resolve import resolve

# What each SQL-level PREPAREd statement of a session does, for its later EXECUTEs.
PREPARED = StoreKey[dict]("block.prepared")  # name -> the Syntax of every body prepared under it
# Once statements went to the server unseen (`UNCHECKED`), any name may have been prepared (or
# deallocated and prepared again) there: the names whose history is known again since (none: a
# DEALLOCATE that pgwarden judged may not have run), or None while every name's is.
SURE = StoreKey["set[str] | None"]("block.sure")


@attrs.frozen
class _Executed:
    """A statement together with the prepared statements it EXECUTEs."""

    kinds: frozenset[str]
    tables: frozenset[str]
    functions: frozenset[str]
    has_where: bool | None
    indirect_writes: frozenset[tuple[str, str]] = frozenset()


VerdictMemo = dict[tuple[int, int], tuple[object, object, "Verdict | None"]]


def judged(memo: VerdictMemo, judge, statement, session, policies) -> Verdict | None:
    """``judge(statement, policies)``, remembered per analysis and policies: the same text in
    the same context is judged once. Statements that prepare, execute or deallocate are judged
    each time, with the bodies of the named statements they execute (`_with_executed`)."""
    analysis = statement.analysed or statement.analysis  # (the attribute first: the property is a call)
    if analysis.uses_prepared:  # (prepares, executes, deallocates, or may by a function's body)
        return judge(_with_executed(statement, session), policies)
    key = (id(analysis), id(policies))
    cached = memo.get(key)
    if cached is not None and cached[0] is analysis and cached[1] is policies:
        return cached[2]
    verdict = judge(statement, policies)
    if len(memo) > 10_000:
        memo.clear()
    # The entry keeps both objects alive, so their ids cannot be reused meanwhile.
    memo[key] = (analysis, policies, verdict)
    return verdict


def _with_executed(statement, session):
    """The statement with what the prepared statements it EXECUTEs do.

    Names are kept as the server keeps them (case-sensitive once the parser has folded
    them). Whether a PREPARE or a DEALLOCATE runs, pgwarden cannot tell when it judges it (an
    earlier statement of its string may fail, the server refuses a PREPARE of a name it holds, a
    Parse of its text may never be executed): every body ever prepared under a name counts, a
    DEALLOCATE forgets none, and a name that may hold a statement no check saw as its body (one
    a protocol-level Parse took, `PROTOCOL_PREPARED`; any, once statements went by unchecked)
    stays unknown to EXECUTE for the rest of the session (red team five ran an approval-held
    INSERT Parsed under a name, then `SELECT 1/0; DEALLOCATE p`, `PREPARE p AS SELECT 1` and
    `EXECUTE p`). Each body is resolved again in the context of the EXECUTE, since the server
    plans it again under the search_path then.
    """
    analysis = statement.analysis
    store = session.store
    prepared = store.setdefault(PREPARED, {})
    if store.get(UNCHECKED, False):  # statements went by unseen: any name may be another statement
        store[UNCHECKED] = False
        store[SURE] = set()
    sure = store.get(SURE, None)
    taken = store.get(PROTOCOL_PREPARED, None)  # names a protocol Parse took: their statement is not a body seen here
    for name, _body, syntax in analysis.prepares:
        bodies = prepared.setdefault(name, [])
        if not any(b is syntax for b in bodies):  # judged again for each shadow view: kept once
            bodies.append(syntax)
            if len(bodies) > 100 or len(prepared) > 10_000:  # a client that prepares without end
                prepared.clear()
                sure = store[SURE] = set()  # every name unknown from here on
    if analysis.prepares_unseen:  # a function's body, or what cannot be analysed, may (re)PREPARE any name
        sure = store[SURE] = set()
    if not analysis.executes:
        return statement
    kinds, tables, functions = set(analysis.kinds), set(analysis.tables), set(analysis.functions)
    indirect = set(analysis.indirect_writes)
    wheres = [] if analysis.has_where is None else [analysis.has_where]
    for name in analysis.executes:
        bodies = prepared.get(name)
        if not bodies or (sure is not None and name not in sure) or (taken and name in taken):
            # prepared before pgwarden could see it, or never, or maybe again unseen: the worst
            kinds.add("unknown")
            wheres.append(False)
            if not bodies:
                continue
        for syntax in bodies:
            body = resolve(syntax, statement.context) if statement.context is not None else None
            if body is None:
                kinds.add("unknown")
                continue
            kinds |= body.kinds
            tables |= body.tables
            functions |= body.functions
            indirect |= body.indirect_writes
            if body.has_where is not None:
                wheres.append(body.has_where)
    return _Executed(frozenset(kinds), frozenset(tables), frozenset(functions), all(wheres) if wheres else None,
                     frozenset(indirect))


_NAMES = {
    "delete": "DELETE", "update": "UPDATE", "insert": "INSERT", "merge": "MERGE", "truncate": "TRUNCATE",
    "ddl": "schema changes (DDL)", "grant": "GRANT/REVOKE", "role": "role changes", "system": "system administration",
    "copy_program": "COPY ... PROGRAM", "copy_file": "COPY to or from a server file", "copy_from": "COPY FROM",
    "copy_to": "COPY TO", "do": "DO blocks", "call": "CALL", "lock": "LOCK", "maintenance": "maintenance (VACUUM, ...)",
    "unknown": "statements pgwarden cannot analyse", "select": "SELECT",
    "side_effect": "functions that change state", "server_files": "reading server files",
}
_PLURAL = {"ddl", "role", "do", "unknown", "side_effect"}  # their names above are plural: "... are not allowed"


def _statement_rule(rule) -> StatementMatch | None:
    """The options of a block or allow rule (those that may name `unknown`), else None."""
    return BLOCK.of(rule) or ALLOW.of(rule)


def matches(spec: StatementMatch, statement) -> list[str]:
    """What of ``statement`` the match ``spec`` hits (empty: no match). All given fields must hold.

    A match that names both statements and tables also holds for a write of one of those kinds
    to one of those tables that the statement does not say (`Analysis.indirect_writes`: a foreign
    key's ON DELETE SET NULL updating the referencing table, an UPDATE of a partitioned table
    moving rows out of one partition into another)."""
    hit: list[str] = []
    kinds = statement.kinds & set(spec.statements) if spec.statements else None
    tables = sorted(t for t in statement.tables if any(fnmatch.fnmatchcase(t, g) for g in spec.tables)) \
        if spec.tables else None
    if spec.statements and spec.tables and not (kinds and tables):
        pairs = sorted((k, t) for k, t in statement.indirect_writes
                       if k in spec.statements and any(fnmatch.fnmatchcase(t, g) for g in spec.tables))
        if pairs:
            kinds, tables = {k for k, _ in pairs}, sorted({t for _, t in pairs})
    if kinds is not None:
        if not kinds:
            return []
        hit += sorted(kinds)
    if tables is not None:
        if not tables:
            return []
        hit += tables
    if spec.functions:
        functions = sorted(
            f for f in statement.functions if any(fnmatch.fnmatchcase(f, g.lower()) for g in spec.functions)
        )
        if not functions:
            return []
        hit += [f"{f}()" for f in functions]
    if spec.where == "absent":
        if statement.has_where is not False:
            return []
        hit.append("without a WHERE clause")
    return hit or ["everything"]


def _reason(rule, hit: list[str]) -> str:
    if rule.reason:
        return rule.reason
    named = [h for h in hit if h != "without a WHERE clause"]
    text = ", ".join(_NAMES.get(h, h) for h in named) or "this statement"
    if "without a WHERE clause" in hit:
        text += " without a WHERE clause that selects rows"
    plural = len(named) > 1 or (len(named) == 1 and named[0] in _PLURAL)
    return f"{text} {'are' if plural else 'is'} not allowed"


def _hint(rule, hit: list[str], statement) -> str:
    if rule is not None and rule.hint:
        return rule.hint
    if "without a WHERE clause" in hit:
        verb = "DELETE" if "delete" in statement.kinds else "UPDATE"
        return f"{verb} needs a WHERE clause that selects the rows to change; reads are allowed."
    if "unknown" in hit:
        why = _unknown_why(statement)
        if why is not None:
            return f"pgwarden could not tell what this statement does: {why}."
        return ("pgwarden could not tell what this statement does (it does not parse, or it calls a function or "
                "operator the catalog does not know, or runs SQL built at run time); write it plainly.")
    return "This statement is refused by policy; reads (SELECT) may be allowed, ask an operator for anything else."


def _unknown_why(statement) -> str | None:
    """Why a statement is `unknown`, when it is one of the two reasons an agent trips over: its text
    does not parse (a typo), or it calls functions of names the catalog has none of (a misspelt
    name, an extension not installed). From what every statement of its shape has alike (the memo
    of verdicts is shared by statements that differ in constants only): never its constants."""
    try:
        from pglast.parser import ParseError, parse_sql

        try:
            parse_sql(statement.sql)
        except ParseError:
            return "it does not parse (a syntax error: pgwarden reads it with PostgreSQL's own parser); fix its syntax"
        catalog = statement.context.catalog if statement.context is not None else None
        if catalog is None:
            return None
        missing = sorted(f for f in statement.analysis.functions if not catalog.functions_named(f.split(".")[-1]))
    except Exception:  # noqa: BLE001 - only a hint: the general one
        return None
    if not missing:
        return None
    names = ", ".join(f"{name}()" for name in missing)
    return (f"the database has no function named {names} (a misspelt name, or an extension that is not "
            f"installed?); use one the database has")


class Blocking:
    """The verdicts depend only on what a statement does and on the policies: they are
    memoised per (analysis, policies), and analyses are shared by statements that
    differ only in constants, so the rules are evaluated once per kind of statement.

    The memos are its `Precheck`'s (``precheck``, compiled): the plugin host asks it first, and
    calls ``pgwarden_check`` only when it cannot answer from them (`Precheck.answer`)."""

    def __init__(self) -> None:
        self.precheck = Precheck()
        self._verdicts: VerdictMemo = self.precheck.verdicts
        # per policies tuple: whether any rule is to be enforced
        self._enforcing: dict[int, tuple[object, bool]] = self.precheck.enforcing

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [BLOCK, ALLOW]

    @hookimpl
    def pgwarden_check(self, statement: Statement, session: Session) -> Verdict | None:
        policies = session.policies
        known = self._enforcing.get(id(policies))
        if known is not None and known[0] is policies:
            enforcing = known[1]
        else:
            enforcing = any(p.rules or p.default == "block" for p in policies)
            if len(self._enforcing) > 1000:
                self._enforcing.clear()
            self._enforcing[id(policies)] = (policies, enforcing)  # keeps the tuple, and so its id
        if not enforcing:
            # No rule to enforce; still, what cannot be analysed is refused (docs/analysis.md, kinds).
            # (The analysis attribute first: the decision has nearly always made it; `kinds` is a call.)
            if "unknown" in (statement.analysed or statement.analysis).kinds:
                return self._judge(statement, policies)
            return None
        return judged(self._verdicts, self._judge, statement, session, policies)

    def _judge(self, statement, policies: tuple[Policy, ...]) -> Verdict | None:
        verdicts = []
        unknown = "unknown" in statement.kinds
        for policy in policies:
            covered: set[str] = set()  # the kinds of the statement that allow/approve rules name
            # What pgwarden cannot analyse is blocked unless a rule names `unknown` in an allow rule
            # (or in a block rule, which then says why).
            unknown_allowed = not unknown or any(
                "unknown" in spec.statements for spec in map(_statement_rule, policy.rules) if spec is not None)
            if not unknown_allowed:
                verdicts.append(Verdict.block(
                    "statements pgwarden cannot analyse are not allowed",
                    _hint(None, ["unknown"], statement), policy=policy.name, rule="unknown: block"))
            for i, rule in enumerate(policy.rules):
                where = {"policy": policy.name, "rule": rule.name or f"rules[{i}]"}
                blocks = BLOCK.of(rule)
                if blocks is not None:
                    hit = matches(blocks, statement)
                    if hit:
                        verdicts.append(Verdict.block(_reason(rule, hit), _hint(rule, hit, statement), **where))
                else:
                    spec = ALLOW.of(rule) or APPROVE.of(rule)  # approve: its plugin decides
                    if spec is not None and matches(spec, statement):
                        covered |= set(spec.statements) if spec.statements else set(statement.kinds)
            # `default: block` allows a statement only when every kind of it is allowed: a SELECT
            # that deletes in a CTE or calls nextval() is not "a select".
            uncovered = statement.kinds - covered
            if policy.default == "block" and (uncovered or not statement.kinds and not covered):
                verdicts.append(Verdict.block(
                    f"{', '.join(_NAMES.get(k, k) for k in sorted(uncovered or statement.kinds)) or 'this statement'} "
                    f"is not among what policy {policy.name!r} allows",
                    "Only the statements this policy's allow rules name are permitted; ask an operator for more.",
                    policy=policy.name, rule="default: block",
                ))
        return Verdict.strictest(verdicts) if verdicts else None
