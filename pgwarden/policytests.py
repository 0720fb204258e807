"""`pgwarden test`: a policy's test cases, a YAML file beside it, decided without a database.

A case is who (subject, groups, claims), what (one SQL string, or several sent in order in one
session, the expectation on the last), in which session state (search_path, lexer settings),
and what pgwarden must answer: the action, the rule that decides (``policy/rule``), the
outputs masked. Each is decided on the path `pgwarden explain` takes (`offline.decide`), so a
passing test says what `pgwarden run` does.

Offline, the catalog is the shipped snapshot of PostgreSQL's built-in catalog, which knows no
table of the user's: without a table's columns, lineage cannot tell a masked column from
another and masking answers "masked whole". The file's ``catalog.tables`` declares the tables
the cases need (their columns, in order); with ``--dsn`` the database's own catalog is read and
the section is not used. A file that declares tables declares the whole database as far as its
cases go (the catalog is complete: the mask plugin relies on it as on a live one).

The file is read like the config: unknown keys, wrong types, an identity or a rule that does
not exist are each reported with the file, the line, the key path and what was expected.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from pgwarden.config import (
    ConfigError,
    did_you_mean,
    line_index,
    located,
    parse_document,
    read_document,
    structure_string,
)
from pgwarden.identity import Identity
from pgwarden.offline import NO_POLICY_RULE, Decision, MaskedOutput, decide, offline_session
from pgwarden.sql.context import DEFAULT_PATH, SqlContext, parse_path
from pgwarden.sql.lexer import LexerSettings

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog
    from pgwarden.config import Config
    from pgwarden.plugins import PluginHost

#: ``expect.rule`` when the case does not say (any rule will do)
NOT_CHECKED = "(not checked)"
#: rule names the core gives verdicts that no rule of the file has (the built-in plugins' own,
#: such as ``default: block`` or ``unknown: block``, say ``kind: what``)
BUILT_IN_RULES = frozenset({"read-only session", NO_POLICY_RULE})


def _built_in(rule: str) -> bool:
    return rule in BUILT_IN_RULES or ": " in rule
SECTIONS = "cases:, identities:, catalog:"
#: OIDs of the tables a test file declares: above any the server gives out at initdb
_FIRST_OID = 1_000_000_000


@attrs.frozen
class IdentitySpec:
    subject: str
    groups: tuple[str, ...] = ()
    claims: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen
class SessionSpec:
    #: the search_path the session has (None: the server's default, "$user", public)
    search_path: tuple[str, ...] | None = None
    standard_conforming_strings: bool = True


@attrs.frozen
class Expect:
    action: Literal["allow", "block", "approve"]
    #: ``policy/rule``, or a rule name its policy need not be given for; null: no rule (a default)
    rule: str | None = NOT_CHECKED
    #: the outputs masked (as the agent sees them, or their ``schema.table.column`` source); None: not checked
    masked: tuple[str, ...] | None = None


@attrs.frozen
class Case:
    name: str
    identity: str | IdentitySpec
    sql: tuple[str, ...]
    expect: Expect
    session: SessionSpec = SessionSpec()


@attrs.frozen
class CatalogSpec:
    #: ``schema.table`` -> its columns in order: names (text), or a mapping of names to type names
    tables: dict[str, tuple[str, ...] | dict[str, str]] = attrs.Factory(dict)


@attrs.frozen
class TestFile:
    __test__ = False  # not a pytest class

    cases: tuple[Case, ...]
    identities: dict[str, IdentitySpec] = attrs.Factory(dict)
    catalog: CatalogSpec = CatalogSpec()
    source: str = attrs.field(default="<tests>", metadata={"internal": True})
    lines: Mapping[tuple, int] = attrs.field(factory=dict, eq=False, repr=False, metadata={"internal": True})

    def where(self, *path: object) -> str:
        """``file: line N: path`` of a key, for messages."""
        return f"{self.source}: {located(self.lines, tuple(path), '').rstrip(': ')}"


def _names(value: object) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def _path(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return parse_path(value)
    return _names(value)


def _identity(value: object, _type: object) -> str | IdentitySpec:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _CONVERTER.structure(value, IdentitySpec)
    raise ValueError(f"expected the name of an identity under identities:, or {{subject, groups, claims}}, "
                     f"got {value!r}")


def _columns(value: object, _type: object) -> tuple[str, ...] | dict[str, str]:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected the table's columns: a list of names, or a mapping of names to types, got {value!r}")


def _converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    c.register_structure_hook(str, structure_string)  # (first: the functions made below take it)
    c.register_structure_hook_func(lambda t: t == (str | IdentitySpec), _identity)
    c.register_structure_hook_func(lambda t: t == (tuple[str, ...] | dict[str, str]), _columns)
    c.register_structure_hook_func(lambda t: t == (tuple[str, ...] | None), lambda v, _t: _path(v))
    c.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _t: _names(v))
    for cls in (IdentitySpec, SessionSpec, Expect, CatalogSpec):
        c.register_structure_hook(cls, make_dict_structure_fn(cls, c, _cattrs_forbid_extra_keys=True))
    case = make_dict_structure_fn(Case, c, _cattrs_forbid_extra_keys=True)
    # ``sql:`` one string, or a list of them sent in order in one session
    c.register_structure_hook(Case, lambda v, t: case({**v, "sql": [v["sql"]]} if isinstance(v, dict)
                                                      and isinstance(v.get("sql"), str) else v, t))
    c.register_structure_hook(TestFile, make_dict_structure_fn(
        TestFile, c, _cattrs_forbid_extra_keys=True, source=cattrs.gen.override(omit=True),
        lines=cattrs.gen.override(omit=True)))
    return c


_CONVERTER = _converter()


def _rule_names(config: Config) -> dict[str, set[str]]:
    return {p.name: {r.name for r in p.rules if r.name} for p in config.policies}


def _check_rule(spec: str, config: Config) -> str | None:
    """Why ``spec`` (``policy/rule`` or ``rule``) names no rule of ``config`` (None: it does)."""
    rules = _rule_names(config)
    every = [f"{p}/{r}" for p, names in rules.items() for r in sorted(names)]
    policy, slash, rule = spec.rpartition("/")
    if not slash:
        if _built_in(rule) or any(rule in names for names in rules.values()):
            return None
        return f"no rule named {rule!r} in {config.source}{did_you_mean(rule, every)}"
    if policy not in rules:
        return f"no policy {policy!r} in {config.source}{did_you_mean(policy, list(rules))}"
    if rule in rules[policy] or _built_in(rule):
        return None
    return f"no rule {rule!r} in policy {policy!r} of {config.source}{did_you_mean(spec, every)}"


def load_tests(path: str | Path, config: Config) -> TestFile:
    """The test file at ``path``, checked against ``config``; or ConfigError listing every problem."""
    text, source = read_document(path)
    tests = parse_document(text, source, TestFile, _CONVERTER, SECTIONS)
    lines = line_index(text)
    tests = attrs.evolve(tests, source=source, lines=lines)
    problems = []
    for i, case in enumerate(tests.cases):
        if isinstance(case.identity, str) and case.identity not in tests.identities:
            problems.append(located(lines, ("cases", i, "identity"),
                                    f"expected the name of an identity under identities:, got {case.identity!r}"
                                    + did_you_mean(case.identity, tests.identities)))
        if not case.sql:
            problems.append(located(lines, ("cases", i, "sql"), "expected a statement, or a list of them"))
        rule = case.expect.rule
        if rule is not None and rule != NOT_CHECKED:
            why = _check_rule(rule, config)
            if why is not None:
                problems.append(located(lines, ("cases", i, "expect", "rule"), why))
    for name in tests.catalog.tables:
        schema, dot, table = name.partition(".")
        if not dot or not schema or not table or "." in table:
            problems.append(located(lines, ("catalog", "tables", name),
                                    f"expected a table as schema.table, got {name!r}"))
    if not tests.cases:
        problems.append(located(lines, ("cases",), "expected at least one case"))
    if problems:
        raise ConfigError(source, problems)
    return tests


def with_tables(base: Catalog, tables: Mapping[str, tuple[str, ...] | dict[str, str]], source: str) -> Catalog:
    """``base`` and the tables a test file declares (ConfigError for a type ``base`` does not know)."""
    from pgwarden.catalog.model import Catalog, RelationFacts

    if not tables:
        return base
    oids = itertools.count(_FIRST_OID)
    relations = list(base.relations)
    attributes = [(oid, names, types) for oid, (names, types) in base._attributes.items()]
    problems = []
    for name, columns in tables.items():
        schema, _, table = name.partition(".")
        pairs = columns.items() if isinstance(columns, dict) else ((c, "text") for c in columns)
        names, types = [], []
        for column, type_name in pairs:
            found = [t for t in base.types_named(type_name) if t.schema == "pg_catalog"]
            if not found:
                problems.append(f"catalog.tables.{name}.{column}: expected a type the catalog knows "
                                f"(int4, text, numeric, ...), got {type_name!r}")
                continue
            names.append(column)
            types.append(found[0].oid)
        oid = next(oids)
        relations.append(RelationFacts(oid, schema, table, "r", column_types=tuple(types)))
        attributes.append((oid, tuple(names), tuple(types)))
    if problems:
        raise ConfigError(source, problems)
    return Catalog(functions=base.functions, relations=relations, operators=base.operators, types=base.types,
                   casts=base.casts, attributes=attributes, settings=base.settings,
                   schemas=base.schemas | {name.partition(".")[0] for name in tables},
                   server_version=base.server_version, source=f"{base.source} + {len(tables)} table(s) of the tests",
                   # The file declares the database the cases run in: what it does not declare is
                   # not there (as in a live catalog), and masking may rely on what it does.
                   complete=True)


# ---------------------------------------------------------------------- running


@attrs.frozen
class CaseResult:
    case: Case
    index: int
    decision: Decision
    problems: tuple[str, ...]
    #: every rule that decided a statement of the case or masked an output: ``policy/rule``
    exercised: frozenset[str]
    #: the tables the statement names that the catalog does not know (masking cannot be told)
    unknown_tables: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.problems


def _rule_of(policy: str | None, rule: str | None) -> str | None:
    if rule is None:
        return None
    return f"{policy}/{rule}" if policy else rule


def _masked_text(masked: tuple[MaskedOutput, ...]) -> str:
    return ", ".join(f"{m.column} ({m.strategy} by {m.rule})" for m in masked) or "none"


def _masks_match(expected: tuple[str, ...], masked: tuple[MaskedOutput, ...]) -> bool:
    hits = [any(e in (m.column, m.source) for m in masked) for e in expected]
    covered = [any(e in (m.column, m.source) for e in expected) for m in masked]
    return all(hits) and all(covered)


def run_case(config: Config, host: PluginHost, catalog: Catalog, tests: TestFile, index: int) -> CaseResult:
    case = tests.cases[index]
    spec = case.identity if isinstance(case.identity, IdentitySpec) else tests.identities[case.identity]
    claims = {"sub": spec.subject, "groups": list(spec.groups), **spec.claims}
    identity = Identity(spec.subject, frozenset(spec.groups), claims)
    session = offline_session(config, identity, f"test-{index}")
    path = case.session.search_path if case.session.search_path is not None else DEFAULT_PATH
    lexer = LexerSettings(standard_conforming_strings=case.session.standard_conforming_strings)
    context = SqlContext(catalog, user=config.upstream.user, search_path=path, default_path=path, lexer=lexer)
    exercised: set[str] = set()
    decision = None
    for sql in case.sql:
        decision = decide(config, host, identity, sql, context, catalog, session=session)
        rule = _rule_of(decision.verdict.policy, decision.verdict.rule)
        if rule:
            exercised.add(rule)
        exercised.update(m.rule for m in decision.masked if m.rule)
        analysis = decision.statement.analysed
        if decision.verdict.action == "allow" and analysis is not None:
            context = context.after(analysis)  # as the proxy follows the session
    assert decision is not None  # a case has at least one statement
    verdict, expect = decision.verdict, case.expect
    problems = []
    if verdict.action != expect.action:
        problems.append(f"expected {expect.action}, got {verdict.action}")
    if expect.rule != NOT_CHECKED:
        got = _rule_of(verdict.policy, verdict.rule)
        wanted = expect.rule
        same = got == wanted or (wanted is not None and "/" not in wanted and verdict.rule == wanted)
        if not same:
            problems.append(f"expected the rule {wanted or '(none: a default)'}, got {got or '(none: a default)'}")
    if expect.masked is not None and not _masks_match(expect.masked, decision.masked):
        problems.append(f"expected masked: {', '.join(expect.masked) or 'none'}; got: {_masked_text(decision.masked)}")
    unknown: tuple[str, ...] = ()
    if problems and decision.statement.analysed is not None:
        unknown = tuple(sorted(t for t in decision.statement.analysed.tables
                               if not any(r.schema == t.rpartition(".")[0]
                                          for r in catalog.relations_named(t.rpartition(".")[2]))))
    return CaseResult(case, index, decision, tuple(problems), frozenset(exercised), unknown)


def catalog_for(tests: TestFile, base: Catalog, live: bool) -> Catalog:
    """The catalog the cases are decided against: a live one as it is, else ``base`` and the
    file's tables."""
    return base if live else with_tables(base, tests.catalog.tables, tests.source)


