"""The configuration file: frozen attrs classes, structured by one cattrs converter.

Loaded in one place (`load_config`) and handed around as an instance; nothing
reads a file or the environment at import time. Unknown keys are errors, every
problem is reported at once with its path (and line, where YAML gives one), and
secrets never appear in a repr.
"""

from __future__ import annotations

import difflib
import functools
import operator
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import yaml
from cattrs.errors import (
    AttributeValidationNote,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
)
from cattrs.gen import make_dict_structure_fn, override

from pgwarden.policy.model import (
    MASK_STRATEGIES,
    RULE_KEYS,
    ApproveMatch,
    LimitSpec,
    MaskSpec,
    Mode,
    Partial,
    PartialMask,
    Policy,
    Rule,
    StatementMatch,
    Unread,
    When,
)


class ConfigError(Exception):
    """The file cannot be used; ``problems`` lists each one, with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def __str__(self) -> str:
        return "\n".join(f"{self.source}: {p}" for p in self.problems)


def _positive(_inst, attribute, value) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_negative(_inst, attribute, value) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be zero or more, got {value}")


def _delay_ms(_inst, attribute, value) -> None:
    # Records waiting this long are lost if pgwarden is killed: a second is already a lot.
    if not 0 <= value <= 1000:
        raise ValueError(f"{attribute.name} must be between 0 and 1000 (milliseconds), got {value}")


def _port(_inst, attribute, value) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a TCP port (0-65535), got {value}")


@attrs.frozen
class ListenTLS:
    cert_file: str
    key_file: str


@attrs.frozen
class Listen:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=5432, validator=_port)
    tls: ListenTLS | None = None
    # A token sent in clear text over a network is a stolen token: refused
    # unless the socket is loopback, TLS is on, or this says otherwise.
    allow_cleartext_remote: bool = False


@attrs.frozen
class UpstreamTLS:
    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "disable"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.mode.startswith("verify-") and not self.ca_file:
            raise ValueError(f"expected ca_file with mode {self.mode} (it verifies the server against that CA)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("expected both cert_file and key_file for a client certificate, or neither")


@attrs.frozen
class Upstream:
    host: str
    database: str
    user: str
    port: int = attrs.field(default=5432, validator=_port)
    password_file: str | None = None
    tls: UpstreamTLS = UpstreamTLS()
    connect_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    # The upstream session's application_name: {subject} and {client} (the
    # client's own application_name, or nothing) are filled in.
    application_name: str = "pgwarden:{subject}"

    def read_password(self) -> str | None:
        """Read at each connection, so a rotated Secret takes effect without a restart."""
        if self.password_file is None:
            return None
        return Path(self.password_file).read_text().rstrip("\r\n")


@attrs.frozen
class JwtAuth:
    issuer: str
    audience: str
    jwks_file: str | None = None
    public_key_file: str | None = None
    jwks_url: str | None = None
    # or none of the three and discovery: true (keys from the issuer's OIDC discovery document)
    discovery: bool = False
    identity_claim: str = "sub"
    groups_claim: str = "groups"
    leeway_s: float = attrs.field(default=30.0, validator=_non_negative)
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    keys_cache_s: float = attrs.field(default=300.0, validator=_positive)
    keys_refresh_interval_s: float = attrs.field(default=30.0, validator=_positive)
    keys_keep_last_good_s: float = attrs.field(default=3600.0, validator=_positive)
    # A fetch of the keys: connecting, the whole exchange, and the largest body taken.
    keys_connect_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    keys_timeout_s: float = attrs.field(default=10.0, validator=_positive)
    keys_max_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)
    # Fetching keys over HTTPS: the CA to trust (else the system's), and a bearer token to present
    # (Kubernetes serves its discovery document to service accounts: the pod's API token).
    ca_file: str | None = None
    bearer_token_file: str | None = None

    def __attrs_post_init__(self) -> None:
        sources = [s for s in (self.jwks_file, self.public_key_file, self.jwks_url, self.discovery) if s]
        if len(sources) != 1:
            raise ValueError("give exactly one of jwks_file, public_key_file, jwks_url or discovery: true")
        for alg in self.algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is not allowed for tokens (use RS*, PS*, ES*, EdDSA)")


@attrs.frozen
class Auth:
    # The settings of the built-in plugin `jwt`, which declares it needs them: another
    # authenticator (a plugin) may take its place, and then this may be left out.
    jwt: JwtAuth | None = None
    # token: the client's password is its token. pod: connections over loopback take the identity of
    # the pod's own projected service-account token (pod_token_file); no password is asked.
    mode: Literal["token", "pod"] = "token"
    pod_token_file: str = "/var/run/secrets/pgwarden-token/token"
    startup_timeout_s: float = attrs.field(default=15.0, validator=_positive)
    # By default a session ends when its token expires; true lets it run on.
    session_outlives_token: bool = False


@attrs.frozen
class Admin:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=9187, validator=_port)
    # /readyz opens a TCP connection to the database; how long it may take.
    probe_timeout_s: float = attrs.field(default=1.0, validator=_positive)


@attrs.frozen
class Shutdown:
    # On SIGTERM: statements running may finish for this long; then sessions end with 57P01.
    grace_s: float = attrs.field(default=20.0, validator=_non_negative)


@attrs.frozen
class Limits:
    max_message_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    # Client messages held back while a verdict is pending before reading pauses.
    max_backlog_bytes: int = attrs.field(default=4 * 1024 * 1024, validator=_positive)


@attrs.frozen
class CatalogSection:
    """The catalog facts the analysis decides by (docs/catalog.md)."""

    # Read them from the upstream over pgwarden's own connection; off: the shipped
    # snapshot of the built-in catalog only (user functions and operators are unknown).
    live: bool = True
    ttl_s: float = attrs.field(default=60.0, validator=_positive)
    max_stale_s: float = attrs.field(default=300.0, validator=_positive)
    # How often a cheap query asks whether the catalog changed (DDL by clients that do not go
    # through pgwarden); None: only the TTL reads it.
    check_s: float | None = attrs.field(default=2.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.max_stale_s <= self.ttl_s:
            raise ValueError(f"max_stale_s ({self.max_stale_s}) must be longer than ttl_s ({self.ttl_s})")


def _store_schema(_inst, attribute, value) -> None:
    # The schema's name is also the NOTIFY channel's: a plain lower-case identifier of at most
    # 63 bytes (NAMEDATALEN) means the same in every quoting and is never cut.
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        raise ValueError(f"expected {attribute.name} to be a lower-case SQL identifier of at most 63 characters "
                         f"(letters, digits, _), got {value!r}")


@attrs.frozen
class ApprovalsPostgres:
    """Where the `postgres` approval store lives: any database the sidecars (and the inbox) reach.

    The credential is ``password_file`` (read at each connection, so a rotated Secret is
    used without a restart) or a password inside the DSN; neither appears in a repr, an
    error, a log line, a record or a metric.
    """

    # libpq connection string or URI (postgresql://user@host/db?sslmode=verify-full&...)
    dsn: str | None = attrs.field(default=None, repr=False)
    # or a file holding it (a Secret), read at each connection
    dsn_file: str | None = None
    password_file: str | None = None
    schema: str = attrs.field(default="pgwarden_approvals", validator=_store_schema)
    connect_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    # each query of the store; the store counts as unreachable when one takes longer
    statement_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    # reconnecting after a loss: the first wait, doubled up to the longest
    retry_s: float = attrs.field(default=0.5, validator=_positive)
    max_retry_s: float = attrs.field(default=15.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if (self.dsn is None) == (self.dsn_file is None):
            raise ValueError("expected exactly one of dsn or dsn_file")


def _http_url(_inst, attribute, value) -> None:
    # A notification carries SQL and identities: an http(s) URL with a host, nothing else (no file:).
    from urllib.parse import urlsplit

    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        # Prefixed with the key: reported at that key and its line (`_leaves`).
        raise ValueError(f"{attribute.name}: expected an http:// or https:// URL with a host, got {value!r}")


def _mcp_url(_inst, attribute, value) -> None:
    # The audience tokens must carry (RFC 8707) and the resource the metadata names (RFC 9728):
    # an absolute http(s) URL, no query or fragment (RFC 9728 forbids a fragment in a resource).
    from urllib.parse import urlsplit

    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ValueError(f"{attribute.name}: expected the endpoint's public http:// or https:// URL with a host and "
                         f"no query or fragment (tokens are bound to it), got {value!r}")


def _origins(_inst, attribute, value) -> None:
    from urllib.parse import urlsplit

    for origin in value:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ValueError(f"{attribute.name}: expected origins like https://app.example or "
                             f"http://localhost:3000 (scheme, host, optional port), got {origin!r}")


@attrs.frozen
class Mcp:
    """The MCP endpoint (`pgwarden.mcp`): Streamable HTTP on a port of its own."""

    #: the endpoint's public URL: tokens must name it as their audience, and the protected
    #: resource metadata names it as the resource
    url: str = attrs.field(validator=_mcp_url)
    host: str = "127.0.0.1"
    port: int = attrs.field(default=9188, validator=_port)
    # Browsers send Origin: a request with one not listed is refused (DNS rebinding). Requests
    # without Origin (agents, CLIs) are let through to the token check.
    allowed_origins: tuple[str, ...] = attrs.field(default=(), validator=_origins)
    # The authorization servers the metadata names (default: auth.jwt.issuer).
    authorization_servers: tuple[str, ...] = ()
    # Bounds of a `query` call, below the policy's own caps.
    max_rows: int = attrs.field(default=1000, validator=_positive)
    max_timeout_ms: int = attrs.field(default=60_000, validator=_positive)
    # A session per identity is kept open this long after its last call.
    idle_s: float = attrs.field(default=300.0, validator=_positive)
    max_body_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)


@attrs.frozen
class WebhookNotify:
    """POSTs each new approval request as JSON (`pgwarden_plugins.approve.notify`)."""

    webhook: str = attrs.field(validator=_http_url, repr=False)  # may carry a token: never shown
    # The whole exchange: a receiver slower than this counts as a failure; nothing waits for it.
    timeout_s: float = attrs.field(default=5.0, validator=_positive)

    @property
    def name(self) -> str:
        return "webhook"


@attrs.frozen
class SlackNotify:
    """POSTs a Slack-compatible Block Kit message to an incoming-webhook URL."""

    slack: str = attrs.field(validator=_http_url, repr=False)  # the URL is the credential: never shown
    timeout_s: float = attrs.field(default=5.0, validator=_positive)

    @property
    def name(self) -> str:
        return "slack"


Notify = WebhookNotify | SlackNotify


@attrs.frozen
class Approvals:
    """How statements that need approval wait, where requests are kept, and who may decide
    (docs/approvals.md)."""

    # hold: the statement waits on the wire; retry: refused at once, passes when sent again once
    # approved (for agents whose tool calls time out). An approve rule may say otherwise (`mode`).
    mode: Literal["hold", "retry"] = "hold"
    # How long a request waits for a decision (hold: the statement waits that long at most).
    timeout_s: float = attrs.field(default=300.0, validator=_positive)
    store: Literal["memory", "postgres"] = "memory"
    # Groups (from the approver's token) whose members may decide; none: nobody can.
    approver_groups: tuple[str, ...] = ()
    # Who is told when a request starts waiting: [{webhook: URL}, {slack: URL}] (docs/approvals.md).
    notify: tuple[Notify, ...] = ()
    # A reason is always required to deny; this requires one to approve too.
    reason_on_approve: bool = False
    # The longest window a retry-mode grant may give.
    max_grant_minutes: int = attrs.field(default=60, validator=_positive)
    # Where approvers find the inbox (behind their authenticating proxy), named in the notice a held
    # client gets and linked from notifications.
    inbox_url: str | None = attrs.field(default=None, validator=attrs.validators.optional(_http_url))
    # The impact preview (EXPLAIN, never ANALYZE, on pgwarden's own connection), and its time limit.
    preview: bool = True
    preview_timeout_s: float = attrs.field(default=5.0, validator=_positive)
    # the `postgres` store's database (required with store: postgres)
    postgres: ApprovalsPostgres | None = None

    def __attrs_post_init__(self) -> None:
        if self.store == "postgres" and self.postgres is None:
            raise ValueError("expected a postgres: {dsn or dsn_file, password_file, schema} section "
                             "with store: postgres")


@attrs.frozen
class RecordingResults:
    # The first rows of each result as the agent received them (after masks); 0: none.
    max_rows: int = attrs.field(default=0, validator=_non_negative)
    max_bytes: int = attrs.field(default=8192, validator=_non_negative)


@attrs.frozen
class StdoutSink:
    """Records as JSON lines on standard output (`kubectl logs -c pgwarden -f | jq`)."""

    stdout: bool = True
    # closed: a failed write refuses statements; open: it is logged and counted, statements go on.
    on_error: Literal["closed", "open"] = "closed"

    @property
    def name(self) -> str:
        return "stdout"


@attrs.frozen
class FileSink:
    """Records appended to a file, rotated by size; the hash chain continues across files."""

    file: str
    max_bytes: int = attrs.field(default=100 * 1024 * 1024, validator=_positive)
    keep: int = attrs.field(default=5, validator=_non_negative)  # rotated files kept besides the live one
    fsync_s: float = attrs.field(default=1.0, validator=_non_negative)  # 0: fsync every write
    on_error: Literal["closed", "open"] = "closed"

    @property
    def name(self) -> str:
        return f"file:{self.file}"


Sink = StdoutSink | FileSink


def _distinct_sinks(_inst, attribute, value) -> None:
    # Two sinks writing to one stream would interleave two hash chains that `verify` cannot follow.
    where: dict[str, int] = {}
    for i, sink in enumerate(value):
        target = os.path.abspath(sink.file) if isinstance(sink, FileSink) else "standard output"
        if target in where:
            raise ValueError(f"sinks[{i}] writes to {target}, as sinks[{where[target]}] does: "
                             "expected each sink to write somewhere of its own")
        where[target] = i


@attrs.frozen
class Recording:
    sinks: tuple[Sink, ...] = attrs.field(default=(StdoutSink(),), validator=_distinct_sinks)
    results: RecordingResults = RecordingResults()
    # Bind parameters of each execution, each cut at this many bytes; 0: not recorded.
    max_parameter_bytes: int = attrs.field(default=1024, validator=_non_negative)
    # Records without a verdict (result, session_start, session_end) may wait this long for a
    # write (docs/records.md); 0: every record is written at the end of its own turn.
    results_delay_ms: float = attrs.field(default=10.0, validator=_delay_ms)


@attrs.frozen
class Config:
    upstream: Upstream
    auth: Auth
    listen: Listen = Listen()
    admin: Admin = Admin()
    limits: Limits = Limits()
    catalog: CatalogSection = CatalogSection()
    shutdown: Shutdown = Shutdown()
    approvals: Approvals = Approvals()
    recording: Recording = Recording()
    mcp: Mcp | None = None
    # `disable`, `timeout_s`, and each plugin's own options (validated by the plugin host).
    plugins: dict[str, Any] | None = None
    policies: tuple[Policy, ...] = ()
    #: where it was read from, and the line of each key path in it; set by the loader
    source: str = attrs.field(default="<config>", metadata={"internal": True})
    lines: Mapping[tuple, int] = attrs.field(factory=dict, eq=False, repr=False, metadata={"internal": True})


def _mask_spec(value):
    """A mask rule; ``with`` is a strategy's name, or the design card's mapping form
    (``{partial: {keep_last: 4}}``, ``{fixed: "n/a"}``) read into the flat one."""
    if isinstance(value, dict) and isinstance(value.get("with"), dict):
        given = value["with"]
        value = {k: v for k, v in value.items() if k != "with"}
        if set(given) == {"partial"} and isinstance(given["partial"], dict):
            value["with"] = "partial"
            value.update(attrs.asdict(_CONVERTER.structure(given, PartialMask).partial))
        elif set(given) == {"fixed"}:
            value["with"], value["value"] = "fixed", given["fixed"]
        else:
            raise ValueError(f"with: expected one of {', '.join(MASK_STRATEGIES)} (or {{partial: {{keep_last: N}}}}, "
                             f"{{fixed: VALUE}}), got {given!r}")
    return value


def _sink(value, _type):
    if value == "stdout":
        return StdoutSink()
    if isinstance(value, dict) and "file" in value:
        return _CONVERTER.structure(value, FileSink)
    if isinstance(value, dict) and "stdout" in value:
        return _CONVERTER.structure(value, StdoutSink)
    raise ValueError(f"expected stdout, {{stdout: true, on_error: open}} or {{file: PATH, ...}}, got {value!r}")


def _notify(value, _type):
    if isinstance(value, dict) and "webhook" in value:
        return _CONVERTER.structure(value, WebhookNotify)
    if isinstance(value, dict) and "slack" in value:
        return _CONVERTER.structure(value, SlackNotify)
    raise ValueError(f"expected {{webhook: URL}} or {{slack: URL}} (each may add timeout_s), got {value!r}")


def _str_or_mapping(value, _type):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    raise ValueError(f"expected a sink name or a mapping like {{file: PATH}}, got {value!r}")


@attrs.frozen
class _RuleKeys:
    """The keys every rule may have besides its kind."""

    name: str | None = None
    reason: str | None = None
    hint: str | None = None
    mode: Mode = "enforce"


def _rule(value, _type) -> Rule:
    """A rule: the keys of every rule, and one more, its kind, whose options are read later
    by the plugin host with the schema of that kind (the loaded plugins declare kinds)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected a rule, a mapping like {{name: ..., block: {{...}}}}, got {value!r}")
    kinds = [k for k in value if k not in RULE_KEYS]
    if len(kinds) != 1:
        misspelt = {k for k in kinds if nearest(str(k), RULE_KEYS)}
        if misspelt:  # `reasn: ...` beside `block: ...`: said as an unknown key, with what it was meant to be
            raise ForbiddenExtraKeysError("", _RuleKeys, misspelt)
        raise ValueError("expected exactly one rule kind (block, allow, approve, mask, limit or one a plugin "
                         "declares) besides name, reason, hint and mode; this one says "
                         + (", ".join(map(str, kinds)) if kinds else "none"))
    keys = _CONVERTER.structure({k: v for k, v in value.items() if k in RULE_KEYS}, _RuleKeys)
    kind = kinds[0]
    return Rule(str(kind), Unread(value[kind]), keys.name, keys.reason, keys.hint, keys.mode)


