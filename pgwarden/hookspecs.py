"""The hooks a pgwarden plugin may implement: the plugin contract, version 1.

Every hook is named ``pgwarden_*`` so a grep finds every implementation; every
type a hook receives or returns is exported by `pgwarden.api`. Decision hooks
(``pgwarden_check``) are called on every plugin (until one blocks) and reduced by the core,
strictest verdict first; ``firstresult`` hooks stop at the first answer that is
not None. Hooks are called through pluggy (tracing, ``wrapper=True``
implementations), and pluggy is synchronous: a hook that may have to wait
returns a Deferred, or is an ``async def`` (its coroutine runs as a Deferred),
and the core waits for it.

A plugin that raises in a decision hook, or whose Deferred fails or does not
fire within ``plugins.timeout_s``, makes the statement blocked with a reason
naming the plugin: never allowed.

A hook or argument that is to go is first marked here with pluggy's
``warn_on_impl`` / ``warn_on_impl_args`` and a `PgwardenDeprecationWarning`, for
at least one minor version: implementations get the warning when they are
loaded (logged, and shown by ``pgwarden plugins``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from twisted.web.resource import Resource

    from pgwarden.api import (
        ApprovalAnswer,
        ApprovalRequest,
        ColumnMask,
        ConfigProblem,
        ConfigSection,
        Detector,
        Identity,
        Later,
        Masker,
        MessageMask,
        Reactor,
        Record,
        ResultShape,
        RowDescription,
        RuleKind,
        Sections,
        Session,
        SessionSummary,
        StartupMessage,
        Statement,
        StoredApproval,
        Verdict,
    )

hookspec = pluggy.HookspecMarker("pgwarden")
hookimpl = pluggy.HookimplMarker("pgwarden")


class PgwardenDeprecationWarning(DeprecationWarning):
    """A plugin uses a hook or an argument that a later version of the contract removes."""


# ---------------------------------------------------------------------------- declarations


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
def pgwarden_config_sections() -> Sequence[ConfigSection[object]] | None:
    """The parts of pgwarden's own configuration this plugin needs besides its options.

    Each is handed to `pgwarden_validate` and `pgwarden_configure` in ``sections``;
    nothing else of the file is. A path that is not in the configuration, or holds
    another class, refuses the plugin at load.

    :return: `ConfigSection` keys, such as ``ConfigSection("upstream", Upstream)``, or None.

    .. versionadded:: 1.0
    """


@hookspec
def pgwarden_rule_kinds() -> Sequence[RuleKind[object]] | None:
    """The rule kinds of the policy file this plugin interprets, each with its options class.

    Its own (``RuleKind("hours", HoursRule)``), or built-in ones it takes on
    (`pgwarden.api.MASK`, `pgwarden.api.APPROVE`). pgwarden reads every rule of these
    kinds into their options class, with path and line for each problem; a rule
    whose kind no loaded plugin interprets is a configuration error, so disabling
    a plugin never silently disables its rules. Read a rule with ``KIND.of(rule)``.

    :return: `RuleKind` objects, or None.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       `RuleKind` objects with their options class, not names.
    """


# ---------------------------------------------------------------------------- configuration


@hookspec
def pgwarden_validate(options: object, sections: Sections) -> Sequence[ConfigProblem] | None:
    """What is wrong with the configuration this plugin would be given, without applying it.

    Called by `pgwarden check` and before `pgwarden run` serves, with every other
    problem of the file; not at reloads (`pgwarden_configure` refuses what it cannot
    apply). Look, do not act: no connections, no files opened for writing. A file
    the config names that is not there is best left alone (`check` also runs where
    the secrets are not mounted).

    :param options: this plugin's options (an instance of its `pgwarden_options`
        class), or None when it declares none.
    :param sections: the sections it declared with `pgwarden_config_sections`.
    :return: a `ConfigProblem` per problem (reported at its key's line), or None.

    .. versionadded:: 1.0
    """


@hookspec
def pgwarden_configure(options: object, sections: Sections, reactor: Reactor,
                       detectors: Mapping[str, Detector]) -> None:
    """Called at start-up and at each reload, before any session uses the new config.

    Called once per plugin with that plugin's own options and sections.

    :param options: this plugin's options (an instance of its `pgwarden_options`
        class), or None when it declares none.
    :param sections: the sections it declared with `pgwarden_config_sections`.
    :param reactor: the reactor pgwarden runs on, for plugins that need time or
        the network (never import the global one).
    :param detectors: the content detectors loaded plugins add (`pgwarden_mask_detectors`),
        by the name rules give them (``<plugin>.<name>``).

    Raise a `ConfigProblem` (or several, in an ``ExceptionGroup``) if the config
    cannot be applied: pgwarden then does not start, or refuses the reload and
    configures every plugin again with the running config. `pgwarden check` does
    not call this hook (applying may open files or connections): a value that
    can be judged without applying it belongs in the options class or in
    `pgwarden_validate`.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``config`` (the whole configuration) is gone: declare ``sections``.
    .. versionchanged:: 1.1
       ``detectors``.
    """


# ---------------------------------------------------------------------------- sessions


@hookspec(firstresult=True)
def pgwarden_authenticate(startup: StartupMessage, secret: str) -> Identity | Later[Identity | None] | None:
    """Turns what a client presented as its password into an identity.

    Stops at the first non-None result (an ``async def`` implementation always
    answers). Raise `pgwarden.api.AuthenticationFailed` to refuse outright; the client
    only ever sees ``pgwarden: authentication failed``.

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
def pgwarden_session_end(session: Session, summary: SessionSummary) -> None:
    """A session has ended, for whatever reason.

    :param session: the session that ended.
    :param summary: its totals (statements, refused, rows, bytes) and why it ended.

    .. versionadded:: 0.1
    .. versionchanged:: 1.0
       ``summary`` is a `SessionSummary`, not a dict.
    """


