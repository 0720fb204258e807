"""`pgwarden.results.SessionMasks._lineage`: which catalog changes not read yet make a result's
lineage unknown (its outputs masked whole), and which leave it as the statement was decided."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pgwarden.results import SessionMasks
from pgwarden.sql.lineage import Lineage

TRACED = Lineage(outputs=(), reads=frozenset())


def _masks(*, unread: bool = False, redefining: bool = False, sessions_redefining: bool = False) -> SessionMasks:
    conn = SimpleNamespace(session=object(), catalog_unread=unread, relay=None)
    catalog = SimpleNamespace(redefining=redefining or sessions_redefining, sessions_redefining=sessions_redefining)
    return SessionMasks(None, None, catalog, None, conn)  # type: ignore[arg-type]


STATEMENT = SimpleNamespace(lineage=(TRACED,))


@pytest.mark.parametrize("flags, unknown", [
    ({}, False),
    # another client's change the change check saw, not read yet: the statement's own lineage (the
    # check's bound; a named statement run after it was decided again and waited for the load)
    ({"redefining": True}, False),
    # a change through pgwarden by another session, or this session's own, not read yet: unknown
    ({"sessions_redefining": True}, True),
    ({"unread": True}, True),
])
def test_a_change_not_read_makes_the_lineage_unknown_unless_the_check_saw_it(flags, unknown):
    lineage = _masks(**flags)._lineage(STATEMENT, 0)  # type: ignore[arg-type]
    assert (lineage is None) is unknown
    if not unknown:
        assert lineage is TRACED


def test_without_a_statement_or_past_its_statements_the_lineage_is_unknown():
    masks = _masks()
    assert masks._lineage(None, 0) is None
    assert masks._lineage(STATEMENT, 1) is None  # type: ignore[arg-type]


def test_a_change_the_check_saw_has_every_masking_session_decide_its_binds_again():
    """`Application._decide_binds_again` (a `LiveCatalog.on_change_seen` listener): the relays of
    sessions that mask (an ``on_shape``) count a new generation, so each named statement is decided
    again at its next Bind (and waits for the load); others (shadow rules alone too: they mask
    nothing), and sessions not relaying yet, not. A masking session also forgets its portals and
    its SQL cursors' lineage (red team fifteen), and one in an open transaction is behind the
    catalog until it ends."""
    from pgwarden.app import Application

    def conn(masks: object, status: str = "I") -> SimpleNamespace:
        state = SimpleNamespace(portals={"P": object()}, transaction_status=status)
        return SimpleNamespace(relay=SimpleNamespace(policy_generation=3, state=state), masks=masks,
                               catalog_behind=False)

    forgot: list[int] = []

    def masker() -> SimpleNamespace:
        return SimpleNamespace(masking=lambda: True, redefined=lambda: forgot.append(1))  # (it forgets the portals)

    masking, in_transaction = conn(masker()), conn(masker(), "T")
    shadow_only = conn(SimpleNamespace(masking=lambda: False))  # shadow rules count, nothing masked
    plain = conn(None)
    logging_in = SimpleNamespace(relay=None, masks=None)
    app = SimpleNamespace(connections=[masking, in_transaction, shadow_only, plain, logging_in])
    Application._decide_binds_again(app)  # type: ignore[arg-type]
    assert [c.relay.policy_generation for c in (masking, in_transaction, shadow_only, plain)] == [4, 4, 3, 3]
    assert forgot == [1, 1]
    assert [c.catalog_behind for c in (masking, in_transaction, shadow_only, plain)] == [False, True, False, False]
