"""The sans-IO relay, driven as a conversation: client bytes in, server bytes in, bytes out.

Each test reads as the exchange it checks: ``client(...)`` is what the agent
sends, ``upstream()`` what pgwarden forwards, ``server(...)`` what PostgreSQL
answers and ``down()`` what the agent receives.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.relay.engine import ALLOW, PENDING, Relay
from pgwarden.testing.matrix import examples
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m

COL = m.Column("n", 16400, 2, 23, 4, -1, 0)
SHAPE = m.RowDescription((COL,))


class Talk:
    """A relay with a scripted decider, and helpers that speak messages."""

    def __init__(self, decide=lambda req: ALLOW, on_shape=None) -> None:
        self.requests = []

        def recording(req):
            self.requests.append(req)
            return decide(req)

        self.relay = Relay(recording, on_shape=on_shape)

    def client(self, *msgs) -> None:
        self.relay.client_data(b"".join(x.encode() for x in msgs))

    def server(self, *msgs) -> None:
        self.relay.server_data(b"".join(x.encode() for x in msgs))

    def upstream(self) -> list:
        return _split(b"".join(self.relay.pop_upstream()), m.decode_frontend)

    def down(self) -> list:
        return _split(b"".join(self.relay.pop_client()), m.decode_backend)


def _split(data: bytes, decode) -> list:
    out = []
    while data:
        n = int.from_bytes(data[1:5], "big") + 1
        out.append(decode(data[:n]))
        data = data[n:]
    return out


def test_simple_query_passes_through_and_tracks_status():
    t = Talk()
    t.client(m.Query("begin; select 1"))
    assert t.upstream() == [m.Query("begin; select 1")]
    t.server(m.CommandComplete("BEGIN"), SHAPE, m.DataRow((b"1",)), m.CommandComplete("SELECT 1"),
             m.ReadyForQuery("T"))
    assert [type(x) for x in t.down()] == [m.CommandComplete, m.RowDescription, m.DataRow,
                                            m.CommandComplete, m.ReadyForQuery]
    assert t.relay.state.transaction_status == "T"
    assert t.requests[0].sql == "begin; select 1" and t.requests[0].protocol == "simple"


def test_refused_query_is_replaced_by_one_that_raises_in_the_server():
    t = Talk(lambda req: Refusal("42501", "pgwarden: blocked: no", "Refused by rule 'r'.", "Do reads."))
    t.client(m.Query("drop table x"))
    (sent,) = t.upstream()
    assert isinstance(sent, m.Query) and sent.sql.startswith("DO $pgwarden$")
    assert "drop table" not in sent.sql
    assert "E'pgwarden: blocked: no'" in sent.sql and "HINT = E'Do reads.'" in sent.sql
    # The server's report carries the DO block's context: the agent does not see it.
    t.server(m.ErrorResponse((("S", "ERROR"), ("C", "42501"), ("M", "pgwarden: blocked: no"),
                              ("W", "PL/pgSQL function inline_code_block line 1 at RAISE"),
                              ("F", "pl_exec.c"), ("L", "3911"), ("R", "exec_stmt_raise"))),
             m.ReadyForQuery("I"))
    err, ready = t.down()
    assert err.fields == (("S", "ERROR"), ("C", "42501"), ("M", "pgwarden: blocked: no"))
    assert ready == m.ReadyForQuery("I")


def test_refusal_text_cannot_break_out_of_its_literal():
    nasty = "x'; drop table t; --\\' $pgwarden$ end $$"
    t = Talk(lambda req: Refusal("42501", nasty, nasty, nasty))
    t.client(m.Query("select 1"))
    (sent,) = t.upstream()
    import pglast

    tree = pglast.parse_sql(sent.sql)
    assert len(tree) == 1 and type(tree[0].stmt).__name__ == "DoStmt"


def test_refused_parse_skips_until_sync_and_swallows_own_completions():
    t = Talk(lambda req: Refusal("42501", "no") if "bad" in req.sql else ALLOW)
    t.client(m.Parse("", "insert into t values (1)"), m.Bind("", ""), m.Execute(""),
             m.Parse("s", "bad"), m.Bind("", "s"), m.Describe("P", ""), m.Execute(""),
             m.Sync())
    sent = t.upstream()
    # (the insert's portal was never described: pgwarden asks, for the row shape)
    assert [type(x) for x in sent] == [m.Parse, m.Bind, m.Describe, m.Execute,
                                       m.Parse, m.Bind, m.Execute, m.Sync]
    assert sent[4].sql.startswith("DO ") and sent[4].name == ""
    # The server runs the insert, then pgwarden's own Parse/Bind, then raises.
    t.server(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("INSERT 0 1"),
             m.ParseComplete(), m.BindComplete(),
             m.ErrorResponse.build("ERROR", "42501", "no"), m.ReadyForQuery("I"))
    got = t.down()
    assert [type(x) for x in got] == [m.ParseComplete, m.BindComplete, m.CommandComplete,
                                      m.ErrorResponse, m.ReadyForQuery]
    # The session goes on with the next Sync cycle.
    t.client(m.Parse("", "select 1"), m.Sync())
    assert [type(x) for x in t.upstream()] == [m.Parse, m.Sync]
    assert "s" not in t.relay.state.statements


def test_pending_verdict_holds_later_messages_in_order():
    waits = []
    t = Talk(lambda req: (waits.append(req), PENDING)[1])
    t.client(m.Query("select 1"), m.Query("select 2"))
    assert t.upstream() == []
    assert t.relay.waiting is waits[0]
    t.relay.resolve(waits[0], ALLOW)
    # The second one was decided as soon as the queue moved on: now pending too.
    assert t.upstream() == [m.Query("select 1")]
    t.relay.resolve(waits[1], Refusal("42501", "no"))
    (raised,) = t.upstream()
    assert raised.sql.startswith("DO ")


def test_cancel_while_pending_becomes_query_canceled():
    t = Talk(lambda req: PENDING)
    t.client(m.Query("select pg_sleep(1)"))
    assert t.relay.cancel_waiting()
    (sent,) = t.upstream()
    assert "57014" in sent.sql and "canceling statement due to user request" in sent.sql


def test_function_call_always_refused():
    t = Talk()
    t.client(m.FunctionCall(1598, (), (), 0))
    (sent,) = t.upstream()
    assert isinstance(sent, m.Query) and "FunctionCall" in sent.sql


def test_execute_of_undescribed_portal_asks_the_server_and_hides_the_answer():
    shapes = []
    t = Talk(on_shape=lambda shape, origin: shapes.append(shape) or None)
    t.client(m.Parse("s", "select n from t"), m.Bind("p", "s", (), (), (1,)), m.Execute("p"), m.Sync())
    sent = t.upstream()
    assert [type(x) for x in sent] == [m.Parse, m.Bind, m.Describe, m.Execute, m.Sync]
    assert sent[2] == m.Describe("P", "p")
    binary = attrs.evolve(COL, format=1)
    t.server(m.ParseComplete(), m.BindComplete(), m.RowDescription((binary,)),
             m.DataRow((b"\0\0\0\1",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    got = t.down()
    assert [type(x) for x in got] == [m.ParseComplete, m.BindComplete, m.DataRow,
                                      m.CommandComplete, m.ReadyForQuery]
    assert shapes == [m.RowDescription((binary,))]


def test_statement_description_plus_bind_formats_gives_the_shape():
    shapes = []
    t = Talk(on_shape=lambda shape, origin: shapes.append(shape) or None)
    t.client(m.Parse("s", "select n"), m.Describe("S", "s"), m.Sync())
    assert [type(x) for x in t.upstream()] == [m.Parse, m.Describe, m.Sync]
    t.server(m.ParseComplete(), m.ParameterDescription(()), SHAPE, m.ReadyForQuery("I"))
    assert [type(x) for x in t.down()] == [m.ParseComplete, m.ParameterDescription,
                                           m.RowDescription, m.ReadyForQuery]
    # Described already: no Describe of pgwarden's own; the formats come from Bind.
    t.client(m.Bind("", "s", (), (), (1,)), m.Execute(""), m.Sync())
    assert [type(x) for x in t.upstream()] == [m.Bind, m.Execute, m.Sync]
    t.server(m.BindComplete(), m.DataRow((b"\0\0\0\7",)), m.CommandComplete("SELECT 1"),
             m.ReadyForQuery("I"))
    assert shapes == [m.RowDescription((attrs.evolve(COL, format=1),))]


def test_row_transform_applies_to_its_result_only():
    def on_shape(shape, origin):
        if shape.columns[0].name == "secret":
            return lambda raw: m.DataRow((b"***",)).encode()
        return None

    t = Talk(on_shape=on_shape)
    t.client(m.Query("select secret; select n"))
    t.upstream()
    t.server(m.RowDescription((m.Column("secret"),)), m.DataRow((b"s3cr3t",)), m.CommandComplete("SELECT 1"),
             SHAPE, m.DataRow((b"5",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    rows = [x for x in t.down() if isinstance(x, m.DataRow)]
    assert rows == [m.DataRow((b"***",)), m.DataRow((b"5",))]


def test_error_in_pipeline_drops_expectations_until_sync():
    t = Talk()
    t.client(m.Parse("", "select 1/0"), m.Bind("", ""), m.Execute(""), m.Sync(),
             m.Parse("", "select 2"), m.Bind("", ""), m.Execute(""), m.Sync())
    t.upstream()
    t.server(m.ParseComplete(), m.BindComplete(), m.ErrorResponse.build("ERROR", "22012", "division by zero"),
             m.ReadyForQuery("I"), m.ParseComplete(), m.BindComplete(), m.DataRow((b"2",)),
             m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    assert [type(x) for x in t.down()] == [
        m.ParseComplete, m.BindComplete, m.ErrorResponse, m.ReadyForQuery,
        m.ParseComplete, m.BindComplete, m.DataRow, m.CommandComplete, m.ReadyForQuery,
    ]
    assert not t.relay._expect


def test_terminate_and_protocol_errors_close():
    t = Talk()
    t.client(m.Terminate())
    assert t.relay.terminated and t.upstream() == [m.Terminate()]
    t = Talk()
    t.relay.client_data(b"Z\0\0\0\4")
    assert t.relay.closing
    (fatal,) = t.down()
    assert fatal.get("S") == "FATAL" and fatal.sqlstate == "08P01"


# -------------------------------------------------------------------- any split gives the same bytes

CONVERSATION_CLIENT = b"".join(
    x.encode()
    for x in (
        m.Query("select 1; select 2"),
        m.Parse("a", "select $1::int"),
        m.Bind("", "a", (0,), (b"5",), (0,)),
        m.Describe("P", ""),
        m.Execute(""),
        m.Sync(),
        m.Query("copy t from stdin"),
        m.CopyData(b"1\n" * 100),
        m.CopyDone(),
    )
)
CONVERSATION_SERVER = b"".join(
    x.encode()
    for x in (
        SHAPE, m.DataRow((b"1",)), m.CommandComplete("SELECT 1"),
        SHAPE, m.DataRow((b"2",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"),
        m.ParseComplete(), m.BindComplete(), SHAPE, m.DataRow((b"5",)), m.CommandComplete("SELECT 1"),
        m.NoticeResponse.build("NOTICE", "00000", "hello"), m.ParameterStatus("TimeZone", "UTC"),
        m.ReadyForQuery("I"),
        m.CopyInResponse(0, (0,)), m.CommandComplete("COPY 100"), m.ReadyForQuery("I"),
    )
)


def _run(splits_client, splits_server):
    t = Talk()
    up = []
    down = []
    for part in _cut(CONVERSATION_CLIENT, splits_client):
        t.relay.client_data(part)
        up += t.relay.pop_upstream()
    for part in _cut(CONVERSATION_SERVER, splits_server):
        t.relay.server_data(part)
        down += t.relay.pop_client()
    return b"".join(up), b"".join(down), t


def _cut(data: bytes, points) -> list[bytes]:
    points = sorted({p % (len(data) + 1) for p in points})
    out, last = [], 0
    for p in points + [len(data)]:
        out.append(data[last:p])
        last = p
    return out


@settings(max_examples=examples(200))
@given(st.lists(st.integers(0, 10_000), max_size=30), st.lists(st.integers(0, 10_000), max_size=30))
def test_property_any_split_relays_the_same_bytes(cuts_client, cuts_server):
    up, down, t = _run(cuts_client, cuts_server)
    assert up == CONVERSATION_CLIENT
    assert down == CONVERSATION_SERVER
    assert t.relay.state.parameters["TimeZone"] == "UTC"
    assert not t.relay._expect


def test_byte_by_byte():
    up, down, _ = _run(range(len(CONVERSATION_CLIENT)), range(len(CONVERSATION_SERVER)))
    assert (up, down) == (CONVERSATION_CLIENT, CONVERSATION_SERVER)


def test_a_row_too_large_to_rewrite_fails_closed():
    from pgwarden.wire.framing import STREAM_THRESHOLD

    t = Talk(on_shape=lambda shape, origin: (lambda raw: raw))  # every result needs rewriting
    t.client(m.Parse("", "select big"), m.Bind("", ""), m.Describe("P", ""), m.Execute(""), m.Sync())
    t.upstream()
    t.server(m.ParseComplete(), m.BindComplete(), SHAPE)
    huge = m.DataRow((b"x" * (STREAM_THRESHOLD * 2),)).encode()
    t.relay.server_data(huge[: STREAM_THRESHOLD + 100])
    got = t.down()
    assert not any(isinstance(x, m.DataRow) for x in got)
    assert got[-1].get("S") == "FATAL" and got[-1].sqlstate == "54000"
    assert t.relay.closing


def test_large_rows_stream_when_nothing_rewrites_them():
    from pgwarden.wire.framing import STREAM_THRESHOLD

    t = Talk()
    t.client(m.Query("select big"))
    t.upstream()
    t.server(SHAPE)
    huge = m.DataRow((b"x" * (STREAM_THRESHOLD * 2),)).encode()
    t.relay.server_data(huge[: STREAM_THRESHOLD + 100])
    first = b"".join(t.relay.pop_client())
    assert len(first) > STREAM_THRESHOLD  # relayed before the row is complete
    t.relay.server_data(huge[STREAM_THRESHOLD + 100:] + m.CommandComplete("SELECT 1").encode())
    rest = b"".join(t.relay.pop_client())
    assert first + rest == SHAPE.encode() + huge + m.CommandComplete("SELECT 1").encode()


# -------------------------------------------------------------------- row caps: per-result state

# One result: (rows it returns, or None for a statement that returns none; rows it changed).
_RESULT = st.one_of(
    st.tuples(st.integers(0, 8), st.just(0)),  # SELECT n
    st.tuples(st.none(), st.integers(0, 30)),  # UPDATE n: no RowDescription, no rows
    st.tuples(st.just("empty"), st.just(0)),  # an empty query: EmptyQueryResponse
)
_STATEMENT = st.tuples(
    st.sampled_from(["simple", "extended"]),
    st.one_of(st.none(), st.integers(1, 5)),  # the row cap while it runs (a reload may change it)
    st.lists(_RESULT, min_size=1, max_size=3),  # results (the extended protocol takes the first)
)


@settings(max_examples=examples(300))
@given(st.lists(_STATEMENT, min_size=1, max_size=8))
def test_property_a_command_tag_is_rewritten_only_for_a_cut_result(statements):
    """Every CommandComplete the client gets equals the server's unless that result was cut."""
    t = Talk()
    for protocol, cap, results in statements:
        t.relay.row_cap = cap
        if protocol == "extended":
            results = results[:1]
            t.client(m.Parse("", "x"), m.Bind("", ""), m.Execute(""), m.Sync())
        else:
            t.client(m.Query("x"))
        t.upstream()
        answer = [m.ParseComplete(), m.BindComplete()] if protocol == "extended" else []
        expected_tags, expected_notices = [], 0
        for returned, changed in results:
            if returned == "empty":
                answer.append(m.EmptyQueryResponse())
                continue
            if protocol == "extended":  # pgwarden's own Describe of the portal
                answer.append(SHAPE if returned is not None else m.NoData())
            elif returned is not None:
                answer.append(SHAPE)
            if returned is None:
                tag = f"UPDATE {changed}"
                expected_tags.append(tag)
            else:
                answer += [m.DataRow((str(i).encode(),)) for i in range(returned)]
                tag = f"SELECT {returned}"
                cut = cap is not None and returned > cap
                expected_tags.append(f"SELECT {cap}" if cut else tag)
                expected_notices += cut
            answer.append(m.CommandComplete(tag))
        t.server(*answer, m.ReadyForQuery("I"))
        got = t.down()
        assert [x.tag for x in got if isinstance(x, m.CommandComplete)] == expected_tags
        assert sum(isinstance(x, m.NoticeResponse) for x in got) == expected_notices
        sent = sum(min(n, cap) if cap is not None else n for n, _ in results if isinstance(n, int))
        assert sum(isinstance(x, m.DataRow) for x in got) == sent
        assert isinstance(got[-1], m.ReadyForQuery)


