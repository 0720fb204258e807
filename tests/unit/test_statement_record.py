"""A ``statement`` record as the recorder builds it (compiled or not): every field, in the order
that makes its bytes, and so its hash (docs/records.md), whatever the statement and session; and
the ``statement`` and ``result`` records it builds serialised for the built-in plugin alone: the
bytes orjson makes of the same records."""

from __future__ import annotations

import re
from types import SimpleNamespace

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from pluggy._callers import _multicall
from twisted.internet.task import Clock

from pgwarden.api import hookimpl
from pgwarden.chain import Chain, seal
from pgwarden.config import Recording
from pgwarden.limits import SessionLimits
from pgwarden.plugins import PluginHost
from pgwarden.proxy.state import ConnectionState
from pgwarden.recorder import Recorder, SessionLog
from pgwarden.relay.engine import StatementRequest
from pgwarden.relay.execution import Execution
from pgwarden.sql.analysis import Analysis
from pgwarden.sql.context import SqlContext
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.sql.statement import Statement
from pgwarden.testing.matrix import examples
from pgwarden.turns import Turns


class _Conn(ConnectionState):
    """What the recorder reads of a session's connection: its native base's ``log`` and ``shadow``."""

    def __init__(self, log: SessionLog, shadow=None) -> None:
        ConnectionState.__init__(self, None, SessionLimits())
        self.log = log
        self.shadow = shadow

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


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(requests, statements, verdicts, shadows), min_size=1, max_size=6), paths)
def test_a_statement_record_has_every_field_in_the_order_and_bytes_it_always_had(turn, start_path):
    recorder, taken = _recorder()
    slog = SessionLog("0123456789abcdef")
    slog.identity = {"subject": "agent", "groups": ["a", "b"]}
    slog.search_path = start_path
    conn = _Conn(slog)
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


# ---------------------------------------------------------------- built serialised

class _Plugin:
    """A sink plugin as the built-in ``recording`` (`pgwarden.recorder.CHAINS`): its hook seals
    into its chain (here: it keeps what it is handed), its flush has nothing of its own to do."""

    pgwarden_takes_records_early = True

    def __init__(self) -> None:
        self.pgwarden_chains = [Chain()]
        self.taken: list = []

    @hookimpl
    def pgwarden_records(self, records) -> None:
        self.taken.extend(records)

    @hookimpl
    def pgwarden_records_flush(self) -> None:
        return None


def _direct_recorder() -> tuple[Recorder, _Plugin, PluginHost]:
    """A recorder whose records go to such a plugin alone: it builds statement and result records
    serialised and seals them into the plugin's chain itself while the hooks are not traced
    (``pm._inner_hookexec``, which a test may replace)."""
    plugin = _Plugin()
    host = PluginHost(None, None, [("recording", plugin)], use_entry_points=False)
    host._recording = {"recording"}  # (what `accept` finds: the plugin wants records)
    clock = Clock()
    app = SimpleNamespace(reactor=clock, plugins=host, turns=Turns(clock),
                          config=SimpleNamespace(recording=Recording()))
    recorder = Recorder(app)
    assert recorder._direct() is plugin.pgwarden_chains
    return recorder, plugin, host


def _handed_over(recorder: Recorder, plugin: _Plugin, host: PluginHost, traced: bool, expected: dict) -> None:
    """The record kept last reaches the plugin as the reference's bytes: sealed into its chain
    by the recorder, or (its hooks traced) handed to its hook as the reference mapping."""
    host.pm._inner_hookexec = (lambda *a: _multicall(*a)) if traced else _multicall
    chain = plugin.pgwarden_chains[0]
    prev = chain.prev
    assert recorder._hand_over(recorder._direct()) is None
    if traced:
        assert list(plugin.taken[-1].items()) == list(expected.items())
        assert orjson.dumps(plugin.taken[-1]) == orjson.dumps(expected)
        assert chain.lines == []
    else:
        assert chain.take() == seal(orjson.dumps(expected), prev)[0]


identities = st.builds(lambda subject, groups: {"subject": subject, "groups": sorted(groups)},
                       st.none() | names, word_lists)
TS = re.compile(rb'\{"ts":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z",')


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(requests, statements, verdicts, shadows, st.booleans(), st.none() | identities),
                min_size=1, max_size=6), paths, names, identities)
def test_a_statement_record_built_serialised_is_the_bytes_of_the_record(turn, start_path, session, identity):
    recorder, plugin, host = _direct_recorder()
    slog = SessionLog(session)
    slog.identity = identity
    slog.search_path = start_path
    conn = _Conn(slog)
    for request, statement, verdict, shadow, traced, new_identity in turn:
        if new_identity is not None:  # (a session_start gives a session its identity: a new mapping)
            slog.identity = new_identity
        recorder.statement(conn, request, statement, verdict, waits=True, shadow=shadow)
        body = recorder._kept[-1]
        assert isinstance(body, bytes) and TS.match(body)
        expected = _expected(slog, orjson.loads(body)["ts"], request, statement, verdict, shadow)
        assert body == orjson.dumps(expected)
        _handed_over(recorder, plugin, host, traced, expected)
    assert slog.statements == len(turn) and slog.seq == len(turn)


