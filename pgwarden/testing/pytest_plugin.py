"""pytest fixtures: a throwaway PostgreSQL, signing keys, and pgwarden in front of it.

Loaded through the ``pytest11`` entry point, so a plugin author's tests get the
same fixtures as pgwarden's own. pgwarden runs in-process on a reactor thread
(so an inline decider or plugin can be handed in); the clients under test run
in the test's thread and speak to it over real sockets.

What it imports at module level, and what its fixtures import, is what a
plugin author has after ``pip install pgwarden pytest``: nothing of the
``[test]`` extra (``tests/unit/test_public_api.py`` runs it with those blocked).
Only `spawn` and `pgwarden_process` need psutil (to kill what a process left
behind), and the records `make_pgwarden` checks after each test are checked
against the schema only when jsonschema is installed (their chain always).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from pgwarden.testing.endpoint import AUDIENCE, ISSUER, Endpoint
from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres, free_port
from pgwarden.testing.record_check import record_validator
from pgwarden.testing.running import PYTHON_PGWARDEN, PgwardenProcess
from pgwarden.testing.waiting import WaitTimeout, wait_until


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TempPostgres]:
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
class RunningPgwarden(Endpoint):
    """A pgwarden listening in this process, and how to reach it (`Endpoint`: tokens, DSNs)."""

    app: Any
    port: int
    keys: dict[str, Path]
    reactor: Any
    host: str = "127.0.0.1"
    #: its admin port, when a test opened it (0: not)
    admin: int = 0

    def call(self, f, *args, **kw):
        """Runs ``f`` on the reactor thread and waits for its result."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, f, *args, **kw)


def base_config(pg: TempPostgres, keys: dict[str, Path], workdir: Path, **overrides) -> dict:
    """The config document (a dict, as YAML would give) of a pgwarden in front of ``pg``.

    An override of a section that is a mapping is merged into it, any other replaces it,
    and None removes it (the section's default then applies)."""
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
        if value is None:
            doc.pop(section, None)
        elif isinstance(value, dict) and isinstance(doc.get(section), dict):
            doc[section] = {**doc[section], **value}
        else:
            doc[section] = value
    return doc


#: What the pgwardens of this session read and built of each database's catalog (`_shared_memory`).
_MEMORIES: dict[tuple, Any] = {}


def _shared_memory(upstream) -> Any:
    """One `LoadMemory` for every pgwarden `make_pgwarden` starts in front of one database: each
    test's pgwarden reads only the views made or replaced since the last one did, not the
    server's own ~140 again (~0.1 s of the server's time a start), and builds only the facts
    whose rows changed (~30 ms a start for the functions alone). The facts are the same: a view is
    read again whenever its rule's row version changed, and every other row is read each time."""
    from pgwarden.catalog.loader import LoadMemory

    return _MEMORIES.setdefault((upstream.host, upstream.port, upstream.database, upstream.user), LoadMemory())


#: The entry-point plugins pgwarden itself installs: ``make_pgwarden(only=BUILTIN_PLUGINS)``
#: runs pgwarden as shipped, whatever else is installed in the environment.
BUILTIN_PLUGINS = ("jwt", "block", "recording", "mask", "approve")


@pytest.fixture
def make_pgwarden(pg_server, signing_keys, reactor_thread, tmp_path):
    """Starts a pgwarden with config overrides and an optional decider; stopped after the test.

    Like `pgwarden run`, it loads every plugin installed in the environment (entry
    points), a third party's included, unless ``only`` names the ones to load.
    """
    from pgwarden.app import Application
    from pgwarden.catalog.live import LiveCatalog
    from pgwarden.config import structure_config
    from pgwarden.plugins import PluginHost
    from pgwarden.proxy.peer import port_number

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
            if isinstance(app.catalog, LiveCatalog):  # not with `catalog: {live: false}`
                app.catalog.share_memory(_shared_memory(config.upstream))
            port = app.listen()
            return app, port_number(port)

        rp = RunningPgwarden(None, 0, signing_keys, reactor_thread)
        rp.app, rp.port = rp.call(listen)
        started.append(rp)
        rp.call(rp.app.catalog.first_load)  # decisions by the live catalog from the first statement
        return rp

    yield start
    for rp in started:
        rp.call(rp.app.stop)
    for rp in started:  # every record a test produced: valid against the schema, chain intact
        check_records_after(rp.app.config)