def test_a_statement_without_rows_after_a_cut_result_keeps_its_tag():
    """Issue 16: after a truncated result, `UPDATE 1` came back as `UPDATE 20` with a notice."""
    t = Talk()
    t.relay.row_cap = 2
    t.client(m.Query("select g from generate_series(1, 5) g"))
    t.server(SHAPE, *[m.DataRow((b"1",))] * 5, m.CommandComplete("SELECT 5"), m.ReadyForQuery("I"))
    assert [x.tag for x in t.down() if isinstance(x, m.CommandComplete)] == ["SELECT 2"]
    t.client(m.Query("update t set n = 1 where id = 1"))
    t.server(m.CommandComplete("UPDATE 1"), m.ReadyForQuery("I"))
    assert t.down() == [m.CommandComplete("UPDATE 1"), m.ReadyForQuery("I")]


# -------------------------------------------------------------------- counted writes (rows_written)

from pgwarden.relay.counting import CountRows  # noqa: E402

CAP = CountRows(5, "p", "r")
_OWN_RUN_ANSWER = (m.CloseComplete(), m.CloseComplete(), m.ParseComplete(), m.BindComplete())


def _counted(req):
    return CAP if "update" in req.sql else ALLOW


def _before_answer(count: int) -> tuple:
    """The before statement's answer: one table (relid 16384) with ``count`` rows written so far."""
    return (*_OWN_RUN_ANSWER, m.DataRow((f"16384={count}".encode(),)), m.CommandComplete("SELECT 1"))


