"""The plugin host: loads plugins, validates their options, and turns hook answers into decisions.

Built per `Application` (never a module global). Every plugin, built-in or not,
comes from the entry-point group ``pgwarden``; tests and embedders may add
plugin objects directly. After loading, ``check_pending()`` makes a misspelled
hook fail at start-up instead of being silently ignored.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from collections.abc import Mapping
from typing import Any, Iterable

import attrs
import pluggy
from twisted.internet import defer
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden import hookspecs
from pgwarden.config import Config, ConfigError, did_you_mean, line_of, located, structure_section
from pgwarden.policy.model import RULE_KINDS
from pgwarden.verdict import Refusal, Verdict

log = Logger(namespace="pgwarden.plugins")

ENTRY_POINT_GROUP = "pgwarden"
# Keys of the `plugins:` section that are not plugin names.
RESERVED_KEYS = frozenset({"disable", "timeout_s"})
DECISION_HOOKS = ("pgwarden_check",)
# Rule kinds the core itself enforces: `limit` acts on the relay (row cap) and
# on the upstream session (statement_timeout), not on a verdict.
CORE_RULE_KINDS = frozenset({"limit"})
NO_AUTHENTICATOR = "no loaded plugin authenticates clients (is 'jwt' disabled?)"


class PluginError(Exception):
    """A plugin could not be loaded or does not fit the hook specifications."""


@attrs.frozen
class LoadedPlugin:
    name: str
    version: str | None
    source: str  # "entry point" or "inline"
    hooks: tuple[str, ...]


class PluginHost:
    """The loaded plugins of one pgwarden, and how the core calls them."""

    def __init__(
        self,
        config: Config | None,
        reactor,
        extra: Iterable[tuple[str, object]] = (),
        *,
        use_entry_points: bool = True,
        only: Iterable[str] | None = None,
        section: dict | None = None,
    ) -> None:
        """Loads every plugin; with a config, also validates and guards them.

        ``extra``: (name, plugin) pairs registered beside the entry points (inline
        plugins). ``only``: the names of the entry-point plugins to load, the others
        being left out as if not installed (tests that must not depend on what else
        is installed); None loads all. ``config`` None only discovers (for `pgwarden
        plugins`), by the ``plugins:`` ``section`` if given (a file that did not
        structure, for `pgwarden check`).
        """
        self.reactor = reactor
        self.pm = pluggy.PluginManager("pgwarden")
        self.pm.add_hookspecs(hookspecs)
        self._versions: dict[str, tuple[str | None, str]] = {}
        if config is not None:
            section = config.plugins
        section = section if isinstance(section, dict) else {}
        disabled = _names(section.get("disable")) or set()
        #: plugins found but switched off by ``plugins.disable``
        self.disabled: set[str] = set()
        self.timeout_s = _timeout(section.get("timeout_s")) or 10.0
        wanted = None if only is None else set(only)
        if use_entry_points:
            found = entry_points(group=ENTRY_POINT_GROUP)
            missing = sorted((wanted or set()) - set(found.names))
            if missing:
                raise PluginError(f"no installed plugin is named {', '.join(map(repr, missing))} "
                                  f"(installed: {', '.join(sorted(found.names)) or 'none'})")
            for ep in found:
                if wanted is not None and ep.name not in wanted:
                    continue
                if ep.name in disabled:
                    self.disabled.add(ep.name)
                    continue
                try:
                    plugin = ep.load()
                    if isinstance(plugin, type):  # a class: one instance per pgwarden
                        plugin = plugin()
                except Exception as e:
                    raise PluginError(f"plugin {ep.name!r} ({ep.value}) cannot be loaded: {e}") from e
                self._register(ep.name, plugin, ep.dist.version if ep.dist else None, "entry point")
        for name, plugin in extra:
            if name in disabled:
                self.disabled.add(name)
            else:
                self._register(name, plugin, None, "inline")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(str(e)) from None
        self._tracing = os.environ.get("PGWARDEN_TRACE_HOOKS") == "1"
        self._checkers: list = []
        if self._tracing:
            self.pm.trace.root.setwriter(lambda text: log.info("hook: {text}", text=text.rstrip()))
            self.pm.enable_tracing()
        self.options: dict[str, Any] = {}
        if config is not None:
            self.accept(config)

    def accept(self, config: Config) -> None:
        """Validates ``config`` (ConfigError) and then guards the decision hooks: once, for
        a host built without a config. Reloads call `validate` alone."""
        self.validate(config)
        self._guard_decisions()

    def _register(self, name: str, plugin: object, version: str | None, source: str) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        try:
            self.pm.register(plugin, name=name)
        except ValueError as e:
            raise PluginError(f"plugin {name!r}: {e}") from None
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin {name!r} does not fit the hook specifications: {e}") from None
        self._versions[name] = (version, source)

    # ------------------------------------------------------------------ configuration

    def _impls(self, hook_name: str):
        return getattr(self.pm.hook, hook_name).get_hookimpls()

    def validate(self, config: Config) -> None:
        """Checks the plugin options and rule kinds of ``config``; raises ConfigError."""
        options, problems = self._problems(config.plugins or {}, _rule_kinds(config.policies),
                                           config.source, config.lines)
        if problems:
            raise ConfigError(config.source, sorted(problems, key=line_of))
        self.options = options

    def document_problems(self, data: dict, source: str, lines: Mapping[tuple, int]) -> list[str]:
        """What `validate` would say of a config file that did not structure (its raw mapping),
        so that `pgwarden check` reports these problems together with the file's others."""
        section = data.get("plugins")
        _, problems = self._problems(section if isinstance(section, dict) else {},
                                     _document_rule_kinds(data.get("policies")), source, lines)
        return problems

    @property
    def authenticates(self) -> bool:
        """Whether any loaded plugin can let a client in (else no session could start)."""
        return bool(self._impls("pgwarden_authenticate"))

    def _problems(self, section: dict, rules: Iterable[tuple[tuple, str]], source: str,
                  lines: Mapping[tuple, int]) -> tuple[dict[str, Any], list[str]]:
        """The options of each plugin, and every problem of the ``plugins:`` section and of
        the rule kinds (each rule's path and kind; ``default: block`` counts as a block rule)."""
        problems: list[str] = []
        names = {n for n, _ in self.pm.list_name_plugin()}
        known = names | self.disabled
        for key, value in section.items():
            where = ("plugins", key)
            if key == "disable":
                if _names(value) is None:
                    problems.append(located(lines, where, f"expected a list of plugin names, got {value!r}"))
                    continue
                for i, name in enumerate(value):
                    if name not in known:
                        problems.append(located(lines, where + (i,), f"no plugin is named {name!r}"
                                                + (did_you_mean(name, known) or
                                                   f"; installed: {', '.join(sorted(known)) or 'none'}")))
            elif key == "timeout_s":
                if _timeout(value) is None:
                    problems.append(located(lines, where, f"expected a number of seconds above 0, got {value!r}"))
            elif key not in names:
                problems.append(located(lines, where, f"no loaded plugin is named {key!r}"
                                        + did_you_mean(key, names | RESERVED_KEYS)))
        options: dict[str, Any] = {}
        for impl in self._impls("pgwarden_options"):
            cls = impl.function()
            if cls is None:
                continue
            try:
                options[impl.plugin_name] = structure_section(
                    section.get(impl.plugin_name) or {}, cls, f"plugins.{impl.plugin_name}", source, lines
                )
            except ConfigError as e:
                problems.extend(e.problems)
        claimed: set[str] = set(CORE_RULE_KINDS)
        for impl in self._impls("pgwarden_rule_kinds"):
            claimed.update(impl.function() or ())
        for path, kind in rules:
            if path[-1] == "default":
                if "block" not in claimed:  # nothing would enforce it: refuse rather than silently allow
                    problems.append(located(lines, path, "'block' needs a plugin that interprets block rules; "
                                                         "none is loaded"))
            elif kind not in claimed:
                problems.append(located(
                    lines, path, f"rule kind {kind!r} is interpreted by no loaded plugin"
                    + (f" (loaded rule kinds: {', '.join(sorted(claimed))})" if claimed else "")))
        return options, problems

    def call_one(self, hook_name: str, plugin_name: str, **kwargs):
        """Calls one plugin's implementation, through pluggy (so tracing sees it)."""
        others = [p for n, p in self.pm.list_name_plugin() if n != plugin_name]
        return self.pm.subset_hook_caller(hook_name, remove_plugins=others)(**kwargs)

    def configure(self, config: Config) -> None:
        """Hands each plugin the config and its own options (start-up and reload)."""
        for impl in self._impls("pgwarden_configure"):
            self.call_one("pgwarden_configure", impl.plugin_name,
                          config=config, options=self.options.get(impl.plugin_name), reactor=self.reactor)

    # ------------------------------------------------------------------ decisions

    def _guard_decisions(self) -> None:
        """Wraps each decision hook so that a failing plugin blocks, naming itself."""
        for hook_name in DECISION_HOOKS:
            for impl in self._impls(hook_name):
                impl.function = _guarded(impl.function, impl.plugin_name, self.reactor, self.timeout_s)
        # pluggy's call order: the last registered first.
        self._checkers = [_positional(impl.function, tuple(impl.argnames))
                          for impl in reversed(self._impls("pgwarden_check"))]

    @property
    def checks(self) -> bool:
        """Whether any plugin decides about statements (else every statement passes)."""
        if self._checkers:
            return True
        return bool(self._impls("pgwarden_check"))

    def check(self, statement, session) -> Verdict | Deferred:
        """The strictest verdict of all plugins: a Verdict, or a Deferred of one.

        Called for every statement: unless hooks are traced, the (guarded)
        implementations are called directly, without pluggy's generic call path.
        """
        if self._tracing:
            results = self.pm.hook.pgwarden_check(statement=statement, session=session)
        else:
            results = []
            deferred = False
            for call in self._checkers:
                answer = call(statement, session)
                if answer is not None:
                    results.append(answer)
                    if answer.__class__ is not Verdict:
                        deferred = True  # guarded: anything but a Verdict is a Deferred
            if not deferred:
                return Verdict.strictest(results)
        if not any(isinstance(r, Deferred) for r in results):
            return Verdict.strictest(results)
        return gatherResults([maybeDeferred(lambda r=r: r) for r in results]).addCallback(Verdict.strictest)

    def approval(self, request, session) -> Deferred | None:
        result = self.pm.hook.pgwarden_await_approval(request=request, session=session)
        return result

    # ------------------------------------------------------------------ listing

    def loaded(self) -> list[LoadedPlugin]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            version, source = self._versions.get(name, (None, "inline"))
            out.append(LoadedPlugin(name, version, source, hooks))
        return sorted(out, key=lambda p: p.name)