# ---------------------------------------------------------------------------- decisions


@hookspec
def pgwarden_check(statement: Statement, session: Session) -> Verdict | Later[Verdict | None] | None:
    """Decides about one statement before any byte of it reaches the database.

    Called on each plugin in pluggy's order until one blocks; the core keeps the
    strictest answer (block > approve > allow). Nothing overrules a block, so the
    plugins after it are not asked: a plugin whose check does work of its own (asks
    the server, opens an approval request) marks it ``trylast=True``. Each plugin
    is called through pluggy on its own, with the ``wrapper=True`` implementations
    of every plugin that only wraps this hook around it, so that a failure names
    the plugin that failed.

    :param statement: the analysed SQL string (shared by all plugins, read-only).
    :param session: the session it comes from.
    :return: a `Verdict`, a Deferred of one, or None for no opinion.

    .. versionadded:: 0.1
    .. versionchanged:: 1.4
       Plugins after one that blocks are not asked.
    """


@hookspec(firstresult=True)
def pgwarden_await_approval(request: ApprovalRequest, session: Session) -> Later[ApprovalAnswer] | None:
    """Keeps a request for approval and answers when people have decided (an approval store).

    Stops at the first non-None result. Without any implementation, statements
    that need approval are refused (fail closed). The core owns the rest: the
    request's id and expiry, the records of each state, the time limit
    (``approvals.timeout_s``), and the end of the wait — when the statement is
    cancelled, its session ends or the time is up, the core **cancels** the
    Deferred: give it a canceller that ends the request in the store. A Deferred
    that fails refuses the statement (the request ends ``withdrawn``).

    ``request.mode`` is ``hold``: answer once the request is decided (approved,
    denied, expired). ``retry``: answer at once — ``approved`` when an earlier
    approval's grant covers this statement (``request`` naming that approval), else
    keep the request and answer `ApprovalAnswer.required`.

    :param request: the approval request (statement, verdict, session, id, parameters,
        times, mode).
    :param session: the session waiting.
    :return: an `ApprovalAnswer`, a Deferred of one, or the coroutine of an ``async def``.

    .. versionadded:: 0.1
    .. versionchanged:: 1.1
       Answers an `ApprovalAnswer`; a `Verdict` (allow or block) still works, with a
       `PgwardenDeprecationWarning`. The Deferred is cancelled when the wait ends early.
    """


@hookspec
def pgwarden_approval_requested(request: ApprovalRequest) -> None:
    """An approval request now waits for people: notify them (webhook, chat).

    Called when a held statement starts waiting, or when a retry-mode request is
    made. A notifier that raises, or whose Deferred fails, is logged and counted
    (``pgwarden_notifier_failures``); it never holds, allows or refuses anything.

    :param request: the approval request.

    .. versionadded:: 0.1
    """


