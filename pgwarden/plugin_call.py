"""`PluginCall`: one plugin's implementations of one hook, called as pluggy would, compiled;
`Checkers`: the plugins that check statements, each called for one statement.

Apart from `pgwarden.plugins` so that it can be compiled (`pgwarden.compiled`): the recorder
calls a plugin through one of these twice a statement (its records, its flush), and an
interpreted ``__call__`` was a Python frame each time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

import pluggy
from pluggy._callers import _multicall
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.python.failure import Failure

from pgwarden.native_bases import mypyc_attr
from pgwarden.session import went_unchecked
from pgwarden.verdict import Verdict

if TYPE_CHECKING:
    from pgwarden.policy.model import Policy
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement


# Final: compiled, a C variable each; any other global is a dictionary lookup at each use.
_ALLOWED: Final = Verdict.allow()
#: the Verdict `Checkers.check` answers when no plugin has one (frozen: its action is "allow")
ALLOWED: Final = _ALLOWED
_VERDICT: Final = Verdict
_MULTICALL: Final = _multicall


@mypyc_attr(allow_interpreted_subclasses=True)
class PluginFlags:
    """What each statement's decision reads of the plugin host (`PluginHost`'s first base), as
    fields a compiled caller reads directly (`pgwarden.decisions`). The host sets them."""

    #: whether any plugin decides about statements (else every statement passes)
    checks: bool
    #: whether sessions' statements are analysed and followed (search_path, DDL, PREPARE) even
    #: when no plugin checks them: a masker resolves results through their lineage
    follows: bool

    def __init__(self) -> None:
        self.checks = False
        self.follows = False


class _Ask:
    """`Precheck.answer`'s when it cannot answer: the plugin's own ``pgwarden_check`` is called."""

    __slots__ = ()


#: what `Precheck.answer` gives when the plugin must be called
ASK: Final = _Ask()


class Precheck:
    """The built-in ``block`` plugin's memo of its verdicts, compiled, and its answer from it alone.

    The plugin keeps its verdicts here (``plugins/block``: per analysis and policies tuple, and
    per policies tuple whether any rule is to be enforced) and sets it as its ``precheck``;
    `Checkers` asks `answer` before calling the plugin, and calls the plugin when it says
    `ASK`. The answer is what the plugin's ``pgwarden_check`` would return for the statement,
    read from the same memo that its Python fills, without its interpreted frames: the plugin
    stays the one that judges (a memo entry exists only once it has). Any other plugin, and
    this one whenever tracing or a hook monitor replaces pluggy's executor, is called as ever.
    """

    __slots__ = ("verdicts", "enforcing", "_analysis", "_policies", "_answer")

    def __init__(self) -> None:
        #: (id(analysis), id(policies)) -> (analysis, policies, verdict): the entry keeps both
        #: objects alive, so their ids cannot be reused meanwhile
        self.verdicts: dict[tuple[int, int], tuple[object, object, Verdict | None]] = {}
        #: id(policies) -> (policies, whether any of them has a rule to enforce or blocks by default)
        self.enforcing: dict[int, tuple[object, bool]] = {}
        # The last answer other than ASK, and the analysis and policies it is for (by identity: a
        # session repeating one statement with other constants asks with the same two each time).
        # Its answer cannot have changed: the memos' entries are never replaced, only dropped.
        self._analysis: object = None
        self._policies: object = None
        self._answer: Verdict | None = None

    def answer(self, statement: Statement, session: Session) -> object:
        """The plugin's verdict (a Verdict, or None for none) when the memo holds it, else `ASK`."""
        return self.answer_for(statement, session.policies)

    def answer_for(self, statement: Statement, policies: tuple[Policy, ...]) -> object:
        """`answer` for a session whose policies are ``policies`` (`Checkers` has read them)."""
        analysis = statement.analysed
        if analysis is None:
            return ASK
        if analysis is self._analysis and policies is self._policies:
            return self._answer
        known = self.enforcing.get(id(policies))
        if known is None or known[0] is not policies:
            return ASK
        if not known[1]:  # no rule to enforce: only what cannot be analysed is judged (refused)
            if "unknown" in analysis.kinds:
                return ASK
            answer: Verdict | None = None
        else:
            if analysis.uses_prepared:  # judged each time, with the session's prepared statements
                return ASK
            cached = self.verdicts.get((id(analysis), id(policies)))
            if cached is None or cached[0] is not analysis or cached[1] is not policies:
                return ASK
            answer = cached[2]
        self._analysis = analysis
        self._policies = policies
        self._answer = answer
        return answer