def test_a_counted_simple_query_runs_between_pgwarden_statements_and_its_results_wait():
    t = Talk(_counted)
    t.client(m.Query("update t set n = 1 returning n"), m.Query("select 2"))
    sent = t.upstream()
    assert [type(x) for x in sent] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Flush,
                                       m.Parse, m.Bind, m.Describe, m.Execute]
    assert sent[2].sql.startswith("SELECT CASE WHEN") and sent[2].name.startswith("pgwarden_")
    assert sent[6] == m.Parse("", "update t set n = 1 returning n")
    # The statement runs; the relay waits for the count before sending anything more.
    t.server(*_before_answer(7), m.ParseComplete(), m.BindComplete(), SHAPE, m.DataRow((b"1",)))
    assert t.down() == []
    check = t.upstream()
    assert [type(x) for x in check] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Sync, m.Query]
    assert "'{16384}'::pg_catalog.oid[]" in check[2].sql and "'{7}'::pg_catalog.int8[]" in check[2].sql
    assert "OPERATOR(pg_catalog.>) 5 THEN" in check[2].sql
    assert check[-1] == m.Query("select 2")
    t.server(m.NoticeResponse.build("NOTICE", "00000", "from a trigger"), m.CommandComplete("UPDATE 1"))
    assert t.down() == []  # held until the check answers
    t.server(*_OWN_RUN_ANSWER, m.CommandComplete("DO"), m.ReadyForQuery("I"))
    assert [type(x) for x in t.down()] == [m.RowDescription, m.DataRow, m.NoticeResponse,
                                           m.CommandComplete, m.ReadyForQuery]
    assert [e.kind for e in t.relay._expect] == [0]  # only "select 2" is still to answer