@hookspec(firstresult=True)
def pgwarden_approval_status(request_id: str) -> Later[ApprovalAnswer] | None:
    """Where one approval request stands, for a caller that waits on it elsewhere than on the
    wire (the MCP endpoint's ``approval_status``).

    Stops at the first non-None result. ``required`` while people have not decided;
    ``approved``, ``denied`` or ``expired`` once it ended (a withdrawn request is ``expired``,
    with why as its reason). A Deferred of None: the store has no such request. Nothing is
    decided or changed by this call.

    :param request_id: the request's id, as the agent was told it.
    :return: an `ApprovalAnswer`, a Deferred of one (or of None), or None (no store).

    .. versionadded:: 1.2
    """


@hookspec(firstresult=True)
def pgwarden_approval_request(request_id: str) -> Later[StoredApproval | None] | None:
    """One approval request as its store keeps it, for a caller that takes it up elsewhere than
    in the session that made it (the MCP endpoint of another pgwarden sharing the store, or of
    this one after a restart): who asked, the statement, its mode and where it stands.

    Stops at the first non-None result. A Deferred of None: the store has no such request.
    Nothing is decided or changed by this call.

    :param request_id: the request's id, as the agent was told it.
    :return: a `StoredApproval`, a Deferred of one (or of None), or None (no store).

    .. versionadded:: 1.3
    """


@hookspec(firstresult=True)
def pgwarden_approval_claim(request_id: str, subject: str) -> Later[StoredApproval | None] | None:
    """Claims the one run of an approved retry-mode request of ``subject`` for a caller that
    sends its stored statement itself (the MCP endpoint's ``execute_approved``): marks it
    executed in the store, atomically, so that of any number of callers on any number of
    pgwarden processes sharing the store exactly one gets it. The grant still decides, in the
    caller's session, whether the statement sent passes.

    Stops at the first non-None result.

    :param request_id: the request's id, as the agent was told it.
    :param subject: the caller's verified subject: only the requester's own request is claimed.
    :return: the request as claimed; a Deferred of None when it cannot be claimed (unknown,
        another subject's, not approved, not retry mode, or claimed already); None (no store).

    .. versionadded:: 1.3
    """


@hookspec(warn_on_impl_args={
    "shape": PgwardenDeprecationWarning(
        "pgwarden_result_masks(shape=...) is deprecated since plugin contract 1.1: name `result` instead "
        "(a ResultShape: each column resolved to its source; result.description is the RowDescription)"),
})
def pgwarden_result_masks(result: ResultShape, statement: Statement | None, session: Session,
                          shape: RowDescription) -> Mapping[int, ColumnMask | Masker] | None:
    """How to mask the columns of one result, asked once per result (rows and COPY TO STDOUT).

    Called on every plugin; for each column the strictest `ColumnMask` wins (a plain
    `Masker` counts as ``redact``). The core applies the masks to every row, in text and
    binary format; runs of rows no mask needs go out as they came. A plugin that raises
    here makes the result refused (the session goes on; log and record name the plugin).

    :param result: the result's columns, each resolved before you see it: the base column
        it is (``direct``, from RowDescription through the catalog, or from lineage), every
        base column it is computed from (``sources``), or ``opaque`` when lineage cannot
        tell; and what the statement ``reads``.
    :param statement: the statement whose result it is (one statement of a multi-statement
        Query; the prepared statement of a portal; the FETCH of a cursor), when known.
    :param session: the session.
    :param shape: deprecated: ``result.description``.
    :return: a mapping of column index to a `ColumnMask` (or a plain `Masker`), or None.

    .. versionadded:: 0.1
    .. versionchanged:: 1.1
       ``result`` (a `ResultShape`) replaces ``shape``; masks of several plugins compose,
       strictest first, instead of the last plugin's overwriting the others'.
    """


@hookspec
def pgwarden_mask_detectors() -> Sequence[Detector] | None:
    """Detectors of this plugin for ``mask: {detect: [...]}`` rules, named ``<plugin>.<name>``
    in the rules (``acme.employee_id``): a `Detector` with a pattern and an optional validator,
    and (since 1.2) what every match holds (``digits``, ``anchors``), so that values holding
    neither are passed over without the pattern running.

    :return: `Detector` objects, or None.

    .. versionadded:: 1.1
    """