class PluginCall:
    """One plugin's implementations of one hook, with the wrappers of the plugins that only wrap
    it, run by pluggy's own executor: what ``pm.subset_hook_caller`` runs, without its cost at
    every call.

    A subset caller chooses its implementations again at each call (a list built by a filter)
    and goes through the generic ``HookCaller.__call__`` (argument checks, a copy of the list):
    half of the microsecond a pluggy call costs, on the path of every statement. The subset is
    chosen here once, at load (plugins are not registered later), and each call goes straight
    to the plugin manager's hook executor, the one that tracing (``PGWARDEN_TRACE_HOOKS``) and
    pluggy's call monitoring replace, and that runs wrappers and implementations. The core
    passes every argument the hookspec names (it declares no defaults).
    """

    __slots__ = ("_hookexec", "_pm", "_plain", "impls", "name", "positional", "precheck")

    def __init__(self, hook: pluggy.HookCaller, impls: list[pluggy.HookImpl], pm: pluggy.PluginManager) -> None:
        self.name = hook.name
        self.impls = impls
        self._hookexec = hook._hookexec
        self._pm = pm
        # One implementation, no wrapper, no keyword arguments of its own: what pluggy's executor
        # does for it is a call with the arguments it names, its answer in a list unless None.
        # Made here directly while the executor is pluggy's own (tracing and call monitoring
        # replace it, and are then run as before): the executor's frames and lists are a third
        # of a decision's plugin call.
        only = impls[0] if len(impls) == 1 else None
        self._plain: tuple[Callable[..., object], tuple[str, ...]] | None = (
            (only.function, tuple(only.argnames))
            if only is not None and not (only.wrapper or only.hookwrapper or only.kwargnames) else None)
        #: that implementation when it takes every argument the hookspec names, in its order: a
        #: caller on the path of every statement (`PluginHost.check`) calls it with them directly,
        #: while `direct` says pluggy's own executor is in place, and takes a None answer as none
        self.positional: Callable[..., object] | None = (
            self._plain[0] if self._plain is not None and hook.spec is not None
            and self._plain[1] == tuple(hook.spec.argnames) else None)
        #: the plugin's `Precheck`, asked before `positional` is called (``pgwarden_check`` only)
        found = getattr(only.plugin, "precheck", None) if only is not None else None
        self.precheck: Precheck | None = (
            found if self.positional is not None and hook.name == "pgwarden_check"
            and isinstance(found, Precheck) else None)

    def __call__(self, **kwargs: object) -> list:  # (a `Call`: what each plugin answered)
        plain = self._plain
        if plain is not None and self._pm._inner_hookexec is _MULTICALL:
            function, names = plain
            try:
                args = [kwargs[name] for name in names]
            except KeyError:  # pluggy's executor says which argument is missing
                return self._hookexec(self.name, self.impls, kwargs, False)  # type: ignore[return-value]
            answer = function(*args)
            return [] if answer is None else [answer]
        return self._hookexec(self.name, self.impls, kwargs, False)  # type: ignore[return-value]

    def problems(self) -> list[str]:
        """Called without arguments (``pgwarden_records_flush``): every problem each answer names."""
        found: list[str] = []
        for answer in self():
            if answer:
                found.extend(answer)
        return found


class CheckHost(Protocol):
    """What `Checkers` asks of the plugin host, off the common path (`pgwarden.plugins.PluginHost`)."""

    def _checkers_for_policies(self, policies: tuple[Policy, ...]) -> tuple[tuple[Policy, ...], list]: ...

    def _culprit(self, hook_name: str, error: BaseException, default: str) -> str: ...

    def _failed(self, name: str, failure: Failure) -> Verdict: ...

    def _settle(self, name: str, answer: object) -> Verdict | Deferred[Verdict | None] | None: ...


