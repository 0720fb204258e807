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
from pathlib import Path
from typing import Iterable

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
from pgwarden.plugins import NO_AUTHENTICATOR, PluginError, PluginHost


def load_checked(
    path: str | os.PathLike,
    reactor=None,
    extra: Iterable[tuple[str, object]] = (),
    *,
    use_entry_points: bool = True,
) -> tuple[Config, PluginHost]:
    """The config of ``path`` and its plugins, validated; or ConfigError listing every problem.

    ``reactor`` is the one `run` serves on (None for `check`): the plugins' decision
    hooks are guarded with it.
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
            host.accept(config)
        except ConfigError as e:
            problems += e.problems
        problems += key_material_problems(config)
    if not host.authenticates:
        plugins = data.get("plugins")
        disabling = isinstance(plugins, dict) and "disable" in plugins
        problems.append(located(lines, ("plugins", "disable"), NO_AUTHENTICATOR) if disabling else NO_AUTHENTICATOR)
    if problems:
        raise ConfigError(source, sorted(problems, key=line_of))
    return config, host


def key_material_problems(config: Config) -> list[str]:
    """Key and certificate files the config names that are there but cannot be used.

    Each is loaded as `run` loads it. A file that is not there is left alone, as a
    missing ``password_file`` is: `check` also runs where the secrets are not.
    """
    from pgwarden.app import client_tls
    from pgwarden.identity import KeyFileError, TokenVerifier
    from pgwarden.proxy.upstream import tls_options

    def there(*names: str | None) -> bool:
        return all(name is None or Path(name).exists() for name in names)

    problems: list[str] = []
    lines = config.lines
    jwks_file = config.auth.jwt.jwks_file
    if jwks_file and there(jwks_file):
        try:
            TokenVerifier(config.auth.jwt)
        except KeyFileError as e:
            problems.append(located(lines, ("auth", "jwt", "jwks_file"), str(e).removeprefix("auth.jwt.jwks_file: ")))
    listen_tls = config.listen.tls
    if listen_tls is not None and there(listen_tls.cert_file, listen_tls.key_file):
        try:
            client_tls(listen_tls)
        except Exception as e:  # OpenSSL's errors say little; name the files
            problems.append(located(lines, ("listen", "tls"), f"cannot use {listen_tls.cert_file} and "
                                                              f"{listen_tls.key_file} as the TLS certificate and key: {e}"))
    upstream_tls = config.upstream.tls
    if there(upstream_tls.ca_file, upstream_tls.cert_file, upstream_tls.key_file):
        try:
            tls_options(config.upstream)
        except Exception as e:
            problems.append(located(lines, ("upstream", "tls"), f"cannot use the TLS files: {e}"))
    return problems