@contextlib.contextmanager
def module_pgwarden(doc: dict, keys: dict[str, Path], reactor_thread, *, admin: bool = False,
                    ) -> Iterator[RunningPgwarden]:
    """A pgwarden of config document ``doc`` (`base_config`'s) listening in this process, its
    catalog read once, for a test module's fixture (many tests, one start); ``admin``: its admin
    port open too (``.admin``). Stopped after, its records checked (schema, hash chain)."""
    from pgwarden.app import Application
    from pgwarden.config import structure_config
    from pgwarden.proxy.peer import port_number

    config = structure_config(doc)
    rp = RunningPgwarden(None, 0, keys, reactor_thread)

    def listen():
        app = Application(config, reactor_thread)
        return app, port_number(app.listen())

    rp.app, rp.port = rp.call(listen)
    rp.call(rp.app.catalog.first_load)
    if admin:
        rp.admin = port_number(rp.call(rp.app.listen_admin))
    try:
        yield rp
    finally:
        rp.call(rp.app.stop)
    check_records_after(config)


def check_records(paths: Sequence[str | Path], *, schema: bool = True) -> list[dict]:
    """The records of ``paths`` (oldest first), the chain intact and, unless ``schema`` is false,
    each valid against the schema (which needs jsonschema)."""
    import json

    from pgwarden.chain import verify

    report = verify([str(p) for p in paths])
    assert report.problem is None, f"record chain broken: {report.problem}"
    validator = record_validator() if schema else None
    records = []
    for p in paths:
        # Lines end at "\n" only: str.splitlines would also cut at U+2028 and the like, which a
        # record holds as is (orjson does not escape them).
        for number, line in enumerate(Path(p).read_text().split("\n")[:-1], 1):
            record = json.loads(line)
            if validator is not None:
                errors = sorted(validator.iter_errors(record), key=str)
                assert not errors, f"{p}:{number}: {errors[0].message} in {record}"
            records.append(record)
    return records


def check_records_after(config, stdout: Path | None = None) -> None:
    """After a test: the current file of each of ``config``'s sinks (``stdout``: where its stdout
    went) checked with `check_records`; against the schema when jsonschema is installed."""
    from pgwarden.config import FileSink, StdoutSink

    paths = [stdout if isinstance(sink, StdoutSink) else Path(sink.file) if isinstance(sink, FileSink) else None
             for sink in config.recording.sinks]
    found = [p for p in paths if p is not None and p.is_file() and p.stat().st_size]
    if not found:
        return
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        schema = False
        warnings.warn("pgwarden's records were checked without their schema: jsonschema is not installed",
                      pytest.PytestWarning, stacklevel=2)
    else:
        schema = True
    for path in found:
        check_records([path], schema=schema)


@pytest.fixture
def pgwarden(make_pgwarden) -> RunningPgwarden:
    """A pass-through pgwarden (every statement allowed)."""
    return make_pgwarden()


@pytest.fixture
def pgwarden_process(pg_server, signing_keys, tmp_path):
    """Starts `pgwarden run` in a process of its own, in front of `pg_server`; returns once it listens.

    After the test, pass or fail, it and all it started are stopped (`ProcessGroup`) and
    the records of its sinks checked, as `make_pgwarden` does. See `start` for the options.
    """
    from pgwarden.config import load_config
    from pgwarden.testing.running import launch

    started: list[tuple[PgwardenProcess, Any]] = []  # and the config it started with

    def start(*, config: Path | None = None, directory: Path | None = None,
              command: Sequence[str] = PYTHON_PGWARDEN, args: Sequence[str] = (), timeout_s: float = 60.0,
              stop_signal: int = signal.SIGTERM, grace_s: float = 15.0, env: dict | None = None,
              cwd: Path | str | None = None, **config_sections) -> PgwardenProcess:
        """``config``: a config file to run as is, else `base_config` with ``config_sections``
        written to ``directory``/pgwarden.yaml; ``directory``: where its stdout, op log and port
        files go (by default ``tmp_path``/pgwarden, then pgwarden-2, ...; one who runs it as
        another user gives one that user can write); ``command``: what runs pgwarden (this
        interpreter's ``-m pgwarden``; a console script; ``setpriv ... pgwarden``); ``args``: more
        arguments of ``run``, after ``-c CONFIG``."""
        import yaml

        if directory is None:
            directory = tmp_path / ("pgwarden" if not started else f"pgwarden-{len(started) + 1}")
        directory.mkdir(parents=True, exist_ok=True)
        if config is None:
            config = directory / "pgwarden.yaml"
            config.write_text(yaml.safe_dump(base_config(pg_server, signing_keys, directory, **config_sections)))
        elif config_sections:
            raise TypeError(f"config sections {sorted(config_sections)} given with a config file")
        running = launch(config, signing_keys, directory, command=command, args=args, timeout_s=timeout_s,
                         stop_signal=stop_signal, grace_s=grace_s, env=env, cwd=cwd)
        started.append((running, load_config(config)))
        return running

    yield start
    for running, _ in started:
        running.stop()
    for running, loaded in started:
        check_records_after(loaded, stdout=running.directory / "pgwarden.out")


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


__all__ = ["AUDIENCE", "BUILTIN_PLUGINS", "ISSUER", "PgwardenProcess", "RunningPgwarden", "WaitTimeout",
           "base_config", "check_records", "free_port", "wait_until"]