def _mapping_of(cls: type, structure):
    """``structure`` (cattrs' of an attrs class) after a check that the value is a mapping: a
    list or a word where keys belong (``upstream: [db, 5432]``) is said as such, with the keys
    the section takes (cattrs' own error there is an AttributeError's text)."""
    def structure_mapping(value, t):
        if not isinstance(value, Mapping):
            found = "a list" if isinstance(value, list) else f"{value!r}"
            raise ValueError(f"expected a mapping of {', '.join(_keys_of(cls))}, got {found}")
        return structure(value, t)
    return structure_mapping


def _listed(structure, what: str):
    """``structure`` (cattrs' of a ``tuple[X, ...]``) after a check that the value is a list: a
    word or a mapping would be taken item by item (``sinks: stdout`` as the sinks s, t, d, ...)."""
    def structure_list(value, t):
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {what}, got {value!r}")
        return structure(value, t)
    return structure_list


def _converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    # First: the structure functions made below take their fields' hooks as they are made
    # (before this, `when: {groups: ai-agents}` became the groups a, i, -, g, e, n, t, s)
    c.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _t: tuple(_strs(v)))
    c.register_structure_hook(str, structure_string)
    c.register_structure_hook_func(lambda t: t == (str | dict[str, str]), _str_or_mapping)
    c.register_structure_hook_func(lambda t: t == Sink, _sink)
    c.register_structure_hook_func(lambda t: t == Notify, _notify)
    c.register_structure_hook(Rule, _rule)
    for listed, what in ((tuple[Sink, ...], "sinks"), (tuple[Notify, ...], "notifications")):
        c.register_structure_hook_func(functools.partial(operator.eq, listed),
                                       _listed(c.get_structure_hook(listed), what))
    for cls in (ListenTLS, Listen, UpstreamTLS, Upstream, JwtAuth, Auth, Admin, Shutdown, Limits,
                ApprovalsPostgres, WebhookNotify, SlackNotify, Approvals, RecordingResults, StdoutSink, FileSink,
                Recording, Mcp, When, StatementMatch, ApproveMatch, Partial, PartialMask, LimitSpec, _RuleKeys, Policy):
        c.register_structure_hook(cls, _mapping_of(cls, make_dict_structure_fn(cls, c, _cattrs_forbid_extra_keys=True)))
    flat = make_dict_structure_fn(MaskSpec, c, _cattrs_forbid_extra_keys=True, with_=override(rename="with"))
    c.register_structure_hook(MaskSpec, lambda value, t: flat(_mask_spec(value), t))
    c.register_structure_hook(
        Config,
        make_dict_structure_fn(Config, c, _cattrs_forbid_extra_keys=True, source=override(omit=True),
                               lines=override(omit=True)),
    )
    return c


