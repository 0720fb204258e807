"""Who a connection is: the authentication plugins asked, and nothing but an Identity let in.

What the client's login is given as its `Authenticator` (see `pgwarden.proxy.client`): the
plugin host's answer, checked to be an `Identity`. A plugin that raises, or answers with
anything else, refuses the connection; it never admits it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from pgwarden.identity import AuthenticationFailed, Identity

if TYPE_CHECKING:
    from pgwarden.plugins import PluginHost
    from pgwarden.wire import messages as m

# The namespace these lines had before the module was split out of app.py: operators filter on it.
log = Logger(namespace="pgwarden.app")


def _an_identity(identity: object) -> Identity:
    if not isinstance(identity, Identity):
        raise AuthenticationFailed("no plugin accepted the credential")
    return identity


class Authentication:
    """The plugins' `pgwarden_authenticate`, failing closed."""

    def __init__(self, plugins: PluginHost) -> None:
        self.plugins = plugins

    def authenticate(self, startup: m.StartupMessage, token: str) -> Identity | Deferred[Identity]:
        """The identity behind ``token``; AuthenticationFailed when no plugin vouches for it."""
        try:
            identity = self.plugins.authenticate(startup, token)
        except AuthenticationFailed:
            raise
        except Exception as e:  # a broken plugin refuses, never admits
            log.failure("authentication plugin failed")
            raise AuthenticationFailed(f"authentication plugin failed: {e!r}") from None
        if isinstance(identity, Deferred):
            return identity.addCallback(_an_identity)
        return _an_identity(identity)