def test_a_failed_check_drops_what_the_statement_sent():
    t = Talk(_counted)
    t.client(m.Query("update t set n = 1 returning n"))
    t.upstream()
    t.server(*_before_answer(0), m.ParseComplete(), m.BindComplete(), SHAPE, m.DataRow((b"1",)),
             m.CommandComplete("UPDATE 9"), *_OWN_RUN_ANSWER,
             m.ErrorResponse((("S", "ERROR"), ("C", "42501"), ("M", "pgwarden: blocked: wrote 9"),
                              ("W", "PL/pgSQL function inline_code_block line 1 at RAISE"))),
             m.ReadyForQuery("I"))
    assert t.down() == [m.ErrorResponse((("S", "ERROR"), ("C", "42501"), ("M", "pgwarden: blocked: wrote 9"))),
                        m.ReadyForQuery("I")]


def test_a_notification_is_not_held_with_the_results():
    t = Talk(_counted)
    t.client(m.Query("update t set n = 1"))
    t.upstream()
    t.server(*_before_answer(0), m.ParseComplete(), m.BindComplete(), m.NoData(),
             m.NotificationResponse(42, "ch", "hi"), m.ParameterStatus("TimeZone", "UTC"))
    assert t.down() == [m.NotificationResponse(42, "ch", "hi"), m.ParameterStatus("TimeZone", "UTC")]