def structure_string(v, _t=None) -> str:
    """A string, or a number written where one belongs (``user: 1234``). A list, a mapping or a
    YAML boolean (``yes``, ``on``) is a mistake, never its text (``subject: [agent-*]`` had become
    the glob ``['agent-*']``)."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise ValueError(f"expected a string, got {v!r}")


def _strs(v):
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list of strings, got {v!r}")
    for item in v:
        if not isinstance(item, str):
            raise ValueError(f"expected a list of strings, got {v!r}")
    return v


_CONVERTER = _converter()


def line_index(text: str) -> dict[tuple, int]:
    """Maps each key path of the YAML document to its line number."""
    index: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return index

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                p = path + (k.value,)
                index[p] = k.start_mark.line + 1
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                p = path + (i,)
                index[p] = v.start_mark.line + 1
                walk(v, p)

    if root is not None:
        walk(root, ())
    return index


def format_path(parts: tuple) -> str:
    """('policies', 0, 'rules', 2, 'mask') -> 'policies[0].rules[2].mask'."""
    pretty = ""
    for p in parts:
        pretty += f"[{p}]" if isinstance(p, int) else (f".{p}" if pretty else str(p))
    return pretty or "(top level)"


def located(lines: Mapping[tuple, int], parts: tuple, text: str) -> str:
    """One problem as it is reported: ``line N: path: what``; a key that is not in the file
    (a missing one) takes the line of the nearest enclosing key that is."""
    line = None
    for n in range(len(parts), 0, -1):
        line = lines.get(parts[:n])
        if line is not None:
            break
    return f"{'line ' + str(line) + ': ' if line else ''}{format_path(parts)}: {text}"


def line_of(problem: str) -> float:
    """The line a problem names, to list problems in file order (those with none last)."""
    head, _, _ = problem.partition(":")
    number = head.removeprefix("line ")
    return int(number) if head.startswith("line ") and number.isdigit() else float("inf")


def nearest(word: str, choices) -> str | None:
    """The choice ``word`` was probably meant to be (a misspelt key or name), or None."""
    found = difflib.get_close_matches(word, [str(c) for c in choices], n=1)
    return found[0] if found else None


def did_you_mean(word: str, choices) -> str:
    """'; did you mean `x`?' for a misspelt ``word``, or nothing when no choice is close."""
    guess = nearest(word, choices)
    return f"; did you mean `{guess}`?" if guess else ""


def _keys_of(cls: type) -> list[str]:
    """The keys a config class takes in a file: its fields as spelt in YAML (``with``, not
    ``with_``), without those set by the loader (``source``)."""
    return [a.name.rstrip("_") for a in attrs.fields(cls) if not a.metadata.get("internal")]


def _leaves(exc: BaseException, path: tuple = (), type_=None):
    """(path, exception, expected type) for each problem in a cattrs error tree.

    A class's own validator (it runs once every field is there) may name the field it
    is about, as ``ValueError("timezone: expected ...")``: the problem is then put at
    that key, and its line.
    """
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            key = note.name.rstrip("_") if isinstance(note, AttributeValidationNote) else note.index
            yield from _leaves(sub, path + (key,), note.type)
        for sub in without:
            field, _, rest = str(sub).partition(": ")
            if (isinstance(exc, ClassValidationError) and isinstance(sub, ValueError) and rest
                    and attrs.has(exc.cl) and field in _keys_of(exc.cl)):
                yield path + (field,), ValueError(rest), None
            else:
                yield from _leaves(sub, path, None)
    else:
        yield path, exc, type_


def _value_at(data: Any, parts: tuple) -> Any:
    for p in parts:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(exc: BaseException, type_, value: Any = None) -> str:
    """One problem in words: what was expected, and what was found when it helps."""
    args = typing.get_args(type_) if typing.get_origin(type_) is Literal else ()
    if not args and type(None) in typing.get_args(type_):  # an optional Literal
        args = tuple(a for t in typing.get_args(type_) if typing.get_origin(t) is Literal for a in typing.get_args(t))
    if args:
        text = "expected one of " + ", ".join(map(str, args))
        meant = did_you_mean(value, args) if isinstance(value, str) else ""
        return text + (f", got {value!r}{meant}" if meant else "")
    if isinstance(exc, (ValueError, TypeError)) and str(exc).startswith("expected "):
        return str(exc)
    if type_ is None and isinstance(exc, (ValueError, TypeError)) and str(exc):
        return f"invalid value: {exc}"
    return cattrs.v.format_exception(exc, type_)


def _problems(exc: Exception, lines: Mapping[tuple, int], data: Any = None, prefix: tuple = ()) -> list[str]:
    """Every problem of a cattrs error tree, each with its path and line.

    A misspelt key is reported once, at its own line, with the nearest key the class
    takes; the "required field missing" of the key it was meant to be is left out.
    """
    leaves = list(_leaves(exc))
    out: list[tuple[tuple, str]] = []
    meant: set[tuple] = set()
    for path, error, _type in leaves:
        if isinstance(error, ForbiddenExtraKeysError):
            keys = _keys_of(error.cl) if attrs.has(error.cl) else []
            for extra in sorted(error.extra_fields):
                guess = nearest(extra, keys)
                if guess is not None:
                    meant.add(path + (guess,))
                    text = f"unknown key; did you mean `{guess}`?"
                else:
                    text = "unknown key" + (f"; expected one of {', '.join(keys)}" if keys else "")
                out.append((path + (extra,), text))
    for path, error, type_ in leaves:
        if isinstance(error, ForbiddenExtraKeysError):
            continue
        if isinstance(error, KeyError) and path in meant:
            continue  # said with the misspelt key
        out.append((path, _describe(error, type_, _value_at(data, path))))
    ordered = sorted(enumerate(out), key=lambda item: (line_of(located(lines, prefix + item[1][0], "")), item[0]))
    return [located(lines, prefix + path, text) for _, (path, text) in ordered]


def parse_yaml(text: str, source: str, sections: str) -> dict:
    """The mapping a YAML document holds, or ConfigError. ``sections`` names the expected keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a mapping of sections ({sections})"])
    return data


