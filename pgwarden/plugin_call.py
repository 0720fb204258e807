"""`PluginCall`: one plugin's implementations of one hook, called as pluggy would, compiled.

Apart from `pgwarden.plugins` so that it can be compiled (`pgwarden.compiled`): the recorder
calls a plugin through one of these twice a statement (its records, its flush), and an
interpreted ``__call__`` was a Python frame each time.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy
from pluggy._callers import _multicall


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

    __slots__ = ("_hookexec", "_pm", "_plain", "impls", "name", "positional")

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

    def __call__(self, **kwargs: object) -> list:  # (a `Call`: what each plugin answered)
        plain = self._plain
        if plain is not None and self._pm._inner_hookexec is _multicall:
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
