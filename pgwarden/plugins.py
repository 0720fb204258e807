"""The plugin host: loads plugins, validates their options and rules, and calls their hooks.

Built per `Application` (never a module global). Every plugin, built-in or not,
comes from the entry-point group ``pgwarden``; tests and embedders may add
plugin objects directly. After loading, ``check_pending()`` makes a misspelled
hook fail at start-up instead of being silently ignored.

Every hook is called through pluggy, so tracing (``PGWARDEN_TRACE_HOOKS=1``),
``wrapper=True`` implementations and pluggy's deprecation warnings apply to all
of them, `pgwarden explain` included. Where the core must know which plugin
answered (a decision that failed, a sink that could not write), it calls each
plugin on its own through pluggy's hook executor (`PluginCall`), with the subset
chosen once at load: the plugin's implementations, with the wrappers of every
plugin that only wraps around them.
Answers that are coroutines (``async def`` implementations) become Deferreds.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import EntryPoint, entry_points
from types import CodeType, TracebackType
from typing import TYPE_CHECKING

import attrs
import pluggy
from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from pgwarden import hookspecs
from pgwarden.config import Config, ConfigError, did_you_mean, line_of, located, structure_section
from pgwarden.hookspecs import PgwardenDeprecationWarning
from pgwarden.identity import AuthenticationFailed
from pgwarden.masking import ColumnMask, Detector, MessageMask, ResultShape, compose
from pgwarden.plugin_call import Checkers, PluginCall, PluginFlags
from pgwarden.policy.kinds import BLOCK, BUILTIN_RULE_KINDS, CORE_RULE_KINDS, RuleKind
from pgwarden.policy.model import RULE_KEYS, Policy, Rule, Unread
from pgwarden.sections import ConfigProblem, ConfigSection, Sections, resolve, value_at
from pgwarden.verdict import Verdict

if TYPE_CHECKING:
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement
    from pgwarden.wire.messages import StartupMessage

log = Logger(namespace="pgwarden.plugins")

ENTRY_POINT_GROUP = "pgwarden"
#: A plugin whose ``pgwarden_check`` only interprets the rule kinds it declares sets this
#: attribute to True: it is not called for sessions whose policies have none of those rules.
RULES_ONLY = "pgwarden_checks_only_its_rules"
#: A plugin whose ``pgwarden_result_masks`` and ``pgwarden_message_masks`` answer None for every
#: session whose policies have no rule of the kinds it declares sets this attribute to True: they
#: are not called for those sessions, and their results and messages go out without being resolved.
MASKS_ONLY_BY_RULES = "pgwarden_masks_only_by_its_rules"
# Keys of the `plugins:` section that are not plugin names.
RESERVED_KEYS = frozenset({"disable", "timeout_s"})
NO_AUTHENTICATOR = "no loaded plugin authenticates clients (pgwarden_authenticate)"
# Who interprets the kinds the core enforces itself, in messages and listings.
CORE = "pgwarden"
# What plugin contract v1 removed, for the error that says so at load.
_REMOVED = {
    ("pgwarden_configure", "config"): "pgwarden_configure no longer gets the whole config (plugin contract v1): "
                                      "declare the sections you need with pgwarden_config_sections "
                                      "(docs/plugins.md, changelog)",
}


class PluginError(Exception):
    """A plugin could not be loaded or does not fit the hook specifications."""


class MaskingFailed(Exception):
    """A plugin failed while saying how to mask a result: the result is refused, in its name."""

    def __init__(self, plugin: str, why: str) -> None:
        super().__init__(f"plugin {plugin!r} failed to mask the result: {why}")
        self.plugin = plugin


@attrs.frozen
class LoadedPlugin:
    name: str
    version: str | None
    source: str  # "entry point" or "inline"
    hooks: tuple[str, ...]
    #: the rule kinds it interprets
    rule_kinds: tuple[str, ...] = ()
    #: deprecation warnings it got when it was loaded
    warnings: tuple[str, ...] = ()


Call = Callable[..., list]
_ALLOWED = Verdict.allow()


@functools.lru_cache(maxsize=8)
def _installed(path: tuple[str, ...]) -> tuple[tuple[EntryPoint, str | None], ...]:
    """pgwarden's entry points as ``path`` (sys.path) finds them, each with its distribution's
    version: read once per path, not per `PluginHost`. Finding them parses every installed
    distribution's metadata (~17 ms); a `pgwarden run` makes one host, but `check` before it one
    more, and a test process one per pgwarden it starts. Installing a plugin takes a new process
    (or, in a test, a new path: `monkeypatch.syspath_prepend`)."""
    return tuple((ep, ep.dist.version if ep.dist else None) for ep in entry_points(group=ENTRY_POINT_GROUP))


class PluginHost(PluginFlags):
    """The loaded plugins of one pgwarden, and how the core calls them.

    What each statement's decision reads of it (`pgwarden.decisions`, compiled), ``checks`` and
    ``follows``, are fields of its native base `PluginFlags`: a compiled caller reads them from
    the object's struct, where this Python class's attributes are a generic lookup."""

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
        """Loads every plugin; with a config, also validates it (`accept`).

        ``extra``: (name, plugin) pairs registered beside the entry points (inline
        plugins). ``only``: the names of the entry-point plugins to load, the others
        being left out as if not installed (tests that must not depend on what else
        is installed); None loads all. ``config`` None only discovers (for `pgwarden
        plugins`), by the ``plugins:`` ``section`` if given (a file that did not
        structure, for `pgwarden check`).
        """
        PluginFlags.__init__(self)  # no plugin checks or follows statements until they are loaded
        self.reactor = reactor
        self.pm = pluggy.PluginManager("pgwarden")
        self.pm.add_hookspecs(hookspecs)
        self._versions: dict[str, tuple[str | None, str]] = {}
        self._warnings: dict[str, list[str]] = {}
        if config is not None:
            section = config.plugins
        section = section if isinstance(section, dict) else {}
        disabled = _names(section.get("disable")) or set()
        #: plugins found but switched off by ``plugins.disable``
        self.disabled: set[str] = set()
        self.timeout_s = _timeout(section.get("timeout_s")) or 10.0
        wanted = None if only is None else set(only)
        if use_entry_points:
            found = _installed(tuple(sys.path))
            names = {ep.name for ep, _ in found}
            missing = sorted((wanted or set()) - names)
            if missing:
                raise PluginError(f"no installed plugin is named {', '.join(map(repr, missing))} "
                                  f"(installed: {', '.join(sorted(names)) or 'none'})")
            for ep, version in found:
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
                self._register(ep.name, plugin, version, "entry point")
        for name, plugin in extra:
            if name in disabled:
                self.disabled.add(name)
            else:
                self._register(name, plugin, None, "inline")
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(str(e)) from None
        if os.environ.get("PGWARDEN_TRACE_HOOKS") == "1":
            self.pm.trace.root.setwriter(lambda text: log.info("hook: {text}", text=text.rstrip()))
            self.pm.enable_tracing()
        self._callers: dict[str, list[tuple[str, PluginCall]]] = {}
        self._codes: dict[str, dict[CodeType, str]] = {}
        self._kinds, self._claims = self._declared_rule_kinds()
        self._sections = self._declared_sections()
        # The hot path's callers, built once: the plugins are all registered by now.
        self._checkers = self._each("pgwarden_check")
        #: whether any plugin decides about statements (else every statement passes); an
        #: attribute, not a property: the decision path reads it up to three times a statement
        self.checks = bool(self._checkers)
        # Checkers that only interpret their own rule kinds (`RULES_ONLY`), by name: skipped for
        # sessions whose policies have no rule of those kinds.
        self._rules_only = {name for name, _ in self._checkers
                            if getattr(self.pm.get_plugin(name), RULES_ONLY, False) is True}
        self._checkers_for: dict[int, tuple[tuple[Policy, ...], list[tuple[str, PluginCall]]]] = {}
        #: the checking plugins' calls for one statement (`check`), compiled
        self.checkers = Checkers(self, self._checkers, self._rules_only, self._checkers_for, self.pm)
        # The same for masking: maskers that only mask by their own rule kinds (`MASKS_ONLY_BY_RULES`),
        # and per policies tuple, the result and message maskers to call.
        self._masks_only = {name for hook in ("pgwarden_result_masks", "pgwarden_message_masks")
                            for name, _ in self._each(hook)
                            if getattr(self.pm.get_plugin(name), MASKS_ONLY_BY_RULES, False) is True}
        self._maskers_for: dict[int, _Maskers] = {}
        #: whether sessions' statements are analysed and followed (search_path, DDL, PREPARE)
        #: even when no plugin checks them: a masker resolves results through their lineage
        self.follows = self.checks or self._masking(None)
        self._authenticate = self.pm.hook.pgwarden_authenticate
        self._approve = self.pm.hook.pgwarden_await_approval
        self._recording: set[str] = set()  # the plugins that want records now
        self.options: dict[str, object] = {}
        #: the configuration `accept` took, its rules read
        self.config: Config | None = None
        if config is not None:
            self.accept(config)

    def _register(self, name: str, plugin: object, version: str | None, source: str) -> None:
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named {name!r}")
        try:
            # pluggy warns about implementations of deprecated hooks (warn_on_impl) as it registers them.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                self.pm.register(plugin, name=name)
        except ValueError as e:
            raise PluginError(f"plugin {name!r}: {e}") from None
        except pluggy.PluginValidationError as e:
            text = str(e)
            hints = [hint for (hook, arg), hint in _REMOVED.items() if hook in text and repr(arg) in text]
            raise PluginError(f"plugin {name!r} does not fit the hook specifications: {text}"
                              + "".join(f"\n{hint}" for hint in hints)) from None
        batches = any(impl.plugin_name == name for impl in self._impls("pgwarden_records"))
        for w in caught:
            if w.message is hookspecs.RECORD_DEPRECATED and batches:
                continue  # it takes records the v1 way, and keeps the old hook for older pgwardens
            if issubclass(w.category, PgwardenDeprecationWarning):
                self._deprecated(name, str(w.message))
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self._versions[name] = (version, source)

    def _deprecated(self, name: str, message: str) -> None:
        log.warn("plugin {plugin}: {warning}", plugin=name, warning=message)
        self._warnings.setdefault(name, []).append(message)

    # ------------------------------------------------------------------ calling

    def _impls(self, hook_name: str) -> list[pluggy.HookImpl]:
        return getattr(self.pm.hook, hook_name).get_hookimpls()

    def _each(self, hook_name: str) -> list[tuple[str, PluginCall]]:
        """(plugin name, caller) for each plugin that implements ``hook_name``, in pluggy's
        order: through pluggy, the plugin's implementations with the wrappers of every
        plugin that only wraps this hook around them. Built once per hook."""
        known = self._callers.get(hook_name)
        if known is not None:
            return known
        deciders: dict[str, object] = {}
        for impl in reversed(self._impls(hook_name)):  # pluggy calls the last of the list first
            if not (impl.wrapper or impl.hookwrapper):
                deciders.setdefault(impl.plugin_name, impl.plugin)
        hook = getattr(self.pm.hook, hook_name)
        if hook.spec is not None and hook.spec.opts.get("firstresult"):
            raise PluginError(f"{hook.name} stops at the first answer: call it through pm.hook, not plugin by plugin")
        impls = hook.get_hookimpls()
        callers: list[tuple[str, PluginCall]] = [
            (name, PluginCall(hook, [i for i in impls if i.plugin_name == name or i.plugin_name not in deciders],
                               self.pm))
            for name in deciders]
        self._callers[hook_name] = callers
        return callers

    def _culprit(self, hook_name: str, error: BaseException, default: str) -> str:
        """The plugin whose code raised ``error`` in a call of ``hook_name``: the innermost
        implementation (or wrapper) in its traceback, else ``default``."""
        codes = self._codes.get(hook_name)
        if codes is None:
            codes = self._codes[hook_name] = {}
            for impl in self._impls(hook_name):
                code = getattr(getattr(impl.function, "__func__", impl.function), "__code__", None)
                if code is not None:
                    codes[code] = impl.plugin_name
        found = default
        tb: TracebackType | None = error.__traceback__
        while tb is not None:
            found = codes.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found

    def notify(self, hook_name: str, on_failure: Callable[[str], object] | None = None, **kwargs: object) -> None:
        """A notification hook: one plugin's failure (raised, or of its Deferred or coroutine)
        is logged, passed to ``on_failure`` with the plugin's name, and does not stop the others."""
        def failed(failure: Failure, name: str) -> None:
            log.failure("plugin {plugin} failed in {hook}", failure, plugin=name, hook=hook_name)
            if on_failure is not None:
                on_failure(name)

        for name, call in self._each(hook_name):
            try:
                answers = call(**kwargs)
            except Exception as e:
                failed(Failure(), self._culprit(hook_name, e, name))
                continue
            for answer in answers:
                try:
                    waiting = later(answer)
                except Exception:  # noqa: BLE001 - a coroutine that cannot be started
                    failed(Failure(), name)
                    continue
                if isinstance(waiting, Deferred):
                    waiting.addErrback(failed, name)

    # ------------------------------------------------------------------ declarations

    def _declared_rule_kinds(self) -> tuple[dict[str, RuleKind[object]], dict[str, list[str]]]:
        """The rule kinds known (built-in, and each plugin's), and who interprets each."""
        kinds: dict[str, RuleKind[object]] = {k.name: k for k in BUILTIN_RULE_KINDS}
        declared_by: dict[str, str] = {k.name: CORE for k in BUILTIN_RULE_KINDS}
        claims: dict[str, list[str]] = {k.name: [CORE] for k in CORE_RULE_KINDS}
        for name, call in self._each("pgwarden_rule_kinds"):
            try:
                answers = call()
            except Exception as e:
                raise PluginError(f"plugin {name!r} failed in pgwarden_rule_kinds: {e!r}") from e
            for answer in answers:
                if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable):
                    raise PluginError(f"plugin {name!r}: pgwarden_rule_kinds answered {answer!r}, "
                                      "not a list of pgwarden.api.RuleKind")
                for kind in answer:
                    if isinstance(kind, str) and kind in kinds:  # plugin contract v0
                        self._deprecated(name, f"claims rule kind {kind!r} by its name; return the RuleKind "
                                               f"object (pgwarden.api.{kind.upper()}): names go after v1")
                        kind = kinds[kind]
                    if not isinstance(kind, RuleKind):
                        raise PluginError(f"plugin {name!r}: pgwarden_rule_kinds answered {kind!r}, "
                                          "not a pgwarden.api.RuleKind")
                    known = kinds.setdefault(kind.name, kind)
                    if known is not kind:
                        owner = declared_by[kind.name]
                        raise PluginError(f"plugin {name!r} declares rule kind {kind.name!r}, which "
                                          + ("pgwarden declares" if owner == CORE else f"plugin {owner!r} declares")
                                          + " already; to interpret it, return that RuleKind object")
                    declared_by.setdefault(kind.name, name)
                    if name not in claims.setdefault(kind.name, []):
                        claims[kind.name].append(name)
        return kinds, claims

    def _declared_sections(self) -> dict[str, tuple[ConfigSection[object], ...]]:
        sections: dict[str, tuple[ConfigSection[object], ...]] = {}
        for name, call in self._each("pgwarden_config_sections"):
            try:
                answers = call()
            except Exception as e:
                raise PluginError(f"plugin {name!r} failed in pgwarden_config_sections: {e!r}") from e
            mine: list[ConfigSection[object]] = []
            for answer in answers:
                for section in answer:
                    if not isinstance(section, ConfigSection):
                        raise PluginError(f"plugin {name!r}: pgwarden_config_sections answered {section!r}, "
                                          "not a pgwarden.api.ConfigSection")
                    why = resolve(Config, section)
                    if why is not None:
                        raise PluginError(f"plugin {name!r} needs {why}")
                    mine.append(section)
            sections[name] = tuple(mine)
        return sections

    def sections_for(self, plugin_name: str, config: Config) -> Sections:
        """The sections ``plugin_name`` declared, from ``config``."""
        return Sections({s: value_at(config, s) for s in self._sections.get(plugin_name, ())})

    @property
    def declared_rule_kinds(self) -> dict[str, RuleKind[object]]:
        """Every rule kind known, built-in or a plugin's, by name."""
        return dict(self._kinds)

    @property
    def rule_kinds(self) -> dict[str, tuple[str, ...]]:
        """Each rule kind some loaded plugin (or the core) interprets, and who does."""
        return {kind: tuple(names) for kind, names in sorted(self._claims.items())}

    # ------------------------------------------------------------------ configuration

    def accept(self, config: Config) -> Config:
        """`validate` ``config`` and keep it as `config`."""
        self.config = self.validate(config)
        return self.config

    def validate(self, config: Config) -> Config:
        """``config`` with its rules read (each into its kind's options class), after checking
        the plugin options and the rule kinds; raises ConfigError listing every problem."""
        options, problems = self._problems(config.plugins or {}, config.lines)
        policies, rule_problems = self._read_policies(config.policies, config.lines)
        problems += rule_problems
        if problems:
            raise ConfigError(config.source, sorted(problems, key=line_of))
        self.options = options
        return attrs.evolve(config, policies=policies)

    def preflight_problems(self, config: Config) -> list[str]:
        """What the plugins' `pgwarden_validate` finds wrong with ``config`` (a validated one),
        at its lines: `check` and start-up report it, a reload does not ask."""
        problems: list[str] = []
        for name, call in self._each("pgwarden_validate"):
            try:
                answers = call(options=self.options.get(name), sections=self.sections_for(name, config))
            except Exception as e:
                problems.append(f"plugin {name!r} failed in pgwarden_validate: {e!r}")
                continue
            for answer in answers:
                for problem in answer or ():
                    if isinstance(problem, ConfigProblem):
                        problems.append(located(config.lines, tuple(problem.path), problem.message))
                    else:
                        problems.append(f"plugin {name!r}: {problem}")
        return problems

    def document_problems(self, data: dict, source: str, lines: Mapping[tuple, int]) -> list[str]:
        """What `validate` would say of a config file that did not structure (its raw mapping),
        so that `pgwarden check` reports these problems together with the file's others."""
        section = data.get("plugins")
        _, problems = self._problems(section if isinstance(section, dict) else {}, lines)
        for path, kind, spec in _document_rules(data.get("policies")):
            if kind == "default":
                problems += self._default_block(path, lines)
            else:
                problems += self._read_rule(path, kind, spec, lines)[1]
        return problems

    @property
    def authenticates(self) -> bool:
        """Whether any loaded plugin can let a client in (else no session could start)."""
        return bool(self._impls("pgwarden_authenticate"))

    def no_authenticator(self) -> str:
        """Why no session could start, naming the plugins switched off."""
        return NO_AUTHENTICATOR + (f"; disabled: {', '.join(sorted(self.disabled))}" if self.disabled else "")

    def _problems(self, section: dict, lines: Mapping[tuple, int]) -> tuple[dict[str, object], list[str]]:
        """The options of each plugin, and every problem of the ``plugins:`` section."""
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
        options: dict[str, object] = {}
        for name, call in self._each("pgwarden_options"):
            classes = [cls for cls in call() if cls is not None]
            if not classes:
                continue
            try:
                options[name] = structure_section(section.get(name) or {}, classes[0], ("plugins", name),
                                                  lines=lines)
            except ConfigError as e:
                problems.extend(e.problems)
        return options, problems

    def read_policies(self, policies: tuple[Policy, ...], source: str = "<policies>") -> tuple[Policy, ...]:
        """``policies`` (structured, from a file or built in code) with their rules read by the
        kinds the loaded plugins declare; ConfigError listing every problem."""
        read, problems = self._read_policies(policies, {})
        if problems:
            raise ConfigError(source, problems)
        return read

    def _read_policies(self, policies: tuple[Policy, ...],
                       lines: Mapping[tuple, int]) -> tuple[tuple[Policy, ...], list[str]]:
        """The policies with every rule's options read by its kind, and the problems."""
        problems: list[str] = []
        read: list[Policy] = []
        for i, policy in enumerate(policies):
            if policy.default == "block":
                problems += self._default_block(("policies", i, "default"), lines)
            rules: list[Rule] = []
            for j, rule in enumerate(policy.rules):
                spec, found = self._read_rule(("policies", i, "rules", j), rule.kind, rule.spec, lines)
                problems += found
                rules.append(attrs.evolve(rule, spec=spec))
            read.append(attrs.evolve(policy, rules=tuple(rules)))
        return tuple(read), problems

    def _default_block(self, path: tuple, lines: Mapping[tuple, int]) -> list[str]:
        if BLOCK.name in self._claims:
            return []
        # nothing would enforce it: refuse rather than silently allow
        return [located(lines, path, "'block' needs a plugin that interprets block rules; none is loaded")]

    def _read_rule(self, path: tuple, kind_name: str, spec: object,
                   lines: Mapping[tuple, int]) -> tuple[object, list[str]]:
        """One rule's options, read with the schema of its kind (once: a rule read is kept);
        and its problems, those of its options first."""
        problems: list[str] = []
        kind = self._kinds.get(kind_name)
        if kind is not None and isinstance(spec, Unread):  # an unknown kind is said below
            try:
                spec = structure_section(spec.data, kind.options, path + (kind_name,), lines=lines)
            except ConfigError as e:
                problems += e.problems
        if kind_name not in self._claims:
            interpreted = sorted(self._claims)
            problems.append(located(
                lines, path, f"rule kind {kind_name!r} is interpreted by no loaded plugin"
                + (did_you_mean(kind_name, interpreted + list(RULE_KEYS)) if kind is None else "")
                + (f" (loaded rule kinds: {', '.join(interpreted)})" if interpreted else "")))
        return spec, problems

    def configure(self, config: Config) -> None:
        """Hands each plugin its own options and sections (start-up and reload); a ConfigError
        (with the lines of the problems) when one cannot apply them."""
        detectors = self.detectors()
        for name, call in self._each("pgwarden_configure"):
            try:
                call(options=self.options.get(name), sections=self.sections_for(name, config), reactor=self.reactor,
                     detectors=detectors)
            except ConfigProblem as e:
                raise ConfigError(config.source, [located(config.lines, tuple(e.path), e.message)]) from None
            except ExceptionGroup as group:
                matched, rest = group.split(ConfigProblem)
                if rest is not None or matched is None:
                    raise
                raise ConfigError(config.source, [located(config.lines, tuple(p.path), p.message)
                                                  for p in _problems_in(matched)]) from None
        # Checkers that only read their own rules count only when the policies have such rules.
        kinds = {rule.kind for policy in config.policies for rule in policy.rules}
        self.checks = any(name not in self._rules_only or self._claimed_by(name) & kinds
                          for name, _ in self._checkers)
        self.follows = self.checks or self._masking(kinds)
        self._recording = {name for hook in ("pgwarden_records", "pgwarden_record") for name, _ in self._each(hook)}
        for name, call in self._each("pgwarden_records_wanted"):
            if any(answer is False for answer in call()):
                self._recording.discard(name)

    # ------------------------------------------------------------------ records

    def record_takers(self) -> list[tuple[str, Callable[..., object]]]:
        """(plugin name, ``take(records=...)``) of each plugin that wants records now, in batches."""
        return [(name, call) for name, call in self._each("pgwarden_records") if name in self._recording]

    def record_writers(self) -> list[tuple[str, Callable[..., object]]]:
        """(plugin name, ``write(record=...)``) of each plugin that wants records now one by one
        (``pgwarden_record``, deprecated)."""
        batched = {name for name, _ in self._each("pgwarden_records")}
        return [(name, call) for name, call in self._each("pgwarden_record")
                if name in self._recording and name not in batched]

    def record_flushers(self) -> list[tuple[str, Callable[[], list[str]]]]:
        """(plugin name, ``flush() -> problems``) of each plugin that wants records now."""
        return [(name, call.problems) for name, call in self._each("pgwarden_records_flush")
                if name in self._recording]

    # ------------------------------------------------------------------ decisions

    def check(self, statement: Statement, session: Session) -> Verdict | Deferred[Verdict]:
        """The strictest verdict of all plugins: a Verdict, or a Deferred of one.

        Each plugin is called through pluggy on its own (`PluginCall`), so that a
        failure is blocked in that plugin's name; a plugin answering a Verdict at once
        costs one pluggy call and no Deferred. (`Checkers.check`, compiled: the decision
        calls ``checkers.check`` directly.)
        """
        return self.checkers.check(statement, session)

    def _claimed_by(self, name: str) -> set[str]:
        """The rule kinds plugin ``name`` interprets."""
        return {kind for kind, names in self._claims.items() if name in names}

    def _checkers_for_policies(self, policies: tuple[Policy, ...]) -> tuple[tuple[Policy, ...], list]:
        """The checkers to call for sessions under ``policies`` (memoised; the entry keeps the
        tuple alive, so its id is not reused meanwhile)."""
        kinds = {rule.kind for policy in policies for rule in policy.rules}
        checkers = [(name, call) for name, call in self._checkers
                    if name not in self._rules_only or self._claimed_by(name) & kinds]
        if len(self._checkers_for) > 1000:
            self._checkers_for.clear()
        known = self._checkers_for[id(policies)] = (policies, checkers)
        return known

    def _settle(self, name: str, answer: object) -> Verdict | Deferred[Verdict | None] | None:
        """A plugin's answer that is not a Verdict: None, a Deferred or a coroutine (a Verdict
        within ``timeout_s``, else blocked in the plugin's name), or nonsense (blocked)."""
        if answer is None or isinstance(answer, Verdict):
            return answer
        waiting = later(answer)
        if not isinstance(waiting, Deferred):
            return _blocked(name, f"answered {type(answer).__name__}, not a Verdict")
        if self.reactor is not None:  # None: `pgwarden explain`, which takes only what is there at once
            waiting.addTimeout(self.timeout_s, self.reactor)
        waiting.addCallback(lambda v: v if v is None or isinstance(v, Verdict) else _blocked(name, f"answered {v!r}"))
        waiting.addErrback(lambda failure: self._failed(name, failure))
        return waiting

    def _failed(self, name: str, failure: Failure) -> Verdict:
        if failure.check(defer.TimeoutError):
            log.error("plugin {plugin} did not answer within {t}s", plugin=name, t=self.timeout_s)
            return _blocked(name, f"did not answer within {self.timeout_s:g}s")
        log.failure("plugin {plugin} failed", failure=failure, plugin=name)
        return _blocked(name, "failed")

    def authenticate(self, startup: StartupMessage, secret: str) -> object:
        """The first plugin's answer (an Identity, a Deferred of one, or None); raises
        AuthenticationFailed, naming the plugin when one failed otherwise."""
        try:
            answer = self._authenticate(startup=startup, secret=secret)
        except AuthenticationFailed:
            raise
        except Exception as e:
            name = self._culprit("pgwarden_authenticate", e, "?")
            log.failure("authentication plugin {plugin} failed", plugin=name)
            raise AuthenticationFailed(f"authentication plugin {name!r} failed: {e!r}") from None
        return later(answer)

    def approval(self, request: object, session: Session) -> Deferred[object] | None:
        """The approval store's answer as a Deferred (an `ApprovalAnswer`, or a `Verdict` from a
        plugin of contract 1.0), or None when no plugin keeps approvals. Raises what the plugin raised."""
        answer = later(self._approve(request=request, session=session))
        return answer if answer is None or isinstance(answer, Deferred) else succeed(answer)

    # ------------------------------------------------------------------ the admin port

    def admin_resources(self, taken: Iterable[str]) -> dict[str, object]:
        """Path segment -> twisted.web resource, of every plugin; a PluginError when two
        want the same segment or one of ``taken``."""
        found: dict[str, object] = {}
        owners: dict[str, str] = {name: "pgwarden" for name in taken}
        for name, call in self._each("pgwarden_admin_resources"):
            for answer in call():
                for segment, resource in (answer or {}).items():
                    if segment in owners:
                        raise PluginError(f"plugin {name!r} serves /{segment} on the admin port, "
                                          f"which {owners[segment]} serves")
                    owners[segment] = repr(name)
                    found[segment] = resource
        return found

    def readiness(self) -> list[str]:
        """What the plugins say keeps pgwarden from serving (/readyz); a plugin that fails to
        answer is one such problem."""
        problems: list[str] = []
        for name, call in self._each("pgwarden_readiness"):
            try:
                for answer in call():
                    problems += answer or ()
            except Exception as e:
                log.failure("plugin {plugin} failed in pgwarden_readiness", plugin=self._culprit(
                    "pgwarden_readiness", e, name))
                problems.append(f"plugin {name!r} could not say whether it is ready")
        return problems

    @property
    def masks(self) -> bool:
        """Whether any plugin masks results (else rows pass untouched)."""
        return bool(self._impls("pgwarden_result_masks"))

    def maskers(self, policies: tuple[Policy, ...]) -> _Maskers:
        """The result and message maskers to call for sessions under ``policies``: all of them
        but those that mask only by rule kinds the policies do not have (memoised per tuple, as
        `_checkers_for_policies`; the entry keeps the tuple alive, so its id is not reused)."""
        known = self._maskers_for.get(id(policies))
        if known is not None and known.policies is policies:
            return known
        kinds = {rule.kind for policy in policies for rule in policy.rules}

        def wanted(hook_name: str) -> list[tuple[str, Call]]:
            return [(name, call) for name, call in self._each(hook_name)
                    if name not in self._masks_only or self._claimed_by(name) & kinds]

        found = _Maskers(policies, wanted("pgwarden_result_masks"), wanted("pgwarden_message_masks"))
        if len(self._maskers_for) > 1000:
            self._maskers_for.clear()
        self._maskers_for[id(policies)] = found
        return found

    def _masking(self, kinds: set[str] | None) -> bool:
        """Whether a result masker may mask under policies with rules of ``kinds`` (None: any)."""
        return any(name not in self._masks_only or kinds is None or self._claimed_by(name) & kinds
                   for name, _ in self._each("pgwarden_result_masks"))

    @property
    def masks_messages(self) -> bool:
        """Whether any plugin rewrites the text of errors and notices."""
        return bool(self._impls("pgwarden_message_masks"))

    def masking_refusals(self, statement: Statement, session: Session) -> list[tuple[str, Verdict]]:
        """What each masking plugin's own ``pgwarden_check`` refuses (oracles, ``unknown: refuse``,
        ...), each on its own: `check` gives only the strictest verdict of all plugins, which may
        be another plugin's. For `pgwarden explain`; an answer that is not there at once is left out."""
        maskers = {name for name, _ in self._each("pgwarden_result_masks")}
        refusals: list[tuple[str, Verdict]] = []
        for name, call in self._each("pgwarden_check"):
            if name not in maskers:
                continue
            try:
                got = call(statement=statement, session=session)
            except Exception as e:
                refusals.append((name, self._failed(self._culprit("pgwarden_check", e, name), Failure())))
                continue
            for answer in got:
                settled = self._settle(name, answer)
                if isinstance(settled, Verdict) and settled.action != "allow":
                    refusals.append((name, settled))
        return refusals

    def result_masks(self, result: ResultShape, statement: Statement | None, session: Session) -> dict[int, ColumnMask]:
        """Column index -> the strictest mask of every plugin; `MaskingFailed` naming the plugin
        that raised or answered nonsense (the core then refuses the result)."""
        answers: list[tuple[str, object]] = []
        for name, call in self.maskers(session.policies).results:
            try:
                got = call(result=result, statement=statement, session=session, shape=result.description)
            except Exception as e:
                culprit = self._culprit("pgwarden_result_masks", e, name)
                log.failure("plugin {plugin} failed in pgwarden_result_masks", plugin=culprit)
                raise MaskingFailed(culprit, repr(e)) from e
            for answer in got:
                if answer is not None and not isinstance(answer, Mapping):
                    raise MaskingFailed(name, f"answered {type(answer).__name__}, not a mapping of column masks")
                answers.append((name, answer))
        return compose(answers, len(result.description.columns))  # type: ignore[arg-type]

    def message_masks(self, statement: Statement | None, session: Session) -> list[MessageMask]:
        """The rewrites plugins ask for a statement's errors and notices."""
        found: list[MessageMask] = []
        for name, call in self.maskers(session.policies).messages:
            try:
                got = call(statement=statement, session=session)
            except Exception as e:
                raise MaskingFailed(self._culprit("pgwarden_message_masks", e, name), repr(e)) from e
            found.extend(f for f in got if f is not None)
        return found

    def detectors(self) -> dict[str, Detector]:
        """Every detector plugins add, by the name rules use (``<plugin>.<name>``)."""
        found: dict[str, Detector] = {}
        for name, call in self._each("pgwarden_mask_detectors"):
            for answer in call():
                for detector in answer or ():
                    if not isinstance(detector, Detector):
                        raise PluginError(f"plugin {name!r}: pgwarden_mask_detectors answered {detector!r}, "
                                          "not a pgwarden.api.Detector")
                    found[f"{name}.{detector.name}"] = detector
        return found

    # ------------------------------------------------------------------ listing

    def loaded(self) -> list[LoadedPlugin]:
        out = []
        for name, plugin in self.pm.list_name_plugin():
            hooks = tuple(sorted(h.name for h in self.pm.get_hookcallers(plugin) or ()))
            version, source = self._versions.get(name, (None, "inline"))
            kinds = tuple(sorted(k for k, names in self._claims.items() if name in names))
            out.append(LoadedPlugin(name, version, source, hooks, kinds, tuple(self._warnings.get(name, ()))))
        return sorted(out, key=lambda p: p.name)