def parse_document(text: str, source: str, cls: type, converter: cattrs.Converter, sections: str):
    """Structures a YAML document into ``cls`` with ``converter``, or raises ConfigError listing
    every problem with its path and line. ``sections`` names the expected top-level keys."""
    data = parse_yaml(text, source, sections)
    try:
        return converter.structure(data, cls)
    except Exception as e:  # cattrs raises ClassValidationError / ValueError groups
        raise ConfigError(source, _problems(e, line_index(text), data)) from None


def read_document(path: str | os.PathLike) -> tuple[str, str]:
    """The text of a config file and the name to report it by, or ConfigError."""
    p = Path(path)
    try:
        return p.read_text(), str(p)
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read the file: {e.strerror}"]) from None


def _document_problems(data: dict, lines: Mapping[tuple, int]) -> list[str]:
    """What the classes alone cannot see: a policy name used twice (records and verdicts name
    the policy, so two of one name could not be told apart)."""
    policies = data.get("policies")
    if not isinstance(policies, list):
        return []
    problems = []
    first: dict[str, int] = {}
    for i, policy in enumerate(policies):
        name = policy.get("name") if isinstance(policy, dict) else None
        if not isinstance(name, str):
            continue
        if name in first:
            problems.append(located(lines, ("policies", i, "name"),
                                    f"policy name {name!r} is taken by policies[{first[name]}]; "
                                    "expected each policy to have a name of its own"))
        else:
            first[name] = i
    return problems


