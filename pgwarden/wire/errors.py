"""Errors of the protocol codec.

Two kinds, as h11 does: the peer sent something the protocol forbids
(`ProtocolError`, answered with SQLSTATE 08P01 and a close) and pgwarden asked
the codec to encode something impossible (`LocalProtocolError`, a bug of ours).
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke the protocol; the connection cannot continue."""

    sqlstate = "08P01"


class MessageTooLarge(ProtocolError):
    """A length prefix claims more than the configured maximum."""


class LocalProtocolError(Exception):
    """pgwarden tried to encode something the protocol cannot carry."""