class Checkers:
    """`PluginHost.check`'s loop over the checking plugins, compiled: the decision (compiled too)
    calls it for every statement without an interpreted frame of its own. Holds the host's own
    list, set and memo (built once the plugins are registered), not copies."""

    def __init__(self, host: CheckHost, checkers: list[tuple[str, PluginCall]], rules_only: set[str],
                 checkers_for: dict[int, tuple[tuple[Policy, ...], list[tuple[str, PluginCall]]]],
                 pm: pluggy.PluginManager) -> None:
        self._host = host
        self._checkers = checkers
        self._rules_only = rules_only
        self._checkers_for = checkers_for
        self._pm = pm
        # The checkers of the policies tuple last asked about (by identity; kept alive here, so
        # its id cannot be reused): what `_checkers_for` and the host give for it is a function of
        # the tuple alone (the host's checkers and their rule kinds are fixed at its load).
        self._last_policies: tuple[Policy, ...] | None = None
        self._last_checkers: list[tuple[str, PluginCall]] = checkers

    def check(self, statement: Statement, session: Session) -> Verdict | Deferred[Verdict]:
        """The strictest verdict of all plugins: a Verdict, or a Deferred of one (`PluginHost.check`)."""
        return self.check_under(statement, session, None)

    def check_under(self, statement: Statement, session: Session,
                    policies: tuple[Policy, ...] | None) -> Verdict | Deferred[Verdict]:
        """`check`, ``session.policies`` given when the caller has just read them (the decision
        has), else None: read here, once, when something needs them."""
        answers: list[Verdict | Deferred[Verdict | None]] = []
        waits = False
        checkers = self._checkers
        if self._rules_only:
            if policies is None:
                policies = session.policies
            if policies is self._last_policies:  # (the same session's next statement: no lookup)
                checkers = self._last_checkers
            else:
                known = self._checkers_for.get(id(policies))
                if known is None or known[0] is not policies:
                    known = self._host._checkers_for_policies(policies)
                checkers = known[1]
                self._last_policies = policies
                self._last_checkers = checkers
            if not checkers:  # no plugin sees it: one that remembers the session's PREPAREs must know
                went_unchecked(session)
                return _ALLOWED
        direct = self._pm._inner_hookexec is _MULTICALL  # else tracing or a monitor runs each call
        for name, call in checkers:
            try:
                positional = call.positional if direct else None
                if positional is not None:  # what `PluginCall.__call__` does, one frame less
                    precheck = call.precheck
                    if precheck is not None:
                        if policies is None:
                            policies = session.policies
                        answer = precheck.answer_for(statement, policies)
                    else:
                        answer = ASK
                    if answer is ASK:  # (the plugin's memo cannot answer: the plugin judges)
                        answer = positional(statement, session)
                    if answer is None:
                        continue
                    got = [answer]
                else:
                    got = call(statement=statement, session=session)
            except Exception as e:
                answers.append(self._host._failed(self._host._culprit("pgwarden_check", e, name), Failure()))
                continue
            blocked = False
            for answer in got:
                if type(answer) is not _VERDICT:  # the common case first (isinstance costs more)
                    answer = self._host._settle(name, answer)
                    if answer is None:
                        continue
                    waits = waits or type(answer) is not _VERDICT
                elif answer.action == "block":
                    blocked = True
                answers.append(answer)
            if blocked:
                # Nothing overrules a block: the plugins after it (pluggy's order; the mask plugin
                # asks last) are not asked, so none of their work runs for a statement that will
                # not (red team eight: the server's plan asked for a refused statement ran its
                # functions on pgwarden's own connection).
                break
        if not waits:
            if not answers:
                return _ALLOWED  # what `Verdict.strictest` makes of none
            return answers[0] if len(answers) == 1 else Verdict.strictest(answers)  # type: ignore[return-value]
        return gatherResults(  # type: ignore[misc]
            [a if isinstance(a, Deferred) else succeed(a) for a in answers]).addCallback(Verdict.strictest)