def test_the_statements_own_error_comes_after_what_it_sent():
    t = Talk(_counted)
    t.client(m.Query("update t set n = 1"))
    t.upstream()
    notice = m.NoticeResponse.build("NOTICE", "00000", "before the error")
    error = m.ErrorResponse.build("ERROR", "23505", "duplicate key")
    t.server(*_before_answer(0), m.ParseComplete(), m.BindComplete(), m.NoData(), notice, error)
    assert t.down() == [notice, error]
    t.upstream()  # (the check, skipped by the server)
    t.server(m.ReadyForQuery("I"))
    assert t.down() == [m.ReadyForQuery("I")] and not t.relay._expect


def test_when_pgwarden_cannot_count_in_an_aborted_transaction_the_client_gets_the_servers_error():
    t = Talk(_counted)
    t.relay.state.transaction_status = "E"
    t.client(m.Query("update t set n = 1"), m.Query("rollback"))
    t.upstream()
    aborted = m.ErrorResponse.build("ERROR", "25P02", "current transaction is aborted")
    t.server(m.CloseComplete(), m.CloseComplete(), aborted)
    assert t.down() == [aborted]
    assert [type(x) for x in t.upstream()] == [m.Sync, m.Query]  # ends the skipping; then the rest
    t.server(m.ReadyForQuery("E"), m.CommandComplete("ROLLBACK"), m.ReadyForQuery("I"))
    assert t.down() == [m.ReadyForQuery("E"), m.CommandComplete("ROLLBACK"), m.ReadyForQuery("I")]


