"""pytest fixtures: a throwaway PostgreSQL, signing keys, and pgwarden in front of it.

Loaded through the ``pytest11`` entry point, so a plugin author's tests get the
same fixtures as pgwarden's own. pgwarden runs in-process on a reactor thread
(so an inline decider or plugin can be handed in); the clients under test run
in the test's thread and speak to it over real sockets.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import attrs
import pytest

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres, free_port

ISSUER = "https://issuer.pgwarden.test"
AUDIENCE = "pgwarden"


@pytest.fixture(scope="session")
def pg_server() -> TempPostgres:
    """A PostgreSQL server for the whole test session."""
    # Not under pytest's tmp_path: that is private to root, and the server may not be root.
    server = TempPostgres()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> dict[str, Path]:
    from pgwarden.tokens import generate_key

    private, jwks = generate_key(tmp_path_factory.mktemp("keys"))
    return {"private": private, "jwks": jwks}


@pytest.fixture(scope="session")
def reactor_thread():
    """The Twisted reactor, running in a background thread for the session.

    The one `pgwarden run` would install (pgwarden's own, or Twisted's default with
    ``PGWARDEN_REACTOR=default``) unless another one was installed first, so the
    tests exercise what runs in production, and `make test` runs them on both.
    """
    import sys

    if "twisted.internet.reactor" not in sys.modules:
        from pgwarden.proxy.reactor import install

        install()  # PGWARDEN_REACTOR's choice
    from twisted.internet import reactor

    if not reactor.running:
        thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True, name="reactor"
        )
        thread.start()
    yield reactor


@attrs.define
class RunningPgwarden:
    """A pgwarden listening in this process, and how to reach it."""

    app: Any
    port: int
    keys: dict[str, Path]
    reactor: Any
    host: str = "127.0.0.1"

    def token(self, subject: str = "agent-1", groups: list[str] | None = None, **kw) -> str:
        from pgwarden.tokens import mint

        return mint(self.keys["private"], subject=subject, issuer=ISSUER, audience=AUDIENCE,
                    groups=groups if groups is not None else ["ai-agents"], **kw)

    def dsn(self, token: str | None = None, database: str = "appdb", **params: str) -> str:
        parts = [f"host={self.host}", f"port={self.port}", "user=agent", f"dbname={database}",
                 f"password={token or self.token()}", "sslmode=disable"]
        parts += [f"{k}={v}" for k, v in params.items()]
        return " ".join(parts)

    def url(self, token: str | None = None, database: str = "appdb") -> str:
        return f"postgresql://agent:{token or self.token()}@{self.host}:{self.port}/{database}"

    def call(self, f, *args, **kw):
        """Runs ``f`` on the reactor thread and waits for its result."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, f, *args, **kw)


def base_config(pg: TempPostgres, keys: dict[str, Path], workdir: Path, **overrides) -> dict:
    """The config document (a dict, as YAML would give) of a pgwarden in front of ``pg``."""
    pwfile = workdir / "upstream-password"
    pwfile.write_text(APP_PASSWORD + "\n")
    doc: dict = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "admin": {"host": "127.0.0.1", "port": 0},
        "upstream": {
            "host": pg.host, "port": pg.port, "database": "appdb", "user": APP_USER,
            "password_file": str(pwfile),
        },
        "auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(keys["jwks"])}},
        # pass-through: one policy for everyone, no rules
        "policies": [{"name": "everyone", "default": "allow"}],
        # records to a file of the test (checked against the schema and the chain after it)
        "recording": {"sinks": [{"file": str(workdir / "records.jsonl"), "fsync_s": 0}]},
    }
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(doc.get(section), dict):
            doc[section] = {**doc[section], **value}
        else:
            doc[section] = value
    return doc


#: The entry-point plugins pgwarden itself installs: ``make_pgwarden(only=BUILTIN_PLUGINS)``
#: runs pgwarden as shipped, whatever else is installed in the environment.
BUILTIN_PLUGINS = ("jwt", "block", "recording")


@pytest.fixture
def make_pgwarden(pg_server, signing_keys, reactor_thread, tmp_path):
    """Starts a pgwarden with config overrides and an optional decider; stopped after the test.

    Like `pgwarden run`, it loads every plugin installed in the environment (entry
    points), a third party's included, unless ``only`` names the ones to load.
    """
    from pgwarden.app import Application
    from pgwarden.config import structure_config
    from pgwarden.plugins import PluginHost

    started: list[RunningPgwarden] = []

    def start(decide=None, plugins=(), plugins_section=None, only=None, **overrides) -> RunningPgwarden:
        """``plugins``: (name, plugin object) pairs registered beside the installed ones;
        ``only``: the names of the installed (entry-point) plugins to load, say
        `BUILTIN_PLUGINS`; the others are left out as if not installed (None: all);
        ``plugins_section``: the config's ``plugins:`` section; other keywords: config sections."""
        if plugins_section is not None:
            overrides["plugins"] = plugins_section
        doc = base_config(pg_server, signing_keys, tmp_path, **overrides)
        config = structure_config(doc)

        def listen():
            host = PluginHost(config, reactor_thread, plugins, only=only)
            app = Application(config, reactor_thread, decide=decide, plugins=host)
            port = app.listen()
            return app, port.getHost().port

        rp = RunningPgwarden(None, 0, signing_keys, reactor_thread)
        rp.app, rp.port = rp.call(listen)
        started.append(rp)
        rp.call(rp.app.catalog.first_load)  # decisions by the live catalog from the first statement
        return rp

    yield start
    for rp in started:
        rp.call(rp.app.stop)
    for rp in started:  # every record a test produced: valid against the schema, chain intact
        for sink in rp.app.config.recording.sinks:
            path = getattr(sink, "file", None)
            if path is not None and Path(path).is_file():
                check_records([path])


def check_records(paths: list) -> list[dict]:
    """The records of ``paths`` (oldest first), each valid against the schema, the chain intact."""
    import json

    import jsonschema

    from pgwarden.chain import verify
    from pgwarden.schemas import record_schema

    report = verify([str(p) for p in paths])
    assert report.problem is None, f"record chain broken: {report.problem}"
    validator = jsonschema.Draft202012Validator(record_schema())
    records = []
    for p in paths:
        for number, line in enumerate(Path(p).read_text().splitlines(), 1):
            record = json.loads(line)
            errors = sorted(validator.iter_errors(record), key=str)
            assert not errors, f"{p}:{number}: {errors[0].message} in {record}"
            records.append(record)
    return records


@pytest.fixture
def pgwarden(make_pgwarden) -> RunningPgwarden:
    """A pass-through pgwarden (every statement allowed)."""
    return make_pgwarden()


@pytest.fixture
def spawn():
    """Starts a process as ``subprocess.Popen`` would (same arguments, plus ``stop_signal`` and
    ``grace_s``), in a group of its own; after the test, pass or fail, it and all it started
    are gone (see `pgwarden.testing.processes`)."""
    from pgwarden.testing.processes import ProcessGroup

    groups: list[ProcessGroup] = []

    def start(argv, **kw):
        group = ProcessGroup(argv, **kw)
        groups.append(group)
        return group.proc

    yield start
    for group in reversed(groups):
        group.stop()


__all__ = ["BUILTIN_PLUGINS", "RunningPgwarden", "base_config", "check_records", "free_port"]
