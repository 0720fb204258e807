"""The key of a fingerprint-only grant: one fingerprint, and the same analysis (docs/approvals.md).

Each pair of statements below has one libpg_query fingerprint (checked, so a pglast that read
them apart would make the pair pointless rather than the test pass for nothing).
"""

from __future__ import annotations

import attrs
import pytest
from pglast.parser import fingerprint

from pgwarden.sql.statement import Statement
from pgwarden_plugins.approve.grant_key import grant_key
from pgwarden_plugins.approve.memory import MemoryStore
from pgwarden_plugins.approve.store import StoredRequest, covers, from_json, to_json


def key(sql: str) -> str | None:
    statement = Statement(sql)
    return grant_key(statement.fingerprint, statement.analysis)


DOES_ANOTHER_THING = [
    ("delete from t where id in (select id from t limit 5)", "delete from t where id in (select id from t limit all)"),
    ("delete from t where id in (select id from t limit 5)", "delete from t where id in (select id from t limit null)"),
    ("delete from t where id + 5 = id + 6", "delete from t where id + 0 = id + 0"),
    ("delete from t where false", "delete from t where true"),
    ("update t set a = 1 where id = 1 or false", "update t set a = 1 where id = 1 or true"),
    ("set search_path = app", "set search_path = evil, app"),
    ("set role = 'reader'", "set role = 'admin'"),
    ("select set_config('application_name', 'x', false)", "select set_config('search_path', 'x', false)"),
    ("select query_to_xml('select 1', true, true, '')", "select query_to_xml('delete from t', true, true, '')"),
    ("execute a", "execute b"),
    ("prepare p as delete from t where id in (select id from t limit 1)",
     "prepare p as delete from t where id in (select id from t limit all)"),
]

OTHER_CONSTANTS = [
    ("delete from orders where id = 42", "delete from orders where id = 43"),
    ("delete from t where id in (select id from t limit 1)", "delete from t where id in (select id from t limit 2)"),
    ("update t set note = 'a' where id = 1", "update t set note = 'b' where id = 2"),
    ("insert into t values (1, 'x')", "insert into t values (2, 'y')"),
]


@pytest.mark.parametrize(("approved", "other"), DOES_ANOTHER_THING)
def test_one_fingerprint_that_does_another_thing_has_another_key(approved, other):
    assert fingerprint(approved) == fingerprint(other)
    assert key(approved) is not None and key(approved) != key(other)


@pytest.mark.parametrize(("approved", "other"), OTHER_CONSTANTS)
def test_other_constants_that_do_the_same_share_the_key(approved, other):
    assert key(approved) is not None and key(approved) == key(other)


def test_no_fingerprint_no_fingerprint_only_grant():
    """A text without a fingerprint has a key (its exact grants are bound to it), but no
    fingerprint-only grant covers it."""
    unparsable = key("delete from")
    assert unparsable is not None and unparsable.startswith("-:")
    request = _approved(sql="delete from", fingerprint=None, grant_key=unparsable)
    assert not covers(request, "agent-1", unparsable, "other", 1.0)
    assert covers(attrs.evolve(request, grant_by_fingerprint_only=False), "agent-1", unparsable, "h", 1.0)


def _key_in(sql: str, **context: object) -> str:
    from pgwarden.sql.context import default_context
    from pgwarden_plugins.approve.grant_key import bound

    statement = Statement(sql, context=attrs.evolve(default_context(), **context))
    return grant_key(statement.fingerprint, statement.analysis, bound(statement.context))


def test_the_key_binds_the_search_path():
    """The same text under another search_path may name other tables (red team seven)."""
    here = _key_in("delete from things where id = 1")
    assert here == _key_in("delete from things where id = 1")
    assert here != _key_in("delete from things where id = 1", search_path=("archive", "public"))
    assert here != _key_in("delete from things where id = 1", search_path=None)


def test_an_exact_grant_covers_the_text_only_where_it_means_the_same():
    sql = "delete from things where id = 1"
    request = _approved(sql=sql, fingerprint=fingerprint(sql), grant_by_fingerprint_only=False,
                        grant_key=_key_in(sql))
    assert covers(request, "agent-1", _key_in(sql), "h", 1.0)
    assert not covers(request, "agent-1", _key_in(sql, search_path=("archive", "public")), "h", 1.0)
    assert not covers(request, "agent-1", _key_in(sql), "other parameters", 1.0)


def _approved(**kw: object) -> StoredRequest:
    sql = "delete from t where id in (select id from t limit 1)"
    values: dict[str, object] = {
        "id": "r1", "subject": "agent-1", "groups": (), "session": "s", "sql": sql, "fingerprint": fingerprint(sql),
        "params_hash": "h", "created": 0.0, "expires": 100.0, "mode": "retry", "state": "approved",
        "grant_until": 600.0, "grant_by_fingerprint_only": True, "grant_key": key(sql), **kw}
    return StoredRequest(**values)  # type: ignore[arg-type]


def test_covers_matches_the_key_not_the_bare_fingerprint():
    request = _approved()
    bounded, unbounded = (key("delete from t where id in (select id from t limit 2)"),
                          key("delete from t where id in (select id from t limit all)"))
    assert covers(request, "agent-1", bounded, "other", 1.0)
    assert not covers(request, "agent-1", unbounded, "other", 1.0)
    assert not covers(request, "agent-1", request.fingerprint, "other", 1.0)  # the bare fingerprint
    assert not covers(request, "agent-1", None, "other", 1.0)


def test_a_request_stored_without_a_key_grants_nothing_by_fingerprint():
    # As an older pgwarden stored it in the postgres store: no grant_key in the JSON.
    old = to_json(_approved())
    del old["grant_key"]
    request = from_json(old)
    assert request.grant_key is None
    assert not covers(request, "agent-1", key(request.sql), "other", 1.0)
    assert covers(attrs.evolve(request, grant_by_fingerprint_only=False), "agent-1", None, "h", 1.0)  # exact: as before


def test_the_memory_store_takes_a_fingerprint_only_grant_by_its_key():
    """The postgres store's twin: tests/e2e/test_approval_store_postgres.py."""
    store = MemoryStore()
    request = _approved()
    store.submit(request)
    taken: list[StoredRequest | None] = []
    for asked in (key("delete from t where id in (select id from t limit 2)"),
                  key("delete from t where id in (select id from t limit all)"), request.fingerprint):
        store.take_grant("agent-1", asked, "other", 1.0).addCallback(taken.append)
    assert [t.id if t else None for t in taken] == ["r1", None, None]
