"""The hooks a pgwarden plugin may implement: a stable, versioned API.

Every hook is named ``pgwarden_*`` so a grep finds every implementation.
Decision hooks (``pgwarden_check``) are called on every plugin and reduced by
the core, strictest verdict first; ``firstresult`` hooks stop at the first
answer that is not None. A hook that may have to wait returns a Deferred and
the core waits for it; pluggy itself is synchronous.

A plugin that raises in a decision hook, or whose Deferred fails or does not
fire within ``plugins.timeout_s``, makes the statement blocked with a reason
naming the plugin: never allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pgwarden.config import Config
    from pgwarden.identity import Identity
    from pgwarden.session import Session
    from pgwarden.sql import Statement
    from pgwarden.verdict import Verdict
    from pgwarden.wire.messages import RowDescription, StartupMessage

hookspec = pluggy.HookspecMarker("pgwarden")
hookimpl = pluggy.HookimplMarker("pgwarden")


@hookspec
def pgwarden_options() -> type | None:
    """The attrs class of this plugin's options, or None when it takes none.

    pgwarden structures ``plugins.<name>`` of the config file into it with the
    same converter as the rest of the config (unknown keys are errors) and hands
    the instance to `pgwarden_configure`. Validate the values here, with attrs
    validators: `pgwarden check` and every reload run them, and a ValueError
    whose message starts with ``<field>: `` is reported at that key's line.

    :return: an attrs class whose fields all have defaults, or None.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_rule_kinds() -> list[str] | None:
    """The rule kinds of the policy file this plugin interprets (``block``, ``mask``, ...).

    A rule whose kind no loaded plugin claims is a configuration error, so
    disabling a plugin never silently disables its rules.

    :return: a list of rule-kind names.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_configure(config: Config, options: Any, reactor: Any) -> None:
    """Called at start-up and at each reload, before any session uses the new config.

    Called once per plugin with that plugin's own options.

    :param config: the whole validated configuration.
    :param options: this plugin's options (an instance of its `pgwarden_options`
        class), or None when it declares none.
    :param reactor: the reactor pgwarden runs on, for plugins that need time or
        the network (never import the global one).

    Raise (a `pgwarden.config.ConfigError` naming the key reads best) if the config
    cannot be applied: pgwarden then does not start, or refuses the reload and
    configures every plugin again with the running config. `pgwarden check` does
    not call this hook (applying may open files or connections): a value that
    can be judged without applying it belongs in the options class.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def pgwarden_authenticate(startup: StartupMessage, secret: str) -> Identity | None:
    """Turns what a client presented as its password into an identity.

    Stops at the first non-None result. Raise
    `pgwarden.identity.AuthenticationFailed` to refuse outright; the client only
    ever sees ``pgwarden: authentication failed``.

    :param startup: the client's StartupMessage (user, database, parameters).
    :param secret: the password the client sent (normally a JWT).
    :return: the verified `Identity`, a Deferred of one (keys fetched from the
        issuer, say), or None to let the next plugin try.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_session_start(session: Session) -> None:
    """A session has been authenticated and logged in upstream.

    :param session: the new session; its ``store`` is empty.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_check(statement: Statement, session: Session) -> Verdict | None:
    """Decides about one statement before any byte of it reaches the database.

    Called on every plugin; the core keeps the strictest answer (block >
    approve > allow). A plugin may return a Deferred that fires with a Verdict.

    :param statement: the analysed SQL string (shared by all plugins, read-only).
    :param session: the session it comes from.
    :return: a `Verdict`, a Deferred of one, or None for no opinion.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def pgwarden_await_approval(request: Any, session: Session) -> Any:
    """Holds a statement whose verdict is ``approve`` until a human decides.

    Stops at the first non-None result. Without any implementation, statements
    that need approval are refused (fail closed).

    :param request: the approval request: statement, verdict, session.
    :param session: the session waiting.
    :return: a Deferred that fires with ``Verdict.allow()`` or a block verdict.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_approval_requested(request: Any) -> None:
    """An approval is now pending: notify people (webhook, chat).

    :param request: the approval request.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_result_masks(shape: RowDescription, statement: Statement | None, session: Session) -> dict | None:
    """Per-column maskers for one result shape, asked once per result.

    :param shape: the RowDescription of the result (table OID, attribute number,
        type OID and format of each column).
    :param statement: the statement that produced it, when known.
    :param session: the session.
    :return: a mapping of column index to a callable ``(value: bytes | None, column)
        -> bytes | None``, or None when nothing needs masking.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_record(record: dict) -> None:
    """A structured record (statement, approval, session start/end, ...) to write.

    :param record: the record, a JSON-ready mapping.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_records_flush() -> list[str] | None:
    """Make every record received through `pgwarden_record` so far reach the operating system.

    The core calls it once per reactor turn, before that turn's bytes go
    upstream, so a sink may buffer records and write them with one call; when
    the records of a turn carry no verdict (``result``, ``session_start``,
    ``session_end``), up to ``recording.results_delay_ms`` (10 ms by default) or 64
    records later (docs/records.md). Raise
    when records could not be written and statements must stop (fail closed):
    the sessions whose statements were waiting on this flush are ended before
    those statements reach the database, and later statements are refused
    until a flush succeeds.

    :return: problems of sinks that fail open (reported on /readyz and in the
        log, not fatal), or None.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_stop() -> None:
    """pgwarden is stopping: flush and close what the plugin holds open.

    Called once, after the last session ended and its records were passed on.

    .. versionadded:: 0.1
    """


@hookspec
def pgwarden_session_end(session: Session, summary: dict) -> None:
    """A session has ended, for whatever reason.

    :param session: the session that ended.
    :param summary: totals (statements, refusals, duration).

    .. versionadded:: 0.1
    """