def _execution(seq, rows, size, times, sqlstate, message, truncated, sample, clipped) -> Execution:
    arrived, forwarded, finished, decide = times
    ex = Execution(seq, "simple", arrived, arrived + forwarded, decide)
    ex.finished = arrived + forwarded + finished
    ex.rows, ex.bytes, ex.sqlstate, ex.message, ex.truncated = rows, size, sqlstate, message, truncated
    ex.sample, ex.sample_clipped = sample, clipped
    return ex


seconds = st.floats(0, 1e4, allow_nan=False) | st.sampled_from([0.0, 1e-7, 0.1, 1e-3, 12345.678901])
executions = st.builds(_execution, st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40),
                       st.tuples(st.floats(0, 2e9, allow_nan=False), seconds, seconds, seconds),
                       st.none() | st.just("00000") | names, st.none() | names, st.booleans(),
                       st.none() | st.lists(st.lists(st.none() | names, max_size=3), max_size=3), st.booleans())
row_caps = st.lists(st.tuples(names, st.none() | names, st.integers(0, 2**40)), max_size=2)


def _expected_result(slog: SessionLog, ts: str, ex: Execution, caps: list) -> dict:
    """A result record as the recorder built it before it built them serialised: the reference."""
    upstream, own = ex.finished - ex.forwarded, ex.forwarded - ex.arrived + ex.decide_s
    record: dict = {"ts": ts, "type": "result", "session": slog.id, "seq": slog.seq, "identity": slog.identity,
                    "statement": ex.seq, "rows": ex.rows, "bytes": ex.bytes,
                    "duration_ms": int((upstream + own) * 1e6) / 1000, "upstream_ms": int(upstream * 1e6) / 1000,
                    "pgwarden_ms": int(own * 1e6) / 1000, "sqlstate": ex.sqlstate}
    if ex.message is not None:
        record["error"] = ex.message
    if ex.truncated:
        record["truncated"] = True
    shadow = [{"policy": policy, "rule": rule, "action": "limit",
               "reason": f"would be truncated at {cap} rows (of {ex.rows})"}
              for policy, rule, cap in caps if ex.rows > cap]
    if shadow:
        record["shadow"] = shadow
    if ex.sample is not None:
        record["rows_sample"] = ex.sample
        if ex.sample_clipped:
            record["rows_sample_clipped"] = True
    return record


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.tuples(executions, st.none() | row_caps, st.booleans()), min_size=1, max_size=6), names,
       identities)
def test_a_result_record_built_serialised_is_the_bytes_of_the_record(turn, session, identity):
    recorder, plugin, host = _direct_recorder()
    slog = SessionLog(session)
    slog.identity = identity
    for ex, caps, traced in turn:
        shadow = None if caps is None else SimpleNamespace(row_caps=[
            (SimpleNamespace(policy=policy, rule=None), (cap, policy, rule)) for policy, rule, cap in caps])
        recorder._result(_Conn(slog, shadow), ex)
        body = recorder._kept[-1]
        assert isinstance(body, bytes) and TS.match(body)
        expected = _expected_result(slog, orjson.loads(body)["ts"], ex, caps or [])
        assert body == orjson.dumps(expected)
        _handed_over(recorder, plugin, host, traced, expected)
    assert slog.seq == len(turn) and slog.rows == sum(ex.rows for ex, _, _ in turn)


def test_a_record_orjson_refuses_is_kept_as_a_mapping_and_fails_its_hand_over_as_before():
    recorder, plugin, host = _direct_recorder()
    slog = SessionLog("0123456789abcdef")
    conn = _Conn(slog)
    verdict = SimpleNamespace(action="allow", policy="p", rule=None, reason=None)
    recorder.statement(conn, StatementRequest("simple", "select '\ud800'", None, 1), None, verdict, waits=True)
    assert recorder._kept[-1]["sql"] == "select '\ud800'"
    assert recorder._hand_over(recorder._direct()) is not None  # the recorder then refuses statements
    ex = _execution(1, 1, 10, (1.0, 0.1, 0.1, 0.0), "00000", "bad \ud800", False, None, False)
    recorder._result(conn, ex)
    assert recorder._kept[-1]["error"] == "bad \ud800"
    assert recorder._hand_over(recorder._direct()) is not None
    slog.identity = {"subject": "\udc80", "groups": []}  # (a token's claim may hold one)
    recorder.statement(conn, StatementRequest("simple", "select 1", None, 2), None, verdict, waits=True)
    recorder._result(conn, _execution(2, 1, 10, (1.0, 0.1, 0.1, 0.0), "00000", None, False, None, False))
    assert [record["identity"]["subject"] for record in recorder._kept] == ["\udc80", "\udc80"]
    assert recorder._hand_over(recorder._direct()) is not None
    assert plugin.pgwarden_chains[0].lines == []
