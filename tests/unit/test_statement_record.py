"""A ``statement`` record as the recorder builds it (compiled or not): every field, in the order
that makes its bytes, and so its hash (docs/records.md), whatever the statement and session."""

from __future__ import annotations

from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from pgwarden.config import Recording
from pgwarden.recorder import Recorder, SessionLog
from pgwarden.relay.engine import StatementRequest
from pgwarden.sql.analysis import Analysis
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.statement import Statement
from pgwarden.turns import Turns

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
word_lists = st.lists(names, max_size=4)


def _recorder() -> tuple[Recorder, list]:
    taken: list = []
    plugins = SimpleNamespace(
        record_takers=lambda: [("capture", lambda records: taken.extend(records))],
        record_writers=list, record_flushers=list,
        pm=SimpleNamespace(get_plugin=lambda name: None), _each=lambda hook: [])
    clock = Clock()
    app = SimpleNamespace(reactor=clock, plugins=plugins, turns=Turns(clock),
                          config=SimpleNamespace(recording=Recording()))
    return Recorder(app), taken


def _expected(slog: SessionLog, ts: str, request, statement, verdict, shadow) -> dict:
    """The record as the recorder built it key by key before (f6d8c1a and earlier): the reference."""
    record: dict = {"ts": ts, "type": "statement", "session": slog.id, "seq": slog.seq,
                    "identity": slog.identity}
    record["statement"] = request.seq
    record["protocol"] = request.protocol
    if request.statement_name:
        record["name"] = request.statement_name
    if statement is not None:
        record["sql"] = statement.sql
        record["fingerprint"] = statement.fingerprint
        a = statement.analysis
        record.update({"kinds": sorted(a.kinds), "tables": sorted(a.tables), "writes": sorted(a.writes),
                       "functions": sorted(a.functions)})
        c = statement.context
        if c is not None:
            path = c.search_path
            if path != slog.search_path or c.possible or not c.lexer.default:
                record["search_path"] = None if c.search_path is None else list(c.search_path)
                if c.possible:
                    record["search_path_possible"] = sorted(c.possible)
                if not c.lexer.default:
                    record["lexer"] = {"standard_conforming_strings": c.lexer.standard_conforming_strings,
                                       "backslash_quote": c.lexer.backslash_quote}
    else:
        record["sql"] = request.sql
    record["verdict"] = {"action": verdict.action, "policy": verdict.policy, "rule": verdict.rule,
                         "reason": verdict.reason}
    if shadow:
        record["shadow"] = shadow
    return record


paths = st.none() | st.tuples(names, names)
lexers = st.sampled_from([DEFAULT_LEXER, LexerSettings(False, True), LexerSettings(True, False)])
# Real objects, as the decision hands them over (the recorder reads a request's and a
# statement's fields natively, compiled: a stand-in of another class would be refused).
contexts = st.none() | st.builds(lambda p, possible, lexer: SqlContext(None, search_path=p,  # type: ignore[arg-type]
                                                                       possible=possible, lexer=lexer),
                                 paths, st.frozensets(names, max_size=2), lexers)
analyses = st.builds(lambda k, t, w, f: Analysis(kinds=frozenset(k), tables=frozenset(t), writes=frozenset(w),
                                                 functions=frozenset(f)),
                     word_lists, word_lists, word_lists, word_lists)


def _statement(sql: str, fingerprint: str | None, analysis: Analysis, context: SqlContext | None) -> Statement:
    statement = Statement(sql, analyze=lambda _: analysis, context=context)
    statement._fingerprint = fingerprint  # (what libpg_query would say of a real text)
    return statement


statements = st.none() | st.builds(_statement, names, st.none() | names, analyses, contexts)
requests = st.builds(lambda seq, protocol, name, sql: StatementRequest(protocol, sql, name, seq),
                     st.integers(0, 2**40), st.sampled_from(["simple", "extended"]), st.none() | names, names)
verdicts = st.builds(lambda action, policy, rule, reason: SimpleNamespace(action=action, policy=policy, rule=rule,
                                                                          reason=reason),
                     st.sampled_from(["allow", "block", "approve"]), names, st.none() | names, st.none() | names)
shadows = st.none() | st.lists(st.dictionaries(names, names, max_size=2), max_size=2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(requests, statements, verdicts, shadows), min_size=1, max_size=6), paths)
def test_a_statement_record_has_every_field_in_the_order_and_bytes_it_always_had(turn, start_path):
    recorder, taken = _recorder()
    slog = SessionLog("0123456789abcdef")
    slog.identity = {"subject": "agent", "groups": ["a", "b"]}
    slog.search_path = start_path
    conn = SimpleNamespace(log=slog)
    expected = []
    for request, statement, verdict, shadow in turn:
        recorder.statement(conn, request, statement, verdict, waits=True, shadow=shadow)
        recorder._hand_over(None)
        record = taken[-1]
        expected.append(_expected(slog, record["ts"], request, statement, verdict, shadow))
        assert list(record.items()) == list(expected[-1].items())
        assert orjson.dumps(record) == orjson.dumps(expected[-1])
    assert slog.statements == len(turn) and slog.seq == len(turn)
    assert slog.refused == sum(1 for _, _, v, _ in turn if v.action == "block")