@hookspec
def pgwarden_message_masks(statement: Statement | None, session: Session) -> MessageMask | None:
    """A rewrite of the ErrorResponse and NoticeResponse messages a statement causes (the server
    quotes values in them: ``invalid input syntax for type integer: "..."``; a function may
    RAISE one).

    :param statement: the statement the message is about, when known.
    :param session: the session.
    :return: a function from the message's fields (``(code, text)`` pairs, as the protocol
        names them: ``M`` message, ``D`` detail, ...) to the fields the client gets; or None.
        Several plugins' rewrites apply one after the other.

    .. versionadded:: 1.1
    """


# ---------------------------------------------------------------------------- the admin port


@hookspec
def pgwarden_admin_resources() -> Mapping[str, Resource] | None:
    """HTTP resources this plugin serves on the admin port (``admin: {host, port}``).

    Asked once, when the admin port opens. A resource is served under ``/<name>``;
    the names of pgwarden's own (healthz, readyz, metrics) and of another plugin's
    are refused at start-up. The resource authenticates its callers itself.

    :return: a mapping of a path segment to a ``twisted.web.resource.Resource``, or None.

    .. versionadded:: 1.1
    """


@hookspec
def pgwarden_readiness() -> Sequence[str] | None:
    """Why this plugin cannot serve now, for ``/readyz`` (asked at each probe: answer at once).

    :return: problems, each one line (``/readyz`` answers 503 and lists them), or None.

    .. versionadded:: 1.1
    """


# ---------------------------------------------------------------------------- records


@hookspec
def pgwarden_records_wanted() -> bool | None:
    """Whether this plugin's `pgwarden_records` wants records with the configuration it has now.

    Asked after every `pgwarden_configure`. When no plugin wants records, the core
    builds none (what ``recording: {sinks: []}`` does for the built-in sinks). A
    plugin that does not implement it always gets them.

    :return: False to get no records until the next configuration; True or None to get them.

    .. versionadded:: 1.0
    """


@hookspec
def pgwarden_records(records: Sequence[Record]) -> None:
    """The records to write now (statement, result, approval, session start/end, ...), in order.

    Called once for all the records built since the last call, just before
    `pgwarden_records_flush` (so at most once per reactor turn, and later for records
    that carry no verdict: see that hook), which is where they must reach the
    operating system. Raise when they cannot be taken and statements must stop (fail
    closed), as from `pgwarden_records_flush`: the sessions whose statements wait on
    these records end before those statements reach the database. A retry calls only
    the flush: to keep statements refused while you cannot write, raise there too.
    A plugin that only buffers here may set ``pgwarden_takes_records_early = True``
    (`pgwarden.recorder.TAKES_EARLY`): records that carry no verdict then come once the
    turn's sends have left, before the flush that writes them.

    :param records: JSON-ready mappings (docs/records.md); the same sequence goes to
        every sink: read it, keep it if you like, do not change it.

    .. versionadded:: 1.0
       Replaces `pgwarden_record`: one call per turn instead of one per record.
    """


#: What a plugin that implements `pgwarden_record` (and not `pgwarden_records`) is told at load.
RECORD_DEPRECATED = PgwardenDeprecationWarning(
    "pgwarden_record (one call per record) is deprecated: implement pgwarden_records(records), "
    "which gets the records of a turn in one call (docs/plugins.md, changelog); pgwarden_record "
    "goes in plugin contract v2")


@hookspec(warn_on_impl=RECORD_DEPRECATED)
def pgwarden_record(record: Record) -> None:
    """A structured record (statement, approval, session start/end, ...) to write.

    Called as each record is built. Raising refuses the statement the record is
    about (SQLSTATE 58030), and the later ones until a flush succeeds. A plugin that
    implements `pgwarden_records` too (to work with pgwarden before and after 1.0) gets
    its records there only, and no deprecation warning.

    :param record: the record, a JSON-ready mapping (docs/records.md); the same one
        goes to every sink: read it, do not change it.

    .. versionadded:: 0.1
    .. deprecated:: 1.0
       Implement `pgwarden_records`; this hook goes in plugin contract v2.
    """


@hookspec
def pgwarden_records_flush() -> Sequence[str] | None:
    """Make every record received through `pgwarden_records` so far reach the operating system.

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