def test_an_extended_counted_execute_is_checked_before_the_clients_sync():
    t = Talk(_counted)
    t.client(m.Parse("s", "update t set n = $1"), m.Bind("", "s"), m.Execute(""), m.Sync())
    # The server plans the statement at its Bind, and planning runs functions (red teams eight and
    # nine: one declared IMMUTABLE that writes): the Bind is counted and checked on its own first.
    assert [type(x) for x in t.upstream()] == [m.Parse, m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Flush,
                                               m.Bind]
    t.server(m.ParseComplete(), *_before_answer(3), m.BindComplete())
    assert t.down() == [m.ParseComplete()]  # the Bind's answer held until its check passes
    assert [type(x) for x in t.upstream()] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute,  # the Bind's check
                                               m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Flush,  # before
                                               m.Describe, m.Execute]
    t.server(*_OWN_RUN_ANSWER, m.CommandComplete("DO"))
    assert t.down() == [m.BindComplete()]
    t.server(*_before_answer(3), m.NoData(), m.CommandComplete("UPDATE 2"))
    assert t.down() == []
    assert [type(x) for x in t.upstream()] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Sync]
    t.server(*_OWN_RUN_ANSWER, m.CommandComplete("DO"), m.ReadyForQuery("I"))
    assert t.down() == [m.CommandComplete("UPDATE 2"), m.ReadyForQuery("I")]
    assert t.relay.idle


@pytest.mark.parametrize("after", [[m.Sync()], [m.Close("P", ""), m.Sync()], [m.Bind("", "s"), m.Sync()]],
                         ids=["sync", "close", "bound-again"])
def test_a_counted_bind_is_checked_whether_or_not_an_execute_follows(after):
    """Bound and never executed: planning at the Bind may have written, so its check comes before
    anything else goes up (red team nine: Parse + Bind + Sync wrote 5 rows unchecked)."""
    t = Talk(_counted)
    t.client(m.Parse("s", "update t set n = $1"), m.Bind("", "s"), *after)
    up = t.upstream()
    assert [type(x) for x in up] == [m.Parse, m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Flush, m.Bind]
    t.server(m.ParseComplete(), *_before_answer(3), m.BindComplete())
    check = t.upstream()[:5]
    assert [type(x) for x in check] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute]
    assert "'{3}'::pg_catalog.int8[]" in check[2].sql  # the count before the Bind
    refused = m.ErrorResponse.build("ERROR", "42501", "pgwarden: blocked: the statement wrote 5 rows, more than "
                                                     "the 2 allowed")
    t.server(*_OWN_RUN_ANSWER, refused)  # (the check's DO raises)
    assert t.down() == [m.ParseComplete(), refused]  # its BindComplete dropped with the refusal


def test_results_too_large_to_hold_flow_and_the_check_still_decides():
    t = Talk(_counted)
    t.relay._max_held = 100
    t.client(m.Query("update t set n = 1 returning n"))
    t.upstream()
    rows = [m.DataRow((str(i).encode() * 20,)) for i in range(10)]
    t.server(*_before_answer(0), m.ParseComplete(), m.BindComplete(), SHAPE, *rows[:2])
    assert t.down() == []  # held, while they fit
    t.server(*rows[2:5])
    assert t.down() == [SHAPE, *rows[:5]]  # beyond the bound: they flow
    t.server(*rows[5:], m.CommandComplete("UPDATE 10"))
    assert t.down() == [*rows[5:], m.CommandComplete("UPDATE 10")]
    t.upstream()
    error = m.ErrorResponse.build("ERROR", "42501", "pgwarden: blocked: wrote 10")
    t.server(*_OWN_RUN_ANSWER, error, m.ReadyForQuery("I"))
    assert t.down() == [error, m.ReadyForQuery("I")]  # rolled back all the same
    assert not t.relay.closing


