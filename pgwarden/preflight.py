"""What `pgwarden run` validates before it serves, in one place: `pgwarden check` calls the same.

So the two cannot disagree about a file. Problems are gathered, never raised one
at a time: a file that does not structure is still read for what the plugins
would say of it (plugin names, their options, rule kinds no plugin interprets),
and the whole list comes back in file order, each problem with its line.

Left to `run` is what only applying the config shows: a file the config names
that is not there (check also runs where the secrets are not mounted), a record
sink that cannot be opened, a port in use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pgwarden.config import (
    SECTIONS,
    Config,
    ConfigError,
    line_index,
    line_of,
    located,
    parse_yaml,
    read_document,
    structure_config,
)
from pgwarden.plugins import PluginError, PluginHost


def load_checked(
    path: str | os.PathLike,
    reactor=None,
    extra: Iterable[tuple[str, object]] = (),
    *,
    use_entry_points: bool = True,
) -> tuple[Config, PluginHost]:
    """The config of ``path`` and its plugins, validated; or ConfigError listing every problem.

    ``reactor`` is the one `run` serves on (None for `check`): the plugins' decisions
    are timed with it. The config comes back with its rules read by the kinds the
    plugins declare.
    """
    text, source = read_document(path)
    data = parse_yaml(text, source, SECTIONS)  # not a mapping: nothing more can be read from it
    lines = line_index(text)
    problems: list[str] = []
    config = None
    try:
        config = structure_config(data, source, lines)
    except ConfigError as e:
        problems += e.problems
    try:
        host = PluginHost(None, reactor, extra, use_entry_points=use_entry_points, section=data.get("plugins"))
    except PluginError as e:
        raise ConfigError(source, sorted(problems, key=line_of) + [str(e)]) from None
    if config is None:
        problems += host.document_problems(data, source, lines)
    else:
        try:
            config = host.accept(config)
        except ConfigError as e:
            problems += e.problems
        else:
            problems += host.preflight_problems(config)  # what each plugin finds wrong with its part
        problems += key_material_problems(config)
    if not host.authenticates:
        plugins = data.get("plugins")
        disabling = isinstance(plugins, dict) and "disable" in plugins
        why = host.no_authenticator()
        problems.append(located(lines, ("plugins", "disable"), why) if disabling else why)
    if problems or config is None:
        raise ConfigError(source, sorted(problems, key=line_of))
    return config, host


def reread(path: str | os.PathLike, host: PluginHost) -> Config:
    """The config of ``path`` as a reload takes it: structured, its rules read by the running
    plugins; or ConfigError listing every problem, as `load_checked` would."""
    text, source = read_document(path)
    data = parse_yaml(text, source, SECTIONS)
    lines = line_index(text)
    try:
        config = structure_config(data, source, lines)
    except ConfigError as e:
        raise ConfigError(source, sorted(e.problems + host.document_problems(data, source, lines),
                                         key=line_of)) from None
    return host.validate(config)


def key_material_problems(config: Config) -> list[str]:
    """The core's key and certificate files that the config names, there but unusable (the
    plugins' own, such as ``auth.jwt``'s keys, are theirs to check: `pgwarden_validate`).

    Each is loaded as `run` loads it. A file that is not there is left alone, as a
    missing ``password_file`` is: `check` also runs where the secrets are not.
    """
    from pgwarden.app import client_tls
    from pgwarden.proxy.upstream import tls_options

    def there(*names: str | None) -> bool:
        return all(name is None or Path(name).exists() for name in names)

    problems: list[str] = []
    lines = config.lines
    listen_tls = config.listen.tls
    if listen_tls is not None and there(listen_tls.cert_file, listen_tls.key_file):
        try:
            client_tls(listen_tls)
        except Exception as e:  # OpenSSL's errors say little; name the files
            problems.append(located(lines, ("listen", "tls"),
                                    f"cannot use {listen_tls.cert_file} and {listen_tls.key_file} "
                                    f"as the TLS certificate and key: {e}"))
    upstream_tls = config.upstream.tls
    if there(upstream_tls.ca_file, upstream_tls.cert_file, upstream_tls.key_file):
        try:
            tls_options(config.upstream)
        except Exception as e:
            problems.append(located(lines, ("upstream", "tls"), f"cannot use the TLS files: {e}"))
    return problems
