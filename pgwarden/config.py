"""The configuration file: frozen attrs classes, structured by one cattrs converter.

Loaded in one place (`load_config`) and handed around as an instance; nothing
reads a file or the environment at import time. Unknown keys are errors, every
problem is reported at once with its path (and line, where YAML gives one), and
secrets never appear in a repr.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any, Literal

import attrs
import cattrs
import yaml
from cattrs.gen import make_dict_structure_fn, override

from pgwarden.policy.model import (
    LimitSpec,
    MaskSpec,
    MaskWith,
    Partial,
    PartialMask,
    Policy,
    Rule,
    StatementMatch,
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
    leeway_s: float = 30.0
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
    jwt: JwtAuth
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

    def __attrs_post_init__(self) -> None:
        if self.max_stale_s <= self.ttl_s:
            raise ValueError(f"max_stale_s ({self.max_stale_s}) must be longer than ttl_s ({self.ttl_s})")


@attrs.frozen
class Approvals:
    mode: Literal["hold", "retry"] = "hold"
    timeout_s: float = attrs.field(default=300.0, validator=_positive)
    store: Literal["memory", "postgres"] = "memory"
    approver_groups: tuple[str, ...] = ()
    notify: tuple[dict[str, str], ...] = ()


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
    # `disable`, `timeout_s`, and each plugin's own options (validated by the plugin host).
    plugins: dict[str, Any] | None = None
    policies: tuple[Policy, ...] = ()
    #: where it was read from; set by load_config
    source: str = "<config>"


def _mask_with(value, _type):
    choices = ("redact", "partial", "hash", "null")
    if isinstance(value, str) and value in ("redact", "hash", "null"):
        return value
    if isinstance(value, dict) and set(value) == {"partial"}:
        return _CONVERTER.structure(value, PartialMask)
    raise ValueError(f"expected one of {', '.join(choices)} (partial as {{partial: {{keep_last: N}}}}), got {value!r}")


def _sink(value, _type):
    if value == "stdout":
        return StdoutSink()
    if isinstance(value, dict) and "file" in value:
        return _CONVERTER.structure(value, FileSink)
    if isinstance(value, dict) and "stdout" in value:
        return _CONVERTER.structure(value, StdoutSink)
    raise ValueError(f"expected stdout, {{stdout: true, on_error: open}} or {{file: PATH, ...}}, got {value!r}")


def _str_or_mapping(value, _type):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    raise ValueError(f"expected a sink name or a mapping like {{file: PATH}}, got {value!r}")


def _converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    c.register_structure_hook_func(lambda t: t == MaskWith, _mask_with)
    c.register_structure_hook_func(lambda t: t == (str | dict[str, str]), _str_or_mapping)
    c.register_structure_hook_func(lambda t: t == Sink, _sink)
    for cls in (ListenTLS, Listen, UpstreamTLS, Upstream, JwtAuth, Auth, Admin, Shutdown, Limits,
                Approvals, RecordingResults, StdoutSink, FileSink, Recording, When, StatementMatch, Partial, PartialMask,
                LimitSpec, Rule, Policy):
        c.register_structure_hook(cls, make_dict_structure_fn(cls, c, _cattrs_forbid_extra_keys=True))
    c.register_structure_hook(
        MaskSpec,
        make_dict_structure_fn(MaskSpec, c, _cattrs_forbid_extra_keys=True, with_=override(rename="with")),
    )
    c.register_structure_hook(
        Config,
        make_dict_structure_fn(Config, c, _cattrs_forbid_extra_keys=True, source=override(omit=True)),
    )
    c.register_structure_hook_func(lambda t: t == tuple[str, ...], lambda v, _t: tuple(_strs(v)))
    return c


def _strs(v):
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise ValueError(f"expected a list of strings, got {v!r}")
    for item in v:
        if not isinstance(item, str):
            raise ValueError(f"expected a list of strings, got {v!r}")
    return v


_CONVERTER = _converter()


def _line_index(text: str) -> dict[tuple, int]:
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


def _format_path(path: str) -> tuple[str, tuple]:
    """'$.upstream.port' -> ('upstream.port', ('upstream', 'port'))."""
    parts: list = []
    text = path.lstrip("$").lstrip(".")
    for piece in text.replace("[", ".[").split("."):
        if not piece:
            continue
        if piece.startswith("["):
            inner = piece[1:-1]
            parts.append(int(inner) if inner.isdigit() else inner.strip("'\""))
        else:
            parts.append(piece.rstrip("_") if piece == "with_" else piece)
    pretty = ""
    for p in parts:
        pretty += f"[{p}]" if isinstance(p, int) else (f".{p}" if pretty else p)
    return pretty or "(top level)", tuple(parts)


def _describe(exc: BaseException, type_) -> str:
    """One problem in words: what was expected, and what was found when it helps."""
    args = typing.get_args(type_) if typing.get_origin(type_) is Literal else ()
    if args:
        return "expected one of " + ", ".join(map(str, args))
    if isinstance(exc, (ValueError, TypeError)) and str(exc).startswith("expected "):
        return str(exc)
    if type_ is None and isinstance(exc, (ValueError, TypeError)) and str(exc):
        return f"invalid value: {exc}"
    return cattrs.v.format_exception(exc, type_)


def _problems(exc: Exception, lines: dict[tuple, int], prefix: str = "") -> list[str]:
    out = []
    for msg in cattrs.transform_error(exc, path="$", format_exception=_describe):
        text, _, path = msg.rpartition(" @ ")
        if not text:
            text, path = msg, "$"
        pretty, parts = _format_path(path)
        line = None
        for n in range(len(parts), 0, -1):  # a missing key: the line of its parent
            line = lines.get(parts[:n])
            if line is not None:
                break
        where = f"line {line}: " if line else ""
        if prefix:
            pretty = prefix if pretty == "(top level)" else f"{prefix}.{pretty}"
        out.append(f"{where}{pretty}: {text}")
    return out


def parse_document(text: str, source: str, cls: type, converter: cattrs.Converter, sections: str):
    """Structures a YAML document into ``cls`` with ``converter``, or raises ConfigError listing
    every problem with its path and line. ``sections`` names the expected top-level keys."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(source, [f"expected a mapping of sections ({sections})"])
    try:
        return converter.structure(data, cls)
    except Exception as e:  # cattrs raises ClassValidationError / ValueError groups
        raise ConfigError(source, _problems(e, _line_index(text))) from None


def read_document(path: str | os.PathLike) -> tuple[str, str]:
    """The text of a config file and the name to report it by, or ConfigError."""
    p = Path(path)
    try:
        return p.read_text(), str(p)
    except OSError as e:
        raise ConfigError(str(p), [f"cannot read the file: {e.strerror}"]) from None


def parse_config(text: str, source: str = "<config>") -> Config:
    """Structures a YAML document into a Config, or raises ConfigError listing every problem."""
    config = parse_document(text, source, Config, _CONVERTER, "upstream:, auth:, ...")
    return attrs.evolve(config, source=source)


def structure_section(data: Any, cls: type, path: str, source: str = "<config>"):
    """Structures one section (a plugin's options, say) with the config's own rules."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"{path}: expected a mapping, got {data!r}"])
    try:
        return _CONVERTER.structure(data, cls)
    except Exception as e:
        raise ConfigError(source, _problems(e, {}, path)) from None


def load_config(path: str | os.PathLike) -> Config:
    return parse_config(*read_document(path))