def test_a_bind_after_the_policies_changed_waits_for_its_new_verdict():
    verdicts = {}
    t = Talk(lambda req: verdicts.get(req.sql, ALLOW))
    t.client(m.Parse("s", "insert into t values (1)"), m.Sync())
    t.upstream()
    t.server(m.ParseComplete(), m.ReadyForQuery("I"))
    t.down()
    t.relay.policy_generation += 1
    verdicts["insert into t values (1)"] = PENDING
    t.client(m.Bind("", "s"), m.Execute(""), m.Sync())
    assert t.upstream() == [] and t.relay.waiting.sql == "insert into t values (1)"
    t.relay.resolve(t.relay.waiting, Refusal("42501", "pgwarden: blocked: no"))
    sent = t.upstream()
    assert [type(x) for x in sent] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Sync]
    assert "pgwarden: blocked: no" in sent[2].sql and sent[2].name != ""  # the unnamed one is the client's
    # Decided again at its next Bind too, until a verdict lets it run.
    verdicts["insert into t values (1)"] = ALLOW
    t.client(m.Bind("", "s"), m.Execute(""), m.Sync())
    assert [type(x) for x in t.upstream()] == [m.Bind, m.Describe, m.Execute, m.Sync]
    assert len(t.requests) == 3
    t.client(m.Bind("", "s"), m.Execute(""), m.Sync())
    assert len(t.requests) == 3  # decided under the current policies now


def test_a_bind_of_a_statement_never_parsed_here_is_refused_in_place():
    t = Talk()
    t.client(m.Query("prepare b as insert into t values (1)"))
    t.upstream()
    t.client(m.Bind("", "b"), m.Execute(""), m.Sync(), m.Query("select 1"))
    sent = t.upstream()
    assert [type(x) for x in sent] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Sync, m.Query]
    assert 'prepared statement "b" was not prepared through the protocol' in sent[2].sql


