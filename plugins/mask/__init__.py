"""Built-in plugin ``mask``: interprets ``mask`` rules (docs/masking.md).

At statement time (`pgwarden_check`) it refuses what masking cannot make safe: a masked column
used where it reveals its values without being returned (an *oracle*: ``WHERE ssn LIKE '1%'``),
unless the rule says ``oracle: allow``; a statement whose lineage cannot be established when a
rule says ``unknown: refuse``; anything that could touch a masked column while the live catalog
is unreachable. A plain read is never refused: it is masked.

At result time (`pgwarden_result_masks`) each output column gets, from the columns the core
resolved: the rule's strategy when it *is* a masked column; the whole value masked (``redact``,
or NULL where the type has no text form) when it is *derived* from one or its lineage is
unknown and a masked column could be involved; the detectors of ``detect`` rules on text
columns. Errors and notices of statements that read masked columns have their quoted values
redacted, and every error and notice is scanned by the detectors (`pgwarden_message_masks`).
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred

from pgwarden.api import (
    MASK,
    Column,
    ColumnMask,
    ConfigProblem,
    Detector,
    MessageMask,
    ResultColumn,
    ResultShape,
    Session,
    Statement,
    StoreKey,
    Verdict,
    hookimpl,
)
from pgwarden.mask_rows import Detection
from pgwarden.masking import COPY_REFUSAL, copy_options
from pgwarden.session import PROTOCOL_PREPARED, SERVER_PLANS, cursor_stale, declared_types
from pgwarden.sql.lineage import UNTRACED, names_revealing, reveals_values
from pgwarden_plugins.mask import code as hidden_code
from pgwarden_plugins.mask import values
from pgwarden_plugins.mask.detectors import BUILTIN, Scanner
from pgwarden_plugins.mask.plans import check_against_plans, custom_settings, follow_settings, prepared_queries
from pgwarden_plugins.mask.rules import MaskRule, SessionRules

_REDACT = values.redact()
_NULL = values.null()
# A derived or untraceable output is masked whole: redacted, or NULL where the rule says null.
_WHOLE_STRENGTH = {True: ("null", 5), False: ("redact", 4)}
# What clauses are called in a refusal's hint.
_CLAUSES = {"where": "WHERE", "join": "JOIN ... ON", "order by": "ORDER BY", "group by": "GROUP BY",
            "distinct": "DISTINCT", "having": "HAVING", "window": "a window's PARTITION BY / ORDER BY",
            "aggregate": "an aggregate's argument", "filter": "an aggregate's FILTER", "limit": "LIMIT",
            "case": "a CASE condition", "write": "a value written to a table",
            "set operation": "UNION / INTERSECT / EXCEPT (they compare rows)",
            "policy": "a row-level security policy's condition (on a table the statement reads or writes)",
            "execute": "an EXECUTE's argument (the prepared statement may test it or count rows by it)",
            "cursor": ("a cursor declared before what its query runs was defined again (its conditions were "
                       "judged on the definitions before)")}
# Statement kinds that keep a value somewhere a later statement reads it back unmasked.
_KEEPS = frozenset({"side_effect", "listen", "set"})
_COPY_SERVER_SIDE = frozenset({"copy_file", "copy_program"})
# Functions whose argument stays visible after the statement: an advisory lock's key, in pg_locks.
_KEEPING_FUNCTIONS = ("pg_advisory", "pg_try_advisory",
                      # ... the random generator's seed, which the next random() shows
                      "setseed")
# DDL on a table that would let its masked values out: a rename or a new schema (the rules name
# the column by schema.table.column), a generated column, a column's new type USING an
# expression, a CHECK constraint or a unique index (it fails, quoting the value, or not: an
# oracle), a trigger, a rule or a row-level policy (code that sees the values).
_DDL_ON_TABLES = frozenset({"AlterTableStmt", "RenameStmt", "AlterObjectSchemaStmt", "CreateTrigStmt",
                            "CreatePolicyStmt", "AlterPolicyStmt", "RuleStmt", "IndexStmt",
                            # (extended statistics: ANALYZE computes their expressions over every row,
                            # and what fails quotes the value: red team eleven)
                            "CreateStatsStmt"})


# The session's SQL-level prepared statements, as this plugin saw them PREPAREd: name -> every
# (lineage, analysis, (text, index, context)) of a body prepared under it (a PREPARE that fails
# leaves the old one: all count until a DEALLOCATE). An EXECUTE is judged with them: what it keeps, writes or explains.
PREPARED_BODIES = StoreKey[dict]("mask.prepared")
#: set once a statement ran code that may PREPARE any name (`Analysis.prepares_unseen`)
PREPARED_UNSEEN = StoreKey[bool]("mask.prepared_unseen")
#: those bodies traced again on a later catalog, search_path or staleness (`_prepared_bodies`)
RETRACED_BODIES = StoreKey[dict]("mask.prepared_again")
#: the queries SQL-level PREPAREs of the session defined, by name (`plans.prepared_queries`)
PREPARED_QUERIES = StoreKey[dict]("mask.prepared_queries")
# Set once the session DECLAREs a cursor WITH HOLD that may read masked columns: the server runs
# its query to the end when the transaction commits, and what that raises (``invalid input
# syntax for type integer: "<a value>"``) is the COMMIT's error; or once it writes a table with
# masked columns: a deferred constraint's error at COMMIT quotes the row's key. From then on the
# messages of the session's transaction statements are withheld as a reader's (their SQLSTATE stays).
HELD_MASKED = StoreKey[bool]("mask.held")
# What may commit the session's transaction: COMMIT and its kin, and code that may run COMMIT
# (a procedure's, a DO block's).
_MAY_COMMIT = frozenset({"transaction", "call", "do", "unknown"})
# What may fire the database's event triggers (ddl_command_start / _end, sql_drop, table_rewrite):
# DDL, GRANT, and code that may run either (a procedure's, a DO block's, a function's EXECUTE).
_FIRES_EVENT_TRIGGERS = frozenset({"ddl", "grant", "call", "do", "unknown"})
# Statement kinds in which an EXECUTE's rows do not come back as rows: CREATE TABLE ... AS EXECUTE
# (written to a table), EXPLAIN ANALYZE EXECUTE (sizes of what it computed).
_EXECUTED_INTO = frozenset({"ddl", "explain"})
# Statement kinds after which what an EXECUTE later in the same string runs may be defined again
# (DDL, code run: a function's body may hold DDL; what pgwarden cannot read)
_CHANGES_CATALOG = frozenset({"ddl", "do", "call", "unknown", "side_effect"})


# Fields of ErrorResponse / NoticeResponse that carry codes, not text a value could hide in.
_CODE_FIELDS = frozenset("SVCPpFLR")
# Every error and notice of a statement that reads masked values keeps only its codes and a
# withheld message. Any message may quote a value (unquoted too: a context line echoes JSON input,
# `chr(n)` names its number), or a name made of one (``ssn::regclass``: relation "<ssn>" does not
# exist); quoting rules cannot be trusted with a value that holds quotes of its own
# (``('"' || ssn || '"')::int`` makes the server write ``""812-57-3964""``); user code (RAISE) may
# put one anywhere; and the statement's own syntax errors never reach the server (pgwarden refuses
# what does not parse), while a syntax error raised as it runs quotes its input (to_tsquery's).
Fields = tuple[tuple[str, str], ...]


def _withheld(sqlstate: str) -> str:
    """What a withheld message says instead: that it was, and what kind of error it was."""
    try:
        from psycopg.errors import lookup

        name = f", {lookup(sqlstate).__name__}"
    except Exception:  # noqa: BLE001 - an unknown or missing code: the code alone
        name = ""
    said = f" (SQLSTATE {sqlstate}{name})" if sqlstate else ""
    return f"pgwarden: message withheld: the statement reads masked columns{said}"


# What a notification's payload says when it is withheld (`pgwarden.results` hands a payload to
# the message masks as a message with severity NOTIFY and no SQLSTATE).
NOTIFICATION_WITHHELD = ("pgwarden: payload withheld: another session's notification may carry masked values "
                         "(this session has masked columns); the channel is kept")

# Errors the server raises while it analyses the statement's own text, before it runs anything:
# an unknown column, table, or function or operator. They carry the statement's position (P) and
# neither a context (W) nor an internal query (p, q), which errors of code the statement runs
# (a function's body, SQL built at run time: query_to_xml's, PL/pgSQL's EXECUTE) carry instead.
_PARSE_ANALYSIS_ERRORS = frozenset({"42703", "42P01", "42883"})
_QUOTED = re.compile(r'"((?:[^"]|"")*)"')


def _of_the_text(fields: Fields, sql: str) -> bool:
    """Whether an error's message is one the server gave while analysing the statement's own text,
    every name it quotes written in that text: a typo's ``column "nme" does not exist`` (what an
    agent corrects itself by), not a value (``ssn::regclass`` fails as it runs, without a
    position; a value the runtime parses, ``ssn::regtype``, fails with a position but as a syntax
    error, 42601, which is not among these)."""
    codes = dict(fields)
    if codes.get("C") not in _PARSE_ANALYSIS_ERRORS or not codes.get("P", "").isdigit():
        return False
    if any(code in codes for code in "Wpq"):
        return False
    return all(name.replace('""', '"') in sql for name in _QUOTED.findall(codes.get("M", "")))


def _refuses(rule: MaskRule, clause: str) -> bool:
    """Whether ``rule`` refuses its column's use in ``clause``: every use unless ``oracle: allow``;
    a value written to a table always (it comes back from there in clear: no comparison, the
    value itself)."""
    return rule.spec.oracle == "refuse" or clause.lower() == "write"


def _explained_executes(statement: Statement) -> set[str]:
    """The prepared statements an ``EXPLAIN EXECUTE name`` plans (not run: not the analysis's
    ``executes``); every name ("*") when the string cannot be read."""
    from pgwarden.sql.lexer import parse_tree

    try:
        context = statement.context
        tree = parse_tree(statement.sql, context.lexer) if context is not None else parse_tree(statement.sql)
    except Exception:  # noqa: BLE001 - what does not parse was refused before; any name then
        return {"*"}
    names = set()
    for entry in tree.get("stmts", []):
        explain = (entry.get("stmt") or {}).get("ExplainStmt")
        execute = ((explain or {}).get("query") or {}).get("ExecuteStmt")
        if execute is not None:
            names.add(execute.get("name", ""))
    return names


def _refused_by(rule: MaskRule, reason: str, hint: str) -> Verdict:
    """A refusal in the name of mask rule ``rule`` (named ``policy/rule``)."""
    policy, name = rule.name.split("/", 1)
    return Verdict.block(reason, hint, policy=policy, rule=name)


def _owning_rule(rules: SessionRules, tables: list[str]) -> MaskRule:
    """The strongest rule masking a column of one of ``tables`` (any rule if none names them)."""
    owning = [r for r in rules.columns for t in tables
              if any(fnmatch.fnmatchcase(t, g.rsplit(".", 1)[0]) for g in r.spec.columns)]
    return max(owning, key=lambda r: r.strength) if owning else rules.columns[0]


@attrs.frozen
class Options:
    """``plugins: {mask: {...}}``."""

    #: the HMAC key of ``with: hash`` (a Kubernetes Secret's file); read at start and each reload
    key_file: str | None = None
    #: the region of phone numbers written without a country code (``phone`` detector)
    phone_region: str = "US"


class Masking:
    # Without a mask rule in the session's policies, its check has no opinion and it masks
    # nothing: sessions without one do not call it (docs/plugins.md).
    pgwarden_checks_only_its_rules = True
    pgwarden_masks_only_by_its_rules = True

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.detectors: dict[str, Detector] = {d.name: d for d in BUILTIN}
        self._rules: dict[int, tuple[object, SessionRules]] = {}
        self._scanners: dict[tuple[str, ...], Scanner] = {}

    # ------------------------------------------------------------------ configuration

    @hookimpl
    def pgwarden_options(self) -> type:
        return Options

    @hookimpl
    def pgwarden_rule_kinds(self):
        return [MASK]

    @hookimpl
    def pgwarden_configure(self, options: Options | None, detectors: Mapping[str, Detector]) -> None:
        options = options or Options()
        key = None
        if options.key_file is not None:
            try:
                key = Path(options.key_file).read_bytes().strip()
            except OSError as e:
                raise ConfigProblem(("plugins", "mask", "key_file"),
                                    f"cannot read the hash key: {e.strerror or e}") from None
            if len(key) < 16:
                raise ConfigProblem(("plugins", "mask", "key_file"),
                                    f"the hash key in {options.key_file} is {len(key)} bytes; use at least 16")
        self.key = key
        self.detectors = {d.name: d for d in BUILTIN} | dict(detectors)
        self._rules.clear()
        self._scanners.clear()

    def rules(self, session: Session) -> SessionRules:
        policies = session.policies
        known = self._rules.get(id(policies))
        if known is not None and known[0] is policies:
            return known[1]
        rules = SessionRules(policies)
        if len(self._rules) > 1000:
            self._rules.clear()
        self._rules[id(policies)] = (policies, rules)  # keeps the tuple, and so its id
        return rules

    def scanner(self, names: tuple[str, ...]) -> Scanner:
        scanner = self._scanners.get(names)
        if scanner is None:
            scanner = self._scanners[names] = Scanner(self.detectors[n] for n in names if n in self.detectors)
        return scanner

    # ------------------------------------------------------------------ statements

    @hookimpl(trylast=True)  # asked last: not for a statement another plugin blocked (`Checkers`)
    def pgwarden_check(self, statement: Statement, session: Session) -> Verdict | Deferred[Verdict | None] | None:
        rules = self.rules(session)
        if not rules.columns:
            return None
        catalog = statement.context.catalog if statement.context is not None else None
        follow_settings(statement, session)
        lineages = statement.lineage
        held = [lineage for lineage in lineages if lineage.holds]
        if held and self._may_touch(rules, statement, held) or statement.writes and (any(
                fnmatch.fnmatchcase(t, g) for t in statement.writes for g in rules.masked_tables())
                or self._reaches_unseen(rules, statement, lineages)):
            # A cursor kept past its transaction, or a write to a table with masked columns: a
            # deferred constraint's error, at COMMIT or SET CONSTRAINTS, quotes the row's key
            # (``Key (note)=(...) is still referenced``); or a write whose triggers read masked
            # tables (a deferred one runs at COMMIT, and its notification comes then): those
            # statements' messages are withheld
            session.store[HELD_MASKED] = True
        if catalog is not None and not catalog.complete and self._may_touch(rules, statement, lineages, True):
            return Verdict.block(
                "the live catalog is unreachable, and this statement may read masked columns",
                "pgwarden masks columns by what the database's catalog says they are; until it can read the "
                "catalog again, statements that may touch masked tables are refused. Retry shortly.",
                rule="mask: catalog")
        if statement.analysis.settings or "ddl" in statement.kinds or "role" in statement.kinds:
            refused = self._retunes(rules, statement)
            if refused is not None:
                return refused
        if statement.kinds & _COPY_SERVER_SIDE:
            refused = self._copy_server_side(rules, statement, lineages)
            if refused is not None:
                return refused
        if "copy_to" in statement.kinds:
            for index, lineage in enumerate(lineages):
                options = copy_options(statement.sql, index, statement.context.lexer if statement.context else None)
                if options is not None and (options["format"] == "binary" or options["custom"]) \
                        and self._may_touch(rules, statement, [lineage]):
                    return Verdict.block(COPY_REFUSAL.message.removeprefix("pgwarden: blocked: "), COPY_REFUSAL.hint,
                                         rule="mask: copy")
        for lineage in lineages:
            if lineage.refers is not None and lineage.refers[0] == "cursor" \
                    and cursor_stale(session, lineage.refers[1]):
                # FETCH or MOVE of a cursor declared before a change of what its query runs: its
                # conditions were judged on the definitions before (red team fifteen)
                refused = self._untraced_oracle(rules, attrs.evolve(lineage, reads=None), "cursor")
                if refused is not None:
                    return refused
            bodies = [lineage] + [body for _, _, body in lineage.defines]
            for body in bodies:
                for use in body.oracles:
                    if use.source == UNTRACED:
                        refused = self._untraced_oracle(rules, body, use.clause)
                        if refused is not None:
                            return refused
                        continue
                    source = str(use.source)
                    rule = rules.rule_for(source)
                    if rule is not None and _refuses(rule, use.clause):
                        return self._oracle(source, use.clause, rule)
                opaque = body.opaque or body.outputs is not None and any(o.opaque for o in body.outputs)
                if opaque or body.reads is None:
                    involved = rules.strictest(None if body.reads is None else (str(s) for s in body.reads))
                    refusing = [r for r in rules.columns if r.spec.unknown == "refuse"]
                    if involved is not None and refusing and (body.reads is None or involved.spec.unknown == "refuse"):
                        rule = involved if involved.spec.unknown == "refuse" else refusing[0]
                        return _refused_by(rule,
                            "pgwarden cannot tell which columns this statement returns, and it may read "
                            "masked columns",
                            "Name the columns you need in a plain SELECT; masked columns come back masked.")
        if statement.kinds & {"maintenance", "ddl"}:
            refused = self._reorders(rules, statement)
            if refused is not None:
                return refused
        if "ddl" in statement.kinds:
            refused = self._ddl_on_masked(rules, statement) or self._code_on_tables(rules, statement)
            if refused is not None:
                return refused
        if statement.kinds & hidden_code.RUNNING_CODE and self._may_touch_tables(rules, statement):
            rule = self._table_rule(rules, statement)
            return _refused_by(rule,
                "a DO block or procedure that may read masked columns",
                "Code in a block runs out of pgwarden's sight: it could copy a masked value to a table, a "
                "setting or a message unmasked. Read the masked columns in a plain SELECT.")
        analysis = statement.analysis
        refused = self._prepared(rules, statement, session)
        if refused is not None:
            return refused
        if "explain" in statement.kinds and self._folds_masked(rules, statement, session):
            rule = rules.strictest(r for lineage in lineages for r in map(str, lineage.reads or ())) \
                or rules.columns[0]
            return _refused_by(rule,
                "EXPLAIN of a statement reaching an IMMUTABLE function of the database's own that reads "
                "masked columns",
                "The planner computes such a function's value and the plan prints it (a constant in a "
                "filter, or an output with VERBOSE). EXPLAIN the statement without the function.")
        refused = self._carried(rules, statement, lineages)
        if refused is not None:
            return refused
        keeps = _keeps(statement.kinds, analysis, catalog)
        # (a write: its triggers run; a PREPARE is judged at its EXECUTE, with its body)
        unseen = bool(statement.writes) and "prepare" not in statement.kinds \
            and self._reaches_unseen(rules, statement, lineages, events=False)
        if keeps and (self._may_touch(rules, statement, lineages) or unseen):
            # (also when the masked table is read by a trigger its write fires: the schema's
            # trigger doing `setval('seq', (SELECT ssn_num FROM users ...))` on `INSERT INTO
            # orders` left the SSN's digits in `currval`; or by a function such a trigger calls,
            # which the agent replaced to copy the values to its table, red team ten)
            rule = rules.strictest(r for lineage in lineages for r in map(str, lineage.reads or ())) \
                or rules.columns[0]
            return _refused_by(rule,
                "a statement that reads masked columns may not also keep values elsewhere "
                "(set_config, large objects, NOTIFY, sequences, functions that change state)",
                "A value passed there would be stored in clear and could be read back unmasked. Read the "
                "masked columns in one statement and change state in another.")
        if self.key is None:
            for lineage in lineages:
                for read in (lineage.reads or ()):
                    rule = rules.rule_for(str(read))
                    if rule is not None and rule.spec.with_ == "hash" and not reveals_values(str(read)):
                        return _refused_by(rule,
                            f"masked column {read} is hashed, and no hash key is configured",
                            "An operator must set plugins.mask.key_file; this is not caused by the statement.")
        plans = session.store.get(SERVER_PLANS, None)
        if plans is None:
            return None
        known = session.store.get(PREPARED_QUERIES, {})
        executed = tuple(query for name in statement.analysis.executes for query in known.get(name, ()))
        return check_against_plans(plans, rules, statement, self._may_touch(rules, statement, lineages, True),
                                   _refused_by, declared_types(session, statement.sql), custom_settings(session),
                                   executed, _executed_tables(rules, statement, session))

    def _prepared(self, rules: SessionRules, statement: Statement, session: Session) -> Verdict | None:
        """Remembers what PREPAREs define (and DEALLOCATEs forget); judges an EXECUTE with the
        bodies of its name: one that keeps values (set_config, advisory locks, sequences...) while
        reading masked columns, one written to a table or explained as it runs, its oracles."""
        analysis = statement.analysis
        if not (analysis.prepares or analysis.executes or analysis.deallocates or analysis.prepares_unseen):
            return None
        bodies: dict = session.store.setdefault(PREPARED_BODIES, {})
        queries: dict = session.store.setdefault(PREPARED_QUERIES, {})
        for name in analysis.deallocates:
            if name == "*":
                bodies.clear()
                queries.clear()
            else:
                bodies.pop(name, None)
                queries.pop(name, None)
        if analysis.prepares_unseen:  # a function's body (or what cannot be read) may PREPARE any name
            session.store[PREPARED_UNSEEN] = True
        if analysis.prepares:
            for name, query in prepared_queries(statement):
                queries.setdefault(name, []).append(query)
        prepared = {name: body for name, body, _syntax in analysis.prepares}
        for index, lineage in enumerate(statement.lineage):
            for kind, name, body in lineage.defines:
                if kind == "prepared":
                    bodies.setdefault(name, []).append(
                        (body, prepared.get(name), (statement.sql, index, statement.context)))
        for name in analysis.executes:
            for body, body_analysis in _prepared_bodies(session, statement, name):
                touches = body is None or body.reads is None or any(rules.rule_for(str(s)) for s in body.reads)
                if not touches:
                    continue
                rule = rules.strictest(str(s) for s in (body.reads or ())) if body is not None else None
                rule = rule or rules.columns[0]
                if statement.kinds & _EXECUTED_INTO:
                    return _refused_by(rule,
                        f"prepared statement {name} may read masked columns, and its rows are written to a "
                        "table or explained as it runs here",
                        "CREATE TABLE ... AS EXECUTE stores them unmasked, EXPLAIN ANALYZE shows sizes of what "
                        "it computed. EXECUTE it on its own: its rows come back masked.")
                catalog = statement.context.catalog if statement.context is not None else None
                if body_analysis is None or _keeps(body_analysis.kinds, body_analysis, catalog):
                    return _refused_by(rule,
                        f"prepared statement {name} may read masked columns and keep values elsewhere "
                        "(set_config, large objects, NOTIFY, sequences, advisory locks), or is not known",
                        "A value passed there would be stored in clear and could be read back unmasked.")
                if body is not None:
                    for use in body.oracles:
                        if use.source == UNTRACED:
                            refused = self._untraced_oracle(rules, body, use.clause)
                            if refused is not None:
                                return refused
                            continue
                        oracle_rule = rules.rule_for(str(use.source))
                        if oracle_rule is not None and _refuses(oracle_rule, use.clause):
                            return self._oracle(str(use.source), use.clause, oracle_rule)
        return None

    @staticmethod
    def _folds_masked(rules: SessionRules, statement: Statement, session: Session) -> bool:
        """Whether an EXPLAIN's statement reaches an IMMUTABLE function of the database's own that
        may read masked columns: named, an operator's, a view's, a prepared body's (the planner
        folds a call of one into a constant the plan prints: ``Output: '812-57-3964'::text``)."""
        catalog = statement.context.catalog if statement.context is not None else None
        if catalog is None or any(not catalog.functions_named(name) for name in statement.analysis.functions):
            return Masking._may_touch(rules, statement, statement.lineage)  # a function not known
        lineages = list(statement.lineage)
        for name in set(statement.analysis.executes) | _explained_executes(statement):
            known = [body for body, _ in _prepared_bodies(session, statement, name)]
            if any(body is None for body in known):  # a body not seen: what it reaches is not known
                return True
            lineages += known
        for lineage in lineages:
            if lineage.own_code and (lineage.folded is None or any(rules.rule_for(str(s)) for s in lineage.folded)):
                return True
        return False

    @staticmethod
    def _ddl_on_masked(rules: SessionRules, statement: Statement) -> Verdict | None:
        """DDL that changes a table holding masked columns in a way that lets their values out
        (`_DDL_ON_TABLES`), refused; other DDL (a table made or dropped, a view) goes on."""
        globs = rules.masked_tables()
        masked = sorted(t for t in statement.tables if any(fnmatch.fnmatchcase(t, g) for g in globs))
        if not masked:
            return None
        from pglast.parser import ParseError

        from pgwarden.sql.lexer import parse_tree

        try:
            lexer = statement.context.lexer if statement.context is not None else None
            tree = parse_tree(statement.sql, lexer) if lexer is not None else parse_tree(statement.sql)
            kinds = {next(iter(raw.get("stmt", {"?": None}))) for raw in tree.get("stmts", [])}
        except (ParseError, StopIteration, AttributeError, TypeError):
            kinds = {"?"}
        if not kinds & _DDL_ON_TABLES and "?" not in kinds:
            return None
        table = masked[0]
        rule = _owning_rule(rules, [table])
        return _refused_by(rule,
            f"DDL on {table}, which holds masked columns",
            "Renaming it or its columns, a generated column, a new type, a constraint, an index, a "
            "trigger, a rule or a policy on it could make the masked values readable. Ask an operator "
            "to run schema changes of masked tables outside this identity.")

    @staticmethod
    def _reorders(rules: SessionRules, statement: Statement) -> Verdict | None:
        """CLUSTER of a table holding masked columns, or of every table clustered before (no table
        named), in a session with column rules: it rewrites the table in the order of an index,
        which may be on a masked column, and a plain ``SELECT id FROM users`` then returns the rows
        in that order (red team eleven: ``CLUSTER users USING users_ssn``, a probe row the agent
        wrote with ``ssn = '5'``, then the ids' order told whether each SSN sorts before '5')."""
        from pglast.parser import ParseError

        from pgwarden.sql.lexer import parse_tree

        try:
            lexer = statement.context.lexer if statement.context is not None else None
            tree = parse_tree(statement.sql, lexer) if lexer is not None else parse_tree(statement.sql)
            clusters = [raw["stmt"]["ClusterStmt"] for raw in tree.get("stmts", []) if "ClusterStmt" in raw["stmt"]]
        except (ParseError, KeyError, AttributeError, TypeError):
            clusters = [{}]
        if not clusters:
            return None
        globs = rules.masked_tables()
        masked = sorted(t for t in statement.tables if any(fnmatch.fnmatchcase(t, g) for g in globs))
        if not masked and all(c.get("relation") for c in clusters):
            return None
        return _refused_by(_owning_rule(rules, masked),
            f"CLUSTER of {masked[0] if masked else 'every clustered table'}, in a session with masked columns",
            "CLUSTER puts a table's rows in the order of an index, which may be on a masked column: the "
            "order plain reads return them in would then tell how the masked values compare. Ask an operator "
            "to run it outside this identity.")

    @staticmethod
    def _retunes(rules: SessionRules, statement: Statement) -> Verdict | None:
        """A change of one of the planner's settings (the server's pg_settings.category "Query
        Tuning / ...": `Catalog.tuning`) in a session whose column rules refuse oracles: ``SET``,
        ``SET LOCAL``, ``set_config``, a SET clause of a function it runs, creates or alters, a
        body's SET or set_config (`Analysis.settings`), a setting named at run time, and ``ALTER
        ROLE / DATABASE ... SET`` (the next sessions'). ``SET enable_seqscan = off; SELECT id FROM
        users`` was an Index Only Scan of an operator's index on ``(ssn, id)``, returning the ids in
        SSN order (with a probe row the agent wrote, a binary search: red team eleven), and the plan
        check, asked without the session's settings, saw a Seq Scan; a function's body is planned
        in those settings out of the check's sight. RESET, ``SET ... TO DEFAULT`` go back and pass."""
        refusing = [r for r in rules.columns if r.spec.oracle == "refuse"]
        context = statement.context
        if not refusing or context is None:
            return None
        tuning = context.catalog.tuning
        changed = [name for name, value in statement.analysis.settings
                   if value is not None and (name in tuning and not name.startswith(_COMPILING) or name == "*")]
        if not changed and statement.kinds & {"ddl", "role"}:
            changed = _stored_tuning(statement, tuning)
        if not changed:
            return None
        name = changed[0] if changed[0] != "*" else "a setting named at run time"
        return _refused_by(refusing[0],
            f"a change of the planner's settings ({name}) in a session with masked columns",
            "The planner's settings decide which plan a statement gets, and so the order its rows come "
            "back in: an index's order on a masked column would tell how the masked values compare. Keep "
            "the server's planner settings (RESET returns to them); add ORDER BY for the order you need.")

    @classmethod
    def _code_on_tables(cls, rules: SessionRules, statement: Statement) -> Verdict | None:
        """DDL that attaches code to a table (`hidden_code.stored_code`) in a session with column rules:
        refused, as what it reads runs unseen under later statements."""
        from pglast.parser import ParseError

        from pgwarden.sql.lexer import parse_tree

        context = statement.context
        try:
            tree = parse_tree(statement.sql, context.lexer) if context is not None else parse_tree(statement.sql)
            what = hidden_code.stored_code(tree, context.catalog if context is not None else None)
        except (ParseError, AttributeError, TypeError, ValueError):
            what = "a statement pgwarden cannot read"
        if what is None:
            return None
        rule = cls._table_rule(rules, statement)
        return _refused_by(rule,
            f"{what} stored with a table, in a session with masked columns",
            "Code stored with a table (a trigger, a rule, a DEFAULT, a generated column, an index or a "
            "policy calling a function) runs unseen under later statements and could copy masked values "
            "where they are read unmasked. Ask an operator to run such schema changes outside this identity.")

    @staticmethod
    def _may_touch_tables(rules: SessionRules, statement: Statement) -> bool:
        """Whether a statement that runs code may read a masked column: it names (or its code
        does) a table masked columns are in, the statistics or statements' text, or something
        pgwarden cannot identify."""
        catalog = statement.context.catalog if statement.context is not None else None
        if "unknown" in statement.kinds or names_revealing(statement.tables, statement.analysis.functions, catalog):
            return True
        tables = rules.masked_tables()
        return any(fnmatch.fnmatchcase(t, g) for t in statement.tables for g in tables)

    def _carried(self, rules: SessionRules, statement: Statement, lineages) -> Verdict | None:
        """A write that fires code of the schema's own which reads a table holding masked columns
        and may put what it reads into rows: a BEFORE row trigger (``NEW.memo := (SELECT ssn FROM
        users ...)``: the row stored holds the SSN, read back by RETURNING or a later SELECT), a
        trigger that writes tables (an audit table), an INSTEAD OF row trigger under RETURNING
        (red team eleven). Lineage does not follow trigger bodies; the catalog says which
        triggers a write fires and the analysis which tables their bodies read: refused."""
        if not statement.writes:
            return None
        analysis = statement.analysis
        found = set(getattr(analysis, "carried_tables", ()))
        if any(lineage.outputs for lineage in lineages):  # RETURNING
            found |= getattr(analysis, "returned_tables", frozenset())
        globs = rules.masked_tables()
        masked = sorted(t for t in found if any(fnmatch.fnmatchcase(t, g) for g in globs))
        if not masked:
            return None
        return _refused_by(_owning_rule(rules, masked),
            f"a write whose triggers read {', '.join(masked)}, which holds masked columns, and may store "
            "or return what they read",
            "A trigger of the schema's own (a BEFORE or INSTEAD OF row trigger, or one that writes a table) "
            "could copy masked values into rows read back unmasked. Ask an operator to run such writes "
            "outside this identity, or to mask the columns the trigger fills.")

    def _copy_server_side(self, rules: SessionRules, statement: Statement, lineages) -> Verdict | None:
        """COPY to or from a server file or program (red team eleven: ``COPY users TO
        '/tmp/f'`` then ``COPY mine FROM '/tmp/f'`` gave the agent's table the SSNs in clear). TO:
        refused when it may read masked columns (the file keeps them unmasked). FROM: refused in
        every masking session, as the file may hold any column's value (an export, the server's
        log, a data file: `pg_read_file` is masked whole for the same reason) and the rows it
        stores are read back as they are."""
        lexer = statement.context.lexer if statement.context is not None else None
        seen = False
        for index, lineage in enumerate(lineages):
            options = copy_options(statement.sql, index, lexer)
            if options is None or not options.get("server_side"):
                continue
            seen = True
            if options.get("from") or self._may_touch(rules, statement, [lineage]):
                break
        else:
            if seen:
                return None  # (not found: refused, as it cannot be told which it is)
        return _refused_by(self._table_rule(rules, statement),
            "COPY to or from a server file or program, in a session with masked columns",
            "A server file keeps what COPY writes to it unmasked, and may hold any value COPY "
            "reads from it into a table. Use COPY ... TO STDOUT (masked) or FROM STDIN.")

    @staticmethod
    def _table_rule(rules: SessionRules, statement: Statement) -> MaskRule:
        globs = rules.masked_tables()
        return _owning_rule(rules, [t for t in statement.tables if any(fnmatch.fnmatchcase(t, g) for g in globs)])

    @staticmethod
    def _may_touch(rules: SessionRules, statement: Statement, lineages, by_tables: bool = False) -> bool:
        """Whether the statement may read a masked column: by lineage; ``by_tables`` also when it
        names a table masked columns are in (lineage without the catalog cannot say)."""
        if any(lineage.reads is None for lineage in lineages):
            return True
        if any(rules.rule_for(str(s)) for lineage in lineages for s in lineage.reads or ()):
            return True
        if not by_tables:
            return False
        tables = rules.masked_tables()
        return any(fnmatch.fnmatchcase(t, g) for t in statement.tables for g in tables)

    @staticmethod
    def _untraced_oracle(rules: SessionRules, body, clause: str) -> Verdict | None:
        """An oracle over a value pgwarden cannot trace: refused when the statement may read a
        masked column whose rule refuses oracles (any such column when what it reads is unknown)."""
        reads = None if body.reads is None else [str(s) for s in body.reads]
        candidates = rules.columns if reads is None else [r for r in map(rules.rule_for, reads) if r is not None]
        refusing = [r for r in candidates if _refuses(r, clause)]
        if not refusing:
            return None
        rule = max(refusing, key=lambda r: r.strength)
        where = _CLAUSES.get(clause.lower(), clause)
        return _refused_by(rule,
            f"a value pgwarden cannot trace, which may hold masked columns, used in {where}",
            f"A value read by name (table_to_xml, cursor_to_xml, ...) or of unknown columns may hold masked "
            f"values; using it in {where} would reveal them without returning them. Select the columns "
            f"you need by name and filter on columns that are not masked.")

    @staticmethod
    def _oracle(source: str, clause: str, rule: MaskRule) -> Verdict:
        where = _CLAUSES.get(clause.lower(), clause)
        column = source.rsplit(".", 1)[1]
        if clause.lower() == "write":
            return _refused_by(rule,
                f"masked column {source} used in {where}",
                f"A value written to a table is read back from it unmasked: writing {column}, or a value "
                "computed from it, would hand it out in clear (`oracle: allow` does not lift this). Ask an "
                "operator to mask the target column too, or to run the copy outside this identity.")
        return _refused_by(rule,
            f"masked column {source} used in {where}",
            f"A masked column may be returned (masked) but not used in {where}: that reveals its values "
            f"without returning them. Select {column} and work on the masked values, filter on other "
            f"columns, or ask an operator for `oracle: allow` on rule {rule.name}.")

    # ------------------------------------------------------------------ results

    @hookimpl
    def pgwarden_result_masks(self, result: ResultShape, session: Session) -> dict[int, ColumnMask] | None:
        rules = self.rules(session)
        if not rules:
            return None
        masks: dict[int, ColumnMask] = {}
        for column in result.columns:
            mask = self._column_mask(column, result, rules)
            if mask is None and rules.detect:
                mask = self._detection(column, rules)
            if mask is not None:
                masks[column.index] = mask
        return masks or None

    def _column_mask(self, column: ResultColumn, result: ResultShape, rules: SessionRules) -> ColumnMask | None:
        chosen: tuple[int, ColumnMask] | None = None
        if column.direct is not None and not reveals_values(column.direct):
            rule = rules.rule_for(column.direct)
            if rule is not None:
                chosen = (rule.strength, self._strategy(rule, column.direct, column))
        # (a statistic's values as stored are any column's: masked whole, never by a strategy)
        others = [s for s in column.sources if s != column.direct or reveals_values(s)]
        involved = rules.strictest(others) if others else None
        if column.opaque:
            reads = result.reads
            possible = rules.strictest(None if reads is None else reads | column.sources)
            if possible is not None and (involved is None or possible.strength > involved.strength):
                involved = possible
        if involved is not None:
            strategy, strength = _WHOLE_STRENGTH[involved.spec.with_ == "null"]
            source = next(iter(sorted(s for s in column.sources if rules.rule_for(s) is involved)), "") \
                or column.direct or ""
            # (its NULLs too: the NULL-ness of what was computed from a masked value tells of it)
            whole = ColumnMask(_strategy_masker(_NULL if strategy == "null" else _REDACT, column, nulls=True),
                               strength, involved.name, source or "(unknown)", strategy, constant=True, nulls=True)
            if chosen is None or strength > chosen[0]:
                chosen = (strength, whole)
        return chosen[1] if chosen is not None else None

    def _strategy(self, rule: MaskRule, source: str, column: ResultColumn) -> ColumnMask:
        spec = rule.spec
        kind = spec.with_
        if kind == "redact":
            strategy = _REDACT
        elif kind == "null":
            strategy = _NULL
        elif kind == "partial":
            strategy = values.partial(*spec.kept)
        elif kind == "email":
            strategy = values.email()
        elif kind == "fixed":
            strategy = values.fixed(spec.value or "")
        else:  # hash: the check refused the statement when there is no key; NULL if it came here anyway
            strategy = values.hashed(self.key) if self.key is not None else _NULL
        masker = _strategy_masker(strategy, column)
        if kind == "partial" and values.family_of(column.type_oid) is values.Family.TEXT:
            masker = values.partial_text(*spec.kept)  # the same answers, sooner (a text format is text)
        return ColumnMask(masker, rule.strength, rule.name, source, kind,
                          constant=kind in ("redact", "null", "fixed"))

    def _detection(self, column: ResultColumn, rules: SessionRules) -> ColumnMask | None:
        if column.type_oid in values.FIXED_FORM:
            return None
        names = rules.detectors_for(column.direct)
        if not names:
            return None
        scanner = self.scanner(names)
        hits: Counter[str] = Counter()
        json = values.family_of(column.type_oid) in (values.Family.JSON, values.Family.JSONB)
        binary_jsonb = column.type_oid == values.JSONB and column.format == 1

        # Text and JSON get their hits replaced; any other type (an array, a record) a value
        # with a hit inside is NULL: a rewritten one might no longer be valid for its type.
        masker = detection(scanner, hits, json, binary_jsonb, whole_null=column.type_oid not in values.TEXT_TYPES)
        rule = next(r for r in rules.detect if set(names) & set(r.spec.detect))
        # With a prefilter the walk passes over most values without asking; a search of the
        # whole run first would cost more than it spares (every run holds digits).
        return ColumnMask(masker, -1, rule.name, column.direct or column.name, "detect",
                          candidate=scanner.candidate if scanner.prefilter is None else None, hits=hits,
                          prefilter=scanner.prefilter)

    # ------------------------------------------------------------------ errors and notices

    @hookimpl
    def pgwarden_message_masks(self, statement: Statement | None, session: Session) -> MessageMask | None:
        rules = self.rules(session)
        if not rules:
            return None
        names = tuple(dict.fromkeys(n for r in rules.detect for n in r.spec.detect)) or tuple(
            d.name for d in BUILTIN)
        scanner = self.scanner(names)
        reads_masked = bool(rules.columns) and (
            statement is None or self._reads_masked(rules, statement)
            or (statement.kinds & _MAY_COMMIT and session.store.get(HELD_MASKED, False)))

        def rewrite(fields: Fields) -> Fields:
            out = []
            codes = dict(fields)
            sqlstate = codes.get("C", "")
            # the message alone of an error in the statement's own text (detail, hint: withheld)
            withhold = reads_masked and not (statement is not None and _of_the_text(fields, statement.sql))
            for code, text in fields:
                if code in _CODE_FIELDS:
                    out.append((code, text))
                    continue
                if withhold:
                    if code == "M":
                        notification = statement is None and not sqlstate and codes.get("V") == "NOTIFY"
                        out.append((code, NOTIFICATION_WITHHELD if notification else _withheld(sqlstate)))
                    continue
                if reads_masked and code != "M":
                    continue
                raw = text.encode()
                if (scanner.prefilter is None or scanner.prefilter.passes(raw)) and scanner.candidate(raw):
                    text = scanner.scrub(text)[0]
                if text or code == "M":
                    out.append((code, text))
            return tuple(out)

        return rewrite

    def _reads_masked(self, rules: SessionRules, statement: Statement) -> bool:
        """Whether the statement's messages may hold masked values: it reads masked columns, or
        writes a table that holds some (a failed write quotes the whole row: ``Failing row
        contains (1, null, eng, <ssn>, ...)`` for ``UPDATE users SET name = NULL``)."""
        try:
            lineages = statement.lineage
            writes = statement.writes
        except Exception:  # noqa: BLE001 - cannot tell: as if it did
            return True
        context = statement.context
        return self._may_touch(rules, statement, lineages) or any(
            rules.may_hold_masked(t, context) for t in writes) or self._reaches_unseen(
            rules, statement, lineages, messages=True) or _maintains_all(statement)

    @staticmethod
    def _reaches_unseen(rules: SessionRules, statement: Statement, lineages, events: bool = True,
                        messages: bool = False) -> bool:
        """Whether the statement reaches a table masked columns are in through code lineage does
        not follow: a trigger's function its write fires, a domain's CHECK, a cast's or a type's
        function (the analysis counts the tables their bodies read, `Statement.tables`, where
        lineage counts the columns the statement's own text reads). What that code raises or
        notifies may quote any of the table's values (red team ten: a trigger of the schema's own
        on ``orders`` doing ``RAISE NOTICE '%', (SELECT row_to_json(u) FROM users u ...)`` gave an
        ``INSERT INTO orders`` the salary in clear). ``events``: also DDL where the database has
        functions an event trigger may run (for messages; not for what a statement keeps).
        ``messages``: for its messages, a table counts when the catalog does not show it holds no
        masked column (`SessionRules.may_hold_masked`)."""
        try:
            named = statement.tables
            kinds = statement.kinds
        except Exception:  # noqa: BLE001 - cannot tell: as if it did
            return True
        catalog = statement.context.catalog if statement.context is not None else None
        if events and kinds & _FIRES_EVENT_TRIGGERS and _event_trigger_code(catalog):
            # an event trigger's function runs at DDL and may read (and RAISE) anything: the
            # catalog does not say which event triggers are armed, only that such code exists
            return True
        seen = {f"{s.schema}.{s.table}" for lineage in lineages for s in lineage.reads or ()}
        # (a table lineage saw read, of which the statement names only other columns, counts too
        # when a trigger reads it: ``INSERT INTO orders SELECT 3, id, 30 FROM users``)
        fired: frozenset[str] = getattr(statement.analysis, "fired_tables", frozenset())
        if messages:
            context = statement.context
            return any(rules.may_hold_masked(t, context) for t in named if t not in seen or t in fired)
        tables = rules.masked_tables()
        return any(fnmatch.fnmatchcase(t, g) for t in named if t not in seen or t in fired for g in tables)


def detection(scanner: Scanner, hits: Counter[str], json: bool = False, binary_jsonb: bool = False,
              whole_null: bool = False) -> Detection:
    """``scanner``'s detectors as the masker of a text (``json``: a json or jsonb) column, counting
    hits in ``hits``; ``whole_null``: of a column of another type, whose values with a hit are NULL."""

    def rest(value: bytes, _match: re.Match[bytes]) -> bytes | None:
        body = value[1:] if binary_jsonb else value
        text, found = scanner.scrub(body.decode("utf-8", "replace"))
        if not found:
            return value
        for name in found:  # Counter.update: slower for the one or two names found
            hits[name] += 1
        if whole_null:
            return None
        if json:  # a hit may sit outside a JSON string: the whole document goes
            text = '"[' + ",".join(dict.fromkeys(found)) + ']"'
        out = text.encode()
        return b"\x01" + out if binary_jsonb else out

    # A value that is one hit whole (binary jsonb starts with its version byte: never).
    whole = {} if binary_jsonb or whole_null else {
        group: ((f'"[{name}]"' if json else f"[{name}]").encode(), name) for group, name in scanner.whole.items()}
    return Detection(scanner.pattern.search, whole, rest, hits)


def _strategy_masker(strategy: values.Strategy, resolved: ResultColumn,
                     nulls: bool = False) -> Callable[[bytes | None, Column], bytes | None]:
    """The strategy as a `Masker` of one result column: its type family and format bound once.
    ``nulls``: NULL is masked as a value (a constant strategy's answer), not kept."""
    family, fmt = values.family_of(resolved.type_oid), resolved.format

    def masker(value: bytes | None, column: Column) -> bytes | None:
        if value is None:
            if not nulls:
                return None
            value = b""
        return strategy(value, family, fmt)

    return masker


#: The "Query Tuning" settings of JIT compilation (``jit``, ``jit_above_cost``, ...): they decide
#: whether the chosen plan's expressions are compiled, never which plan is chosen, so they change
#: no row order; asyncpg turns ``jit`` off around its type introspection (``set_config('jit',
#: 'off', false)``, then back), in every session. (The one exception to the server's category.)
_COMPILING = "jit"


def _stored_tuning(statement: Statement, tuning: frozenset[str]) -> list[str]:
    """The planner's settings (``tuning``) an ``ALTER ROLE / DATABASE ... SET`` of the statement
    gives a value (what the next sessions start with); every statement's "*" when the text cannot
    be read."""
    from pgwarden.sql.lexer import parse_tree

    try:
        context = statement.context
        tree = parse_tree(statement.sql, context.lexer) if context is not None else parse_tree(statement.sql)
    except Exception:  # noqa: BLE001 - what does not parse was refused before: fail closed
        return ["*"]
    found = []
    for entry in tree.get("stmts", []):
        stmt = entry.get("stmt") or {}
        for kind in ("AlterRoleSetStmt", "AlterDatabaseSetStmt"):
            setting = ((stmt.get(kind) or {}).get("setstmt") or {})
            name = (setting.get("name") or "").lower()
            if setting.get("kind") in ("VAR_SET_VALUE", "VAR_SET_CURRENT") \
                    and (name in tuning and not name.startswith(_COMPILING) or not name):
                found.append(name or "*")
    return found


def _maintains_all(statement: Statement) -> bool:
    """Whether the statement is maintenance of every table (``ANALYZE``, ``VACUUM ANALYZE``,
    ``REINDEX DATABASE``: none named), which computes the expressions stored with the masked
    tables too (their indexes', their extended statistics'), and what fails there quotes the value
    (red team eleven: bare ``ANALYZE`` said ``invalid input syntax for type integer:
    "7342195.37"`` of a statistics expression ``(salary::text::int)`` on ``users``)."""
    try:
        return "maintenance" in statement.kinds and not statement.tables
    except Exception:  # noqa: BLE001 - cannot tell: as if it did
        return True


def _event_trigger_code(catalog) -> bool:
    """Whether the database has functions of its own that an event trigger may run (RETURNS
    event_trigger, not an extension's): an operator's DDL audit trigger that reads a masked table
    and raises a notice with it spoke in clear after the agent's ``CREATE TABLE`` (red team ten)."""
    if catalog is None:
        return False
    found = catalog.derived.get("mask event trigger code")
    if found is None:
        types = {t.oid for t in catalog.types_named("event_trigger")} or {3838}
        found = catalog.derived["mask event trigger code"] = any(
            not fn.builtin and fn.result_type in types for fn in catalog.functions)
    return bool(found)


def _prepared_bodies(session: Session, statement: Statement, name: str) -> list[tuple]:
    """The (lineage, analysis) of each body PREPAREd under ``name``, as the server runs it at
    ``statement`` (an EXECUTE, or an EXPLAIN of one); ``[(None, None)]`` for a name not seen.

    The server plans a prepared statement again when what it reads changed (a view or function
    replaced) or the search_path moved, and runs it on the new definitions: a body traced on
    another catalog, path or staleness than ``statement``'s is traced again on ``statement``'s
    (red team fourteen: ``PREPARE q AS SELECT id FROM orders WHERE f() LIKE '8%'`` with ``f``
    harmless, then ``f`` replaced to return the SSN: ``EXECUTE q`` answered the guess by its
    rows; the same with a view replaced in the open transaction). Kept per session, by context."""
    known = session.store.get(PREPARED_BODIES, {}).get(name)
    taken = session.store.get(PROTOCOL_PREPARED, None)
    if not known or taken and name in taken or session.store.get(PREPARED_UNSEEN, False):
        # (a name a protocol Parse took, or after code that may PREPARE any name: the server may
        # run another statement under it than the bodies seen PREPAREd, as the block plugin takes it)
        return [(None, None)]
    now = statement.context
    if now is not None and len(statement.lineage) > 1:
        # An EXECUTE after other statements of its string runs after what they change, which
        # ``statement``'s context (its first statement's) does not show: a search_path they set
        # (any schema they name or the path held), DDL (``CREATE OR REPLACE VIEW ...; EXECUTE q``
        # in one Query answered a guess by its rows): stale then, as lineage takes the statements
        # after DDL in a string (`lineage.lineage_of`)
        now = now.after(statement.analysis)
        if statement.kinds & _CHANGES_CATALOG:
            now = now.with_stale(True)
    out: list[tuple] = []
    for body, analysis, source in known:
        if now is None or source is None or source[2] is None:
            out.append((body, analysis))
            continue
        sql, index, then = source
        if (then.catalog is now.catalog and then.stale == now.stale and then.search_path == now.search_path
                and then.possible == now.possible):
            out.append((body, analysis))
            continue
        memo: dict = session.store.setdefault(RETRACED_BODIES, {})
        key = (name, sql, index, then.key, now.catalog.generation, now.stale, now.search_path, now.possible)
        again = memo.get(key)
        if again is None:
            context = attrs.evolve(then, catalog=now.catalog, stale=now.stale, search_path=now.search_path,
                                   possible=now.possible)
            retraced = Statement(sql, context=context)
            lineages = retraced.lineage
            found = next((b for kind, n, b in (lineages[index].defines if index < len(lineages) else ())
                          if kind == "prepared" and n == name), None)
            found_analysis = next((b for n, b, _syntax in retraced.analysis.prepares if n == name), None)
            # (a body that no longer traces: not known, refused as such)
            again = (found, found_analysis)
            if len(memo) > 100:
                memo.clear()
            memo[key] = again
        out.append(again)
    return out


def _executed_tables(rules: SessionRules, statement: Statement, session: Session) -> frozenset[str]:
    """The tables the SQL-level prepared statements ``statement`` EXECUTEs read (their bodies'
    lineage; every table holding masked columns for a body pgwarden cannot read)."""
    names = statement.analysis.executes
    if not names:
        return frozenset()
    found: set[str] = set()
    for name in names:
        for body, _analysis in _prepared_bodies(session, statement, name):
            if body is None or body.reads is None:
                catalog = statement.context.catalog if statement.context is not None else None
                globs = rules.masked_tables()
                found |= {f"{r.schema}.{r.name}" for r in (catalog.relations if catalog is not None else ())
                          if any(fnmatch.fnmatchcase(f"{r.schema}.{r.name}", g) for g in globs)}
            else:
                found |= {f"{s.schema}.{s.table}" for s in body.reads if hasattr(s, "table")}
    return frozenset(found)


def _keeps(kinds: frozenset[str], analysis, catalog=None) -> bool:
    """Whether a statement keeps a value where a later one reads it back (`_KEEPS`): also when it
    runs code of the database's own that pgwarden cannot see into (``unknown``: EXECUTE of SQL a
    function builds), which may do anything a statement may whatever volatility its function
    declares (a VOLATILE one is a side effect; the same body declared IMMUTABLE or STABLE, the
    agent's word, took an advisory lock keyed by the SSN all the same: red team eight)."""
    return bool(kinds & _KEEPS or analysis.settings
                or any(name.startswith(_KEEPING_FUNCTIONS) for name in analysis.functions)
                or "unknown" in kinds and catalog is not None and any(
                    not fn.builtin for name in analysis.functions
                    for fn in catalog.functions_named(name.rpartition(".")[2])))