def _names(value) -> set[str] | None:
    """``plugins.disable`` as a set of names; None when it is not a list of strings."""
    if value is None:
        return set()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return set(value)
    return None


def _timeout(value) -> float | None:
    """``plugins.timeout_s`` in seconds; None when it is not a positive number."""
    if value is None:
        return 10.0
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _rule_kinds(policies) -> Iterable[tuple[tuple, str]]:
    """(path, kind) of each rule of structured policies, and of each ``default: block``."""
    for i, policy in enumerate(policies):
        if policy.default == "block":
            yield ("policies", i, "default"), "block"
        for j, rule in enumerate(policy.rules):
            yield ("policies", i, "rules", j), rule.kind


def _document_rule_kinds(policies) -> Iterable[tuple[tuple, str]]:
    """The same, read from the file's own mapping: each kind a rule names, when the
    policies did not structure (a rule naming two kinds is reported by structuring)."""
    for i, policy in enumerate(policies if isinstance(policies, list) else ()):
        if not isinstance(policy, dict):
            continue
        if policy.get("default") == "block":
            yield ("policies", i, "default"), "block"
        rules = policy.get("rules")
        for j, rule in enumerate(rules if isinstance(rules, list) else ()):
            if isinstance(rule, dict):
                for kind in RULE_KINDS:
                    if rule.get(kind) is not None:
                        yield ("policies", i, "rules", j), kind