# What the server sends before pgwarden's check (the count, the statement's results), then after it.
_COUNTED_SERVER = (
    b"".join(x.encode() for x in (
        *_before_answer(4), m.ParseComplete(), m.BindComplete(), SHAPE, m.DataRow((b"1",)),
        m.DataRow((b"2",)), m.NotificationResponse(1, "ch", ""), m.CommandComplete("UPDATE 2"))),
    b"".join(x.encode() for x in (
        *_OWN_RUN_ANSWER, m.CommandComplete("DO"), m.ReadyForQuery("I"),
        m.RowDescription((COL,)), m.DataRow((b"3",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))),
)


@settings(max_examples=examples(200))
@given(st.lists(st.integers(0, 10_000), max_size=30), st.lists(st.integers(0, 10_000), max_size=30))
def test_property_a_counted_write_relays_the_same_whatever_the_split(cuts, more_cuts):
    t = Talk(_counted)
    t.client(m.Query("update t set n = n returning n"), m.Query("select 3"))
    up, down = b"".join(t.relay.pop_upstream()), []
    for phase, points in zip(_COUNTED_SERVER, (cuts, more_cuts)):
        for part in _cut(phase, points):
            t.relay.server_data(part)
            down += t.relay.pop_client()
            up += b"".join(t.relay.pop_upstream())
    got = _split(b"".join(down), m.decode_backend)
    assert got == [m.NotificationResponse(1, "ch", ""), SHAPE, m.DataRow((b"1",)), m.DataRow((b"2",)),
                   m.CommandComplete("UPDATE 2"), m.ReadyForQuery("I"),
                   m.RowDescription((COL,)), m.DataRow((b"3",)), m.CommandComplete("SELECT 1"),
                   m.ReadyForQuery("I")]
    sent = _split(up, m.decode_frontend)
    assert [type(x) for x in sent][-7:] == [m.Close, m.Close, m.Parse, m.Bind, m.Execute, m.Sync, m.Query]
    assert not t.relay._expect


@settings(max_examples=examples(200))
@given(ops=st.lists(st.one_of(st.integers(0, 9), st.just("pop"), st.just("pop many")), max_size=300))
def test_expectations_queue_as_a_deque_does_property(ops):
    # The relay's queue of owed answers (`Expectations`, a list and a head index) against a deque:
    # the same order, head, length and errors, whatever mix of appends and pops.
    import gc
    from collections import deque

    import pytest

    from pgwarden.relay.engine import Expectation, Expectations

    queue, model = Expectations(), deque()
    for op in ops:
        if op == "pop" or op == "pop many":
            for _ in range(1 if op == "pop" else 70):
                if model:
                    assert queue.popleft() is model.popleft()
                else:
                    with pytest.raises(IndexError):
                        queue.popleft()
        else:
            e = Expectation(op)
            queue.append(e)
            model.append(e)
        assert len(queue) == len(model) and bool(queue) == bool(model)
        assert queue.first() is (model[0] if model else None)
        assert len(queue._items) <= 2 * len(model) + 64  # what was answered does not pile up
        assert list(queue) == list(model)
        assert [queue[i] for i in range(len(model))] == list(model)
        with pytest.raises(IndexError):
            queue[len(model)]
    # an answered expectation is not kept alive by the queue (its execution may hold a result)
    answered = Expectation(1)
    queue.append(answered)
    queue.append(Expectation(2))
    while queue.first() is not answered:
        queue.popleft()
    queue.popleft()
    assert all(e is not answered for e in gc.get_referents(queue._items))


def test_expectations_answered_in_a_long_pipeline_do_not_pile_up():
    from pgwarden.relay.engine import Expectation, Expectations

    queue = Expectations()
    owed = [Expectation(i % 10) for i in range(3000)]
    answered = 0
    for i, e in enumerate(owed):  # a long pipeline: answers come while more is sent, never all of them
        queue.append(e)
        if i % 3:
            assert queue.popleft() is owed[answered]
            answered += 1
    assert len(queue) == 1000 and queue.first() is owed[2000]
    assert len(queue._items) <= 2 * len(queue) + 64


def test_a_suspended_portals_execution_counts_the_rows_its_execute_asked_for():
    # The Execute's row limit, a signed int32 read from its last four bytes (a negative one: 0).
    for limit, rows in ((2, 2), (2**31 - 1, 2**31 - 1), (-5, 0)):
        done = []
        relay = Relay(lambda req: ALLOW, on_complete=done.append)
        relay.client_data(b"".join(x.encode() for x in (
            m.Parse("s", "select n from t"), m.Bind("p", "s", (), (), ()), m.Describe("P", "p"),
            m.Execute("p", limit), m.Sync())))
        relay.pop_upstream()
        relay.server_data(b"".join(x.encode() for x in (
            m.ParseComplete(), m.BindComplete(), SHAPE, m.DataRow((b"1",)), m.DataRow((b"2",)),
            m.PortalSuspended(), m.ReadyForQuery("T"))))
        executes = [ex for ex in done if ex.protocol == "extended" and ex.bind is not None]
        assert [ex.rows for ex in executes] == [rows], (limit, done)


def test_a_relay_calls_its_deciders_object_natively_only_when_told_it_is_that_objects_method():
    from pgwarden.relay.engine import DecisionSource

    class Source(DecisionSource):
        def __init__(self) -> None:
            self.seen = []

        def decide(self, request):
            self.seen.append(request.sql)
            return ALLOW

    source, other = Source(), Source()
    relay = Relay(source.decide)
    assert not relay.decide_natively(other)  # another object's method is not this relay's decider
    assert relay.decide_natively(source)
    relay.client_data(m.Query("select 1").encode())
    assert source.seen == ["select 1"] and other.seen == []
    assert relay.pop_upstream() == [m.Query("select 1").encode()]


def test_a_copy_no_decision_foresaw_leaves_the_answers_in_step():
    """The decider did not say the statement copies (it was not analysed): the server's
    CopyInResponse says so, and a Sync the client sent during the copy owes nothing (it had owed
    a ReadyForQuery, and the next result's RowDescription was taken for another answer)."""
    t = Talk()
    t.client(m.Query("copy t from stdin"))
    t.server(m.CopyInResponse(0, (0,)))
    t.client(m.CopyData(b"1\n"), m.Sync(), m.CopyDone())
    t.server(m.CommandComplete("COPY 1"), m.ReadyForQuery("I"))
    t.down()
    t.client(m.Query("select 1"))
    t.upstream()
    t.server(SHAPE, m.DataRow((b"1",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    assert [type(x) for x in t.down()] == [m.RowDescription, m.DataRow, m.CommandComplete, m.ReadyForQuery]
    assert t.relay.idle


def test_an_error_that_answers_nothing_expected_ends_the_session():
    t = Talk()
    t.client(m.Query("select 1"))
    t.server(SHAPE, m.DataRow((b"1",)), m.CommandComplete("SELECT 1"), m.ReadyForQuery("I"))
    t.down()
    t.server(m.ErrorResponse((("S", "ERROR"), ("V", "ERROR"), ("C", "08P01"), ("M", "invalid message format"))))
    assert t.relay.closing and "cannot match" in t.relay.closing


def test_a_report_that_the_session_was_renamed_ends_it():
    """pgwarden names the upstream session after the agent (application_name); the analysis refuses
    every change it sees, and a report of one it could not see (SQL built at run time) ends the
    session: the server's logs would blame another agent."""
    from pgwarden.relay.engine import SessionState

    relay = Relay(lambda req: ALLOW, state=SessionState(parameters={"application_name": "pgwarden:agent-1"}))
    relay.client_data(m.Query("select f()").encode())
    relay.pop_upstream()
    relay.server_data(m.ParameterStatus("application_name", "pgwarden:agent-1").encode())  # (the same: goes on)
    assert not relay.closing
    relay.server_data(m.ParameterStatus("application_name", "pgwarden:agent-2").encode())
    assert relay.closing and "application_name changed" in relay.closing
    assert m.ParameterStatus("application_name", "pgwarden:agent-2").encode() not in b"".join(relay.pop_client())