def run_tests(config: Config, host: PluginHost, tests: TestFile, catalog: Catalog) -> list[CaseResult]:
    return [run_case(config, host, catalog, tests, i) for i in range(len(tests.cases))]


def report_lines(results: list[CaseResult], tests: TestFile) -> list[str]:
    lines = []
    for result in results:
        case = result.case
        if result.passed:
            lines.append(f"PASS  {case.name}")
            continue
        lines.append(f"FAIL  {case.name}  ({tests.where('cases', result.index)})")
        for sql in case.sql:
            lines.append(f"      sql: {' '.join(sql.split())}")
        for problem in result.problems:
            lines.append(f"      {problem}")
        v = result.decision.verdict
        by = _rule_of(v.policy, v.rule) or "no rule (the policies' default)"
        lines.append(f"      decided by: {by}" + (f": {v.reason}" if v.reason else ""))
        if result.unknown_tables:
            lines.append(f"      note: the catalog does not know {', '.join(result.unknown_tables)}: declare "
                         "it under catalog.tables in the test file, or run with --dsn")
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed ({tests.source})")
    return lines


def unexercised(config: Config, results: list[CaseResult]) -> list[str]:
    """``policy/rule`` of each named, enforced rule that no case's decision came from. Shadow
    rules are left out: cases decide as pgwarden enforces, and a shadow rule never decides (its
    tests belong to the candidate that enforces it, docs/policies.md). Limit rules too: the
    server and the relay enforce them on what runs (rows written, rows sent, time), which a case
    without a database never produces."""
    exercised = set().union(*(r.exercised for r in results)) if results else set()
    return [f"{p.name}/{r.name}" for p in config.policies if p.mode != "shadow" for r in p.rules
            if r.name and r.mode != "shadow" and r.kind != "limit" and f"{p.name}/{r.name}" not in exercised]


def beside(config_path: str | Path) -> Path:
    """The test file of a config by convention: ``pgwarden.yaml`` -> ``pgwarden.tests.yaml``."""
    p = Path(config_path)
    stem = p.name[:-len(p.suffix)] if p.suffix in (".yaml", ".yml") else p.name
    return p.with_name(f"{stem}.tests{p.suffix or '.yaml'}")