def _positional(function, argnames: tuple[str, ...]):
    """``function`` as a callable of (statement, session), whatever subset and order of the
    two its implementation declared (pluggy passes only the arguments named)."""
    if argnames == ("statement", "session"):
        return function

    def call(statement, session):
        given = {"statement": statement, "session": session}
        return function(*[given[name] for name in argnames])

    return call


def _guarded(function, plugin_name: str, reactor, timeout_s: float):
    def block(why: str) -> Verdict:
        return Verdict.block(
            f"plugin {plugin_name!r} {why}",
            "This is pgwarden's fault, not the statement's: retry later or ask an operator.",
            rule=f"plugin:{plugin_name}",
        )

    def failed(failure: Failure) -> Verdict:
        if failure.check(defer.TimeoutError):
            log.error("plugin {plugin} did not answer within {t}s", plugin=plugin_name, t=timeout_s)
            return block(f"did not answer within {timeout_s:g}s")
        log.failure("plugin {plugin} failed", failure=failure, plugin=plugin_name)
        return block("failed")

    def guarded(*args):
        try:
            result = function(*args)
        except Exception:
            return failed(Failure())
        if result is None or result.__class__ is Verdict:
            return result  # the common case, before isinstance on Deferred (a slow ABC check)
        if isinstance(result, Deferred):
            result.addTimeout(timeout_s, reactor)
            result.addCallback(lambda v: v if v is None or isinstance(v, Verdict) else block(f"answered {v!r}"))
            result.addErrback(failed)
            return result
        if result is not None and not isinstance(result, Verdict):
            return block(f"answered {type(result).__name__}, not a Verdict")
        return result

    guarded.__wrapped__ = function
    return guarded


def refusal_for(verdict: Verdict) -> Refusal:
    return Refusal.from_verdict(verdict)