@attrs.frozen(eq=False)
class _Maskers:
    """The masking plugins to call for sessions under one tuple of policies."""

    policies: tuple[Policy, ...]
    #: (plugin name, caller) of ``pgwarden_result_masks``
    results: list[tuple[str, Call]]
    #: (plugin name, caller) of ``pgwarden_message_masks``
    messages: list[tuple[str, Call]]


def later(answer: object) -> object:
    """A hook's answer, with a coroutine (an ``async def`` implementation) run as a Deferred."""
    if inspect.iscoroutine(answer):
        return Deferred.fromCoroutine(answer)
    return answer


def _blocked(plugin_name: str, why: str) -> Verdict:
    return Verdict.block(
        f"plugin {plugin_name!r} {why}",
        "This is pgwarden's fault, not the statement's: retry later or ask an operator.",
        rule=f"plugin:{plugin_name}",
    )


def _problems_in(group: BaseExceptionGroup) -> Iterable[ConfigProblem]:
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _problems_in(e)
        elif isinstance(e, ConfigProblem):
            yield e


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


def _document_rules(policies) -> Iterable[tuple[tuple, str, Unread]]:
    """(path, kind, options) of each rule of a file whose policies did not structure, read
    from its own mapping (a rule naming no kind or two is reported by structuring); and
    (path, "default", ...) for each ``default: block``."""
    for i, policy in enumerate(policies if isinstance(policies, list) else ()):
        if not isinstance(policy, dict):
            continue
        if policy.get("default") == "block":
            yield ("policies", i, "default"), "default", Unread(None)
        rules = policy.get("rules")
        for j, rule in enumerate(rules if isinstance(rules, list) else ()):
            if isinstance(rule, dict):
                kinds = [k for k in rule if k not in RULE_KEYS]
                if len(kinds) == 1:
                    yield ("policies", i, "rules", j), str(kinds[0]), Unread(rule[kinds[0]])