def structure_config(data: dict, source: str = "<config>", lines: Mapping[tuple, int] | None = None) -> Config:
    """A Config from a mapping (as YAML gives), or ConfigError listing every problem at once.

    ``lines`` (key path -> line, from the YAML) puts line numbers on the problems.
    """
    lines = lines or {}
    problems = _document_problems(data, lines)
    try:
        config = _CONVERTER.structure(data, Config)
    except Exception as e:  # cattrs raises ClassValidationError / ValueError groups
        problems = _problems(e, lines, data) + problems
    if problems:
        raise ConfigError(source, sorted(problems, key=line_of))
    return attrs.evolve(config, source=source, lines=lines)


SECTIONS = "upstream:, auth:, listen:, policies:, plugins:, ..."


def parse_config(text: str, source: str = "<config>") -> Config:
    """Structures a YAML document into a Config, or raises ConfigError listing every problem."""
    return structure_config(parse_yaml(text, source, SECTIONS), source, line_index(text))


def structure_section(data: Any, cls: type, path: str | tuple, source: str = "<config>",
                      lines: Mapping[tuple, int] | None = None):
    """Structures one section (a plugin's options, a rule's) with the config's own rules.

    ``path`` is where the section is in the file (``plugins.business-hours``, or a key
    path like ``("policies", 0, "rules", 2, "hours")``), for the problems' paths and,
    with ``lines``, their line numbers.
    """
    parts = tuple(path.split(".")) if isinstance(path, str) else path
    if not isinstance(data, dict):
        raise ConfigError(source, [located(lines or {}, parts, f"expected a mapping, got {data!r}")])
    try:
        return _CONVERTER.structure(data, cls)
    except Exception as e:
        raise ConfigError(source, _problems(e, lines or {}, data, parts)) from None


def load_config(path: str | os.PathLike) -> Config:
    return parse_config(*read_document(path))
