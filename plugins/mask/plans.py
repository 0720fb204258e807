"""Lineage checked against the server's own plan (docs/masking.md, "The server's plan").

Lineage decides what is masked and what is an oracle by resolving every name of a statement the
way the server would. Where it resolves one differently, a masked column can be returned or
tested while lineage saw another. So before a statement that masking lets through runs, the
server is asked for its plan of it (`pgwarden.catalog.planner`, over pgwarden's own connection)
and the statement is refused when the plan:

* reads a masked column lineage never saw read (the value may be returned unmasked, or used);
* tests a masked column (a filter, a join or index condition, a sort or group key) that lineage
  found no use of as an oracle, and whose rule refuses oracles;
* scans an index whose key holds a masked column (an Index Scan or Index Only Scan: the rows
  come back in the masked column's order, whatever lineage saw; red team eleven: ``SELECT id FROM
  users`` through an index on ``(ssn, id)``), and its rule refuses oracles;
* scans a relation one of whose indexes of that kind another plan of the statement could scan
  instead (a custom plan for a parameter's value, a cursor's, one made after new statistics: red
  team twelve), or runs code planned apart (a function's body the planner does not inline) that
  reads a table with such an index; where the session's search_path is not known, the indexes of
  the masked tables the statement may read are judged so, the plan not being asked;
* computes a result column from a masked column lineage did not trace to it (the column's mask
  follows lineage's sources: it would come back in clear). The names the plan's top output list
  gives, itself or through a sub-plan's result, are compared: a value taken through a sub-select
  or CTE the planner keeps as a scan of its own is lineage's alone.

What the plan cannot show is left to lineage (but the rows' order, above): code in functions the
planner does not inline, and conditions on a column of a sub-select or CTE the planner kept apart (the plan names them
by the sub-select's alias, not by the base column). A statement the server will not plan on
pgwarden's connection because of a name (a temporary table of the session: class 42) or a lock
held by the session's own uncommitted catalog change (55P03) is judged by lineage alone; any
other failure (a timeout, the connection, a lock taken with LOCK TABLE) refuses a statement that
may touch masked tables: this check is not turned off by making it slow or by holding a lock.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from pgwarden.api import Session, Statement, StoreKey, Verdict
from pgwarden.catalog.planner import PlanRefused, PlanUnavailable
from pgwarden.catalog.plans import PlanUses
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings, parse_tree
from pgwarden.sql.lineage import UNTRACED, Source, inheritance_parents

if TYPE_CHECKING:
    from pgwarden.catalog.planner import ServerPlans
    from pgwarden_plugins.mask.rules import MaskRule, SessionRules

#: Statements whose plans EXPLAIN shows.
_PLANNED = frozenset({"SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"})
#: Statements that hold one (``query``): its plan is asked for.
_INNER = frozenset({"DeclareCursorStmt", "CopyStmt", "PrepareStmt", "ExplainStmt", "CreateTableAsStmt"})

Refuse = Callable[["MaskRule", str, str], Verdict]

log = Logger()


def plan_needed(rules: SessionRules, statement: Statement) -> bool:
    """Whether the server's plan could name a masked column lineage did not see: not when every
    relation the statement names is a plain table (no rules, no row-level security policies, no
    partitions or parents) whose columns no rule masks, and it calls only built-in functions. (A
    plan names only what the statement names, views, rules and policies expanded, SQL functions
    inlined.) Such statements, most of
    an application's, are not asked about: the question costs a round trip on pgwarden's
    connection (docs/performance.md)."""
    context = statement.context
    if context is None or not context.catalog.complete or context.stale or "unknown" in statement.kinds:
        return True
    catalog = context.catalog
    for name in statement.functions:
        found = catalog.functions_named(name)
        if not found or not all(fn.builtin for fn in found):
            return True
    globs = rules.masked_tables()
    parents = inheritance_parents(catalog)
    for table in statement.tables:
        if any(fnmatch.fnmatchcase(table, glob) for glob in globs):
            return True
        schema, _, name = table.partition(".")
        found_rels = [r for r in catalog.relations_named(name) if r.schema == schema]
        if len(found_rels) != 1:
            return True
        rel = found_rels[0]
        if rel.kind not in ("r", "p") or rel.rules or rel.policies or rel.oid in parents \
                or any(k == "i" for k, _ in rel.effects):
            return True  # (row-level security: the plan shows what its policies' conditions test)
    return False


#: Class-42 answers that say nothing of names only the session has: a parameter's type the server
#: cannot infer (`OR $2 IS NULL` left untyped by the client: the server would refuse it too; as a
#: way around the check, it had turned it off), an ambiguous operator or function between them.
_NOT_THE_SESSIONS = frozenset({"42P18", "42P08", "42725"})


def _left_to_lineage(sqlstate: str, stale: bool, message: str = "") -> bool:
    """Whether a statement the server would not plan on pgwarden's connection is judged by lineage
    alone: a name only the session has (class 42, but `_NOT_THE_SESSIONS`); a lock held by the
    session's own catalog change in its open transaction (55P03 while the context is ``stale``:
    lineage then masks every output whole). A lock taken otherwise (``LOCK TABLE``) does not turn
    this check off."""
    if sqlstate == "42704" and "configuration parameter" in message:
        # a custom setting the question did not carry (set by code, or at the session's start:
        # `SET app.k` the question repeats): not a name only the session has, a way around the
        # check (red team seven: `WHERE id = current_setting('app.k')::int` had turned it off)
        return False
    return sqlstate.startswith("42") and sqlstate not in _NOT_THE_SESSIONS or sqlstate == "55P03" and stale


#: the custom settings (``app.tenant``: a name with a dot) the session set, by name: their value,
#: or `UNKNOWN_VALUE` (set from a parameter or an expression)
CUSTOM_SETTINGS = StoreKey["dict[str, str]"]("mask.custom_settings")
UNKNOWN_VALUE = "\x00"


def follow_settings(statement: Statement, session: Session) -> None:
    """Keeps `CUSTOM_SETTINGS` as the statement leaves them (SET, RESET, set_config, DISCARD): the
    plan question sets the same (read before the statement runs; a transaction rolled back may
    leave an older value the question still uses: its plan is asked all the same)."""
    changes = statement.analysis.settings
    if not changes:
        return
    known = session.store.setdefault(CUSTOM_SETTINGS, {})
    for name, value in changes:
        if name == "*":  # RESET ALL, DISCARD ALL: each defined, empty
            for key in known:
                known[key] = ""
        elif "." in name:
            known[name] = "" if value is None else value


def custom_settings(session: Session) -> tuple[tuple[str, str], ...]:
    """The custom settings whose values pgwarden knows, for the plan question."""
    known = session.store.get(CUSTOM_SETTINGS, None)
    if not known:
        return ()
    return tuple(sorted((n, v) for n, v in known.items() if v != UNKNOWN_VALUE))


def planned_texts(statement: Statement) -> tuple[tuple[int, str, bool], ...] | None:
    """The texts of the statements of ``statement.sql`` the server plans, and of the queries
    inside a DECLARE, a COPY, a PREPARE, an EXPLAIN or a CREATE TABLE AS (printed again from the
    parse tree by pglast): (the statement's index, the text, whether the plan's result is the
    statement's); None when the string cannot be split (lineage already judged it)."""
    context = statement.context
    return _planned_texts(statement.sql, context.lexer if context is not None else DEFAULT_LEXER)


@functools.lru_cache(maxsize=4096)
def _planned_texts(sql: str, lexer: LexerSettings) -> tuple[tuple[int, str, bool], ...] | None:
    """`planned_texts`, kept per text: a statement asked about again (its answer kept) is not
    parsed again for it."""
    from pglast.parser import ParseError

    try:
        tree = parse_tree(sql, lexer)
    except (ParseError, ValueError, TypeError):
        return None
    raw = sql.encode("utf-8")
    texts = []
    for index, entry in enumerate(tree.get("stmts", [])):
        stmt = entry.get("stmt") or {}
        kind = next(iter(stmt), None)
        if kind not in _PLANNED and kind not in _INNER and kind != "TransactionStmt":
            break  # (a SET, DDL, ...: what follows is planned in another context than the session's now)
        if kind in _PLANNED:
            start = entry.get("stmt_location", 0)
            length = entry.get("stmt_len", 0)
            text = raw[start:start + length] if length else raw[start:]
            texts.append((index, text.decode("utf-8"), True))
        elif kind in _INNER and (stmt[kind] or {}).get("query") is not None:
            inner = _inner_query(sql, index, lexer)
            if inner is not None:
                texts.append((index, inner, False))
    return tuple(texts)


def _inner_query(sql: str, index: int, lexer: LexerSettings) -> str | None:
    """The query inside statement ``index`` of ``sql``, printed by pglast (under the default lexer
    settings only: pglast reads text under those)."""
    if not lexer.default:
        return None
    try:
        import pglast
        from pglast.stream import RawStream

        stmt: Any = pglast.parse_sql(sql)[index].stmt
        return RawStream()(stmt.query)
    except Exception:  # noqa: BLE001 - what pglast cannot print is left to lineage
        return None


def prepared_queries(statement: Statement) -> tuple[tuple[str, str], ...]:
    """(name, the query printed by pglast) of each SQL-level PREPARE of ``statement.sql``: asked
    about again at each EXECUTE of the name (`check_against_plans`' ``executed``)."""
    context = statement.context
    lexer = context.lexer if context is not None else DEFAULT_LEXER
    from pglast.parser import ParseError

    try:
        tree = parse_tree(statement.sql, lexer)
    except (ParseError, ValueError, TypeError):
        return ()
    found = []
    for index, entry in enumerate(tree.get("stmts", [])):
        stmt = (entry.get("stmt") or {}).get("PrepareStmt")
        if stmt is not None and stmt.get("name"):
            inner = _inner_query(statement.sql, index, lexer)
            if inner is not None:
                found.append((str(stmt["name"]), inner))
    return tuple(found)


def check_against_plans(plans: ServerPlans, rules: SessionRules, statement: Statement,
                        may_touch: bool, refuse: Refuse, types: tuple[int, ...] = (),
                        settings: tuple[tuple[str, str], ...] = (),
                        executed: tuple[str, ...] = (),
                        executed_tables: frozenset[str] = frozenset()) -> Deferred[Verdict | None] | None:
    """None when there is nothing to ask; else a Deferred of the refusal (or None) once the
    server's plans of the statement's parts are compared with their lineage. ``types``: the
    parameter types the client declared in the statement's Parse (one statement: they type the
    ``$n`` of its text, and of the query inside it); ``settings``: the custom settings the session
    set, whose values pgwarden knows (`custom_settings`); ``executed``: the queries of the SQL-level
    prepared statements it EXECUTEs (`prepared_queries`), asked about again: the server plans
    them again after a new index or new statistics, and for the EXECUTE's arguments (red team
    twelve: ``EXECUTE q`` after an operator's index on ``(name, ssn)`` came back in SSN order);
    ``executed_tables``: the tables those queries read."""
    context = statement.context
    if context is None:
        return None
    if context.search_path is None:
        # Lineage treats an uncertain search_path (after an EXECUTE, a DO block, a CALL: code that
        # may have set it), resolving names in every schema it may hold; the plan cannot be asked
        # in it. What the plan would show of the rows' order is asked of the tables instead (red
        # team twelve: `PREPARE x AS SELECT 1; EXECUTE x` had turned the whole check off, and `...
        # WHERE name = 'alice'` came back in SSN order through an index on (name, ssn)); and the
        # plan in the path RESET returns to is compared with what lineage saw (over every schema:
        # a plan of other relations than the session's adds nothing lineage did not count).
        asked = [d for d in (_unknown_path(plans, rules, statement, may_touch, refuse, executed_tables),
                             _ask_plans(plans, rules, statement, may_touch, refuse, types, settings, executed,
                                        tuple(context.default_path))) if d is not None]
        if not asked:
            return None
        return gatherResults(asked).addCallback(lambda found: next((v for v in found if v is not None), None))
    return _ask_plans(plans, rules, statement, may_touch, refuse, types, settings, executed,
                      tuple(context.search_path))


def _ask_plans(plans: ServerPlans, rules: SessionRules, statement: Statement, may_touch: bool, refuse: Refuse,
               types: tuple[int, ...], settings: tuple[tuple[str, str], ...], executed: tuple[str, ...],
               path: tuple[str, ...]) -> Deferred[Verdict | None] | None:
    """`check_against_plans` in search_path ``path``."""
    context = statement.context
    assert context is not None
    if not executed and not plan_needed(rules, statement):
        return None
    texts = (planned_texts(statement) or ()) + tuple((-1, text, False) for text in executed)
    if not texts:
        return None
    lexer = context.lexer
    globs = rules.masked_tables()
    unseen = tuple(sorted(t for t in getattr(statement.analysis, "body_tables", ())
                          if any(fnmatch.fnmatchcase(t, glob) for glob in globs)))
    asked = [plans.plan(text, path, lexer.standard_conforming_strings, types, settings, unseen)
             for _, text, _ in texts]
    lineages = statement.lineage
    results = [lineages[index] if direct and index < len(lineages) else None for index, _, direct in texts]

    def compare(answers: list[Any]) -> Verdict | None:
        return _compare(answers, rules, lineages, may_touch, refuse, context.stale, results)

    return gatherResults(asked).addCallback(compare)


def _unknown_path(plans: ServerPlans, rules: SessionRules, statement: Statement, may_touch: bool,
                  refuse: Refuse, executed_tables: frozenset[str] = frozenset()) -> Deferred[Verdict | None] | None:
    """`check_against_plans` where the session's search_path is not known: the indexes of the
    tables holding masked columns the statement may read (lineage's, over every schema the path may
    hold) are read (`PlanUses.unseen_orders`), and one whose order a read could show refuses it."""
    if not executed_tables and not plan_needed(rules, statement):
        return None
    globs = rules.masked_tables()
    read = _read_tables(statement) | set(getattr(statement.analysis, "body_tables", ())) | executed_tables
    tables = tuple(sorted(t for t in read if any(fnmatch.fnmatchcase(t, glob) for glob in globs)))
    if not tables:
        return None

    def compare(answer: Any) -> Verdict | None:
        if not isinstance(answer, PlanUses):
            if not may_touch:
                return None
            return refuse(rules.columns[0], "pgwarden could not read the indexes of the tables this statement reads",
                          "It may read masked columns, and the session's search_path is not known. Retry shortly.")
        for index in sorted(answer.unseen_orders, key=str):
            found = _ordering(index, rules, set())
            if found is not None:
                source, rule = found
                return refuse(rule,
                              f"this statement may read rows in the order of an index on masked column {source}, "
                              "and pgwarden cannot ask the server's plan of it: the session's search_path is not "
                              "known (after an EXECUTE, a DO block or a CALL)",
                              "The order rows come back in would tell how the masked values compare. Set the "
                              "search_path to a literal value (SET search_path TO ...) and pgwarden checks the "
                              "plan again; or add an ORDER BY on a column that tells rows apart.")
        return None

    return plans.plan("SELECT 1", ("pg_catalog",), True, (), (), tables).addCallback(compare)


def _read_tables(statement: Statement) -> set[str]:
    """The tables whose rows ``statement`` reads, by lineage (a write's target written, not read,
    is not among them: ``INSERT INTO users VALUES ...``); every table it names when lineage
    cannot say."""
    sources: set = set()
    for lineage in statement.lineage:
        for body in [lineage] + [b for _, _, b in lineage.defines]:
            if body.reads is None:
                return set(statement.tables)
            sources |= set(body.reads)
            for output in body.outputs or ():
                sources |= set(output.sources)
    if UNTRACED in sources or not all(isinstance(s, Source) for s in sources):
        return set(statement.tables)  # (a value pgwarden cannot trace: any table it names)
    return {f"{s.schema}.{s.table}" for s in sources}


def _refusing_oracles(rules: SessionRules, source: Any, oracles: Any) -> Any:
    """The rule of masked column ``source`` when it refuses oracles and lineage saw none of it (a
    plan's test or index order of it is then one lineage missed), else None."""
    rule = rules.rule_for(str(source))
    if rule is None or rule.spec.oracle != "refuse" or source in oracles or UNTRACED in oracles:
        return None
    return rule


def _compare(answers: list[Any], rules: SessionRules, lineages: Any, may_touch: bool,
             refuse: Refuse, stale: bool = False, results: list[Any] | None = None) -> Verdict | None:
    seen_all = any(lineage.reads is None for lineage in lineages)
    seen: set = set()
    oracles: set = set()
    for lineage in lineages:
        for body in [lineage] + [b for _, _, b in lineage.defines]:
            seen |= body.reads or set()
            for output in body.outputs or ():
                seen |= output.sources
            oracles |= {use.source for use in body.oracles}
    for answer, result in zip(answers, results or [None] * len(answers), strict=True):
        if isinstance(answer, PlanUnavailable) or \
                isinstance(answer, PlanRefused) and not _left_to_lineage(answer.sqlstate, stale, answer.message):
            if not may_touch:
                continue
            if isinstance(answer, PlanUnavailable):
                # (what failed names the upstream's host and port: the operator's log, not the agent's)
                log.warn("masking: the server's plan could not be read: {reason}", reason=answer.reason)
                reason = "pgwarden's connection to the database failed"
            else:
                reason = f"SQLSTATE {answer.sqlstate}"
            return refuse(rules.columns[0],
                          f"pgwarden could not check this statement against the server's plan ({reason})",
                          "It may read masked columns, and pgwarden checks its reading of such statements "
                          "with the server's own plan before they run. Retry shortly.")
        if not isinstance(answer, PlanUses):
            continue
        for source in sorted(answer.tests, key=str):
            rule = _refusing_oracles(rules, source, oracles)
            if rule is None:
                continue
            return refuse(rule,
                          f"the server's plan of this statement tests masked column {source} (a condition, "
                          "a sort or a grouping), and pgwarden did not see where",
                          "Which rows come back, or in which order, would reveal its values. pgwarden checks "
                          "its reading of each statement against the server's own plan; here they disagree.")
        for source in sorted(answer.orders, key=str):
            rule = _refusing_oracles(rules, source, oracles)
            if rule is None:
                continue
            return refuse(rule,
                          f"the server's plan of this statement reads rows in the order of an index on masked "
                          f"column {source}",
                          "The order rows come back in would tell how the masked values compare (with a row "
                          "you wrote, a binary search). Add an ORDER BY on columns no rule masks, or ask an "
                          "operator to drop the index or use `oracle: allow`.")
        refused = _may_order(answer, rules, oracles, refuse)
        if refused is not None:
            return refused
        for source in sorted(answer.reads, key=str):
            rule = rules.rule_for(str(source))
            if rule is None or seen_all or source in seen:
                continue
            return refuse(rule,
                          f"the server's plan of this statement reads masked column {source}, and pgwarden "
                          "did not see where",
                          "pgwarden checks its reading of each statement against the server's own plan; "
                          "here they disagree. Name the columns you need in a plain SELECT: masked columns "
                          "come back masked.")
        refused = _outputs_differ(answer, result, rules, refuse, oracles)
        if refused is not None:
            return refused
    return None


def _ordering(index: Any, rules: SessionRules, oracles: set) -> tuple[Any, Any] | None:
    """(the masked key column, its rule) when ``index`` (key columns, every column it holds) is
    one whose order a read could show: its key holds a masked column whose rule refuses oracles,
    and it holds another column whose values a read tells apart (`_shows`: the rows' order then
    shows through it: ``(name, ssn)`` returns alice's rows in SSN order; ``(ssn, card_number)``
    the cards' last digits). An index of that column alone is not counted here: read alone it
    returns ``***`` (`redact`), or its own masked values in their order (`partial`, `hash`: seen
    only where the question's plan shows it; a unique index on an e-mail column is common)."""
    key, columns = index
    for source in key:  # (in the key's order: the first such column)
        rule = _refusing_oracles(rules, source, oracles)
        if rule is not None:
            if any(_shows(rules, column) for column in columns if column != source):
                return source, rule
            return None
    return None


#: Strategies whose masked values all look alike (a row read through them is told from no other)
_ALIKE = frozenset({"redact", "null", "fixed"})


def _shows(rules: SessionRules, column: Any) -> bool:
    """Whether what a read returns of ``column`` tells its rows apart: no rule masks it, or its
    rule keeps values apart (`partial`'s last digits, `hash`, `email`'s domain)."""
    rule = rules.rule_for(str(column))
    return rule is None or rule.spec.with_ not in _ALIKE


def _may_order(answer: PlanUses, rules: SessionRules, oracles: set, refuse: Refuse) -> Verdict | None:
    """An index whose key holds a masked column that another plan of the statement could scan
    (`PlanUses.may_order`: a custom plan for a parameter's value, a cursor's plan, the plan after
    the statistics changed: red team twelve), or that code it runs may scan in a plan of its own
    (`PlanUses.unseen_orders`: a function's body)."""
    for index in sorted(answer.may_order, key=str):
        found = _ordering(index, rules, oracles)
        if found is not None:
            source, rule = found
            return refuse(rule,
                          f"this statement may read rows in the order of an index on masked column {source} "
                          "(the plan it runs with may differ from the one pgwarden sees)",
                          "The server chooses the plan again for a parameter's value, a cursor or new statistics, "
                          "and the order rows come back in would tell how the masked values compare. Add an "
                          "ORDER BY on a column that tells rows apart, or ask an operator to drop the index or "
                          "use `oracle: allow`.")
    for index, shown in sorted(answer.may_cover, key=str):
        found = _ordering(index, rules, oracles)
        if found is None:
            continue
        source, rule = found
        before = index[0][:index[0].index(source)]  # (the key's columns above the masked one)
        if all(column in before for column in shown):
            continue  # what it shows of each row is sorted above the masked column: its ties look alike
        return refuse(rule,
                      f"this statement may read rows in the order of an index on masked column {source} "
                      "(an index only scan of it holds every column the statement reads)",
                      "The server may scan that index instead of the table (after new statistics, or a VACUUM), "
                      "and the order rows come back in would tell how the masked values compare. Add an ORDER "
                      "BY on a column that tells rows apart, or ask an operator to drop the index or use "
                      "`oracle: allow`.")
    for index in sorted(answer.unseen_orders, key=str):
        found = _ordering(index, rules, oracles)
        if found is not None:
            source, rule = found
            return refuse(rule,
                          f"code this statement runs reads {source.schema}.{source.table}, which has an index on "
                          f"masked column {source}, in a plan pgwarden cannot see",
                          "A function's body the planner does not inline is planned apart, and may read rows in "
                          "that index's order, which would tell how the masked values compare. Read the table in "
                          "the statement itself, or ask an operator to drop the index or use `oracle: allow`.")
    return None


def _outputs_differ(answer: PlanUses, lineage: Any, rules: SessionRules, refuse: Refuse,
                    oracles: set) -> Verdict | None:
    """A result column the plan computes from a masked column that lineage traced elsewhere: its
    mask would follow lineage's sources, and the value would come back in clear. (A column lineage
    saw compared, an oracle its rule allows, is not: ``count(*) FILTER (WHERE ssn LIKE '8%')``.)"""
    outputs = lineage.outputs if lineage is not None and not lineage.opaque else None
    if not outputs or len(answer.outputs) < len(outputs):
        return None
    for index, (planned, output) in enumerate(zip(answer.outputs, outputs, strict=False)):
        if output.opaque:
            continue  # masked whole when it may hold a masked column
        for source in sorted(planned - output.sources - oracles, key=str):
            rule = rules.rule_for(str(source))
            if rule is not None:
                return refuse(rule,
                              f"the server's plan computes result column {index + 1} ({output.name}) from masked "
                              f"column {source}, and pgwarden traced it elsewhere",
                              "Its mask would follow pgwarden's reading, not the server's. pgwarden checks its "
                              "reading of each statement against the server's own plan; here they disagree.")
    return None
