#!/usr/bin/env python3
"""Runs asyncpg's own test suite twice: straight at PostgreSQL, then through pgwarden.

Opt-in (minutes, not part of ``make test``)::

    python tests/suites/run_asyncpg_suite.py                  # both runs + comparison
    python tests/suites/run_asyncpg_suite.py --mode pgwarden  # one run only
    python tests/suites/run_asyncpg_suite.py -k test_copy     # a subset (pytest -k)

The suite comes from asyncpg's sdist (its wheels carry no tests): ``--sdist``
names one, else ``pip download --no-binary :all:`` fetches the version that is
installed. Only ``tests/`` is unpacked, so the installed (compiled) asyncpg is
the one under test.

asyncpg's test base (``asyncpg/_testbase``) uses an existing server when
``PGHOST`` is set (``cluster.RunningCluster``; connection parameters come from
the usual ``PG*`` variables) and then skips by itself the tests that must manage
the server. Both runs use that mode, with the same ``PG*`` variables except
port and password, and the same deselections (``EXCLUDED`` below).

Per test, the two JUnit reports are compared: a test that passes directly but
not through pgwarden is a regression. Regressions of tests listed in
``BY_DESIGN`` (pgwarden serves one database, ``upstream.database``, as one
role, ``upstream.user``; these tests connect to other databases) are reported
apart.

Exit status: 0 when there is no unexplained regression, 1 otherwise, 2 when a
run could not be done.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from pgwarden.testing.postgres import APP_PASSWORD, APP_USER, TempPostgres
from pgwarden.testing.running import PgwardenProcess, launch
from pgwarden.tokens import generate_key, mint

ISSUER = "https://issuer.pgwarden.test"
AUDIENCE = "pgwarden"

# Deselected in both runs: they manage PostgreSQL servers themselves, which
# neither an existing server nor a proxy allows. (Node id prefixes, as pytest's
# --deselect takes them.)
EXCLUDED: dict[str, str] = {
    "tests/test_connect.py::TestConnectionAttributes":
        "HotStandbyTestCase: initdb's a primary and a streaming-replication standby of its own "
        "(and initdb refuses to run as root)",
    "tests/test_pool.py::TestHotStandby":
        "HotStandbyTestCase: builds its own primary + standby cluster",
    "tests/test_connect.py::TestGssAuthentication":
        "needs a Kerberos KDC and its own pg_hba.conf (skips itself without k5test anyway)",
    "tests/test_connect.py::TestSspiAuthentication":
        "Windows SSPI (skips itself elsewhere)",
    "tests/test__sourcecode.py":
        "lints asyncpg's source tree (flake8/mypy), not a database test",
}

# Tests that select a database or a role per connection. pgwarden serves one
# database (upstream.database, here --database) as one role (upstream.user):
# since 42d8303 it refuses a startup packet naming another database with 3D000
# "database ... is not served here" (before that it silently served its own).
# Either way these tests cannot get what they ask for: a difference by design.
_NOT_SERVED = "connects to database {!r}, which pgwarden does not serve (one upstream.database)"
BY_DESIGN: dict[str, str] = {
    "tests/test_cache_invalidation.py::TestCacheInvalidation::test_type_cache_invalidation_in_pool":
        "CREATE DATABASE testdb, then a pool on 'testdb' must see a catalog of its own; "
        + _NOT_SERVED.format("testdb"),
    "tests/test_introspection.py::TestIntrospection::test_introspection_on_large_db":
        _NOT_SERVED.format("asyncpg_intro_test"),
    "tests/test_introspection.py::TestIntrospection::test_introspection_loads_basetypes_of_domains":
        _NOT_SERVED.format("asyncpg_intro_test"),
}
# test_pool.py's pool test as role 'pooluser' would be one too, but it skips
# itself on an unmanaged cluster (both runs).


def log(msg: str) -> None:
    print(f"[asyncpg-suite] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the suite

def fetch_sdist(workdir: Path, version: str) -> Path:
    dest = workdir / "sdist"
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"asyncpg-{version}.tar.gz"))
    if found:
        return found[0]
    log(f"downloading the asyncpg {version} sdist")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"asyncpg=={version}", "-d", str(dest)],
        check=True,
    )
    return next(dest.glob(f"asyncpg-{version}.tar.gz"))


def unpack_tests(sdist: Path, workdir: Path, version: str) -> Path:
    """Unpacks only ``tests/`` (not the pure-source package) under workdir/suite."""
    suite = workdir / "suite"
    shutil.rmtree(suite, ignore_errors=True)
    suite.mkdir(parents=True)
    prefix = f"asyncpg-{version}/tests/"
    with tarfile.open(sdist) as tar:
        members = [mem for mem in tar.getmembers() if mem.name.startswith(prefix)]
        if not members:
            raise SystemExit(f"{sdist} has no {prefix} (not the asyncpg {version} sdist?)")
        for mem in members:
            mem.name = mem.name[len(f"asyncpg-{version}/"):]
        tar.extractall(suite, members=members, filter="data")
    # asyncpg's own pytest options, minus --capture=no (we want captured output).
    (suite / "pytest.ini").write_text(
        "[pytest]\n"
        "addopts = --assert=plain --strict-markers --tb=native --import-mode=importlib\n"
        "testpaths = tests\n"
        "filterwarnings = default\n"
    )
    return suite


# ---------------------------------------------------------------------------- pgwarden

class Pgwarden:
    """pgwarden as a subprocess (``python -m pgwarden run``), pass-through (no policies)."""

    def __init__(self, pg: TempPostgres, workdir: Path, database: str) -> None:
        self.dir = workdir / "pgwarden"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.private, self.jwks = generate_key(self.dir / "keys")
        pwfile = self.dir / "upstream-password"
        pwfile.write_text(APP_PASSWORD + "\n")
        pwfile.chmod(0o600)
        doc = {
            "listen": {"host": "127.0.0.1", "port": 0},
            "upstream": {
                "host": pg.host, "port": pg.port, "database": database, "user": APP_USER,
                "password_file": str(pwfile),
            },
            "auth": {"jwt": {"issuer": ISSUER, "audience": AUDIENCE, "jwks_file": str(self.jwks)}},
            # pass-through: one policy for everyone, no rules
            "policies": [{"name": "everyone", "default": "allow"}],
        }
        self.config = self.dir / "pgwarden.yaml"
        self.config.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.log_path = self.dir / "pgwarden.log"  # its op log; the records (stdout) in pgwarden.out
        self.running: PgwardenProcess | None = None
        self.port = 0

    def token(self, ttl_s: int) -> str:
        return mint(self.private, subject="asyncpg-suite", issuer=ISSUER, audience=AUDIENCE,
                    groups=["ai-agents"], ttl_s=ttl_s)

    def start(self) -> None:
        self.running = launch(self.config, {"jwks": self.jwks}, self.dir, timeout_s=30, grace_s=10)
        self.port = self.running.port

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


# ---------------------------------------------------------------------------- running and reading

def run_pytest(suite: Path, env_pg: dict[str, str], junit: Path, output: Path, args) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(env_pg)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:pgwarden",
           f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += [f"--timeout={args.timeout}"]
    else:
        log("pytest-timeout not installed: no per-test timeout (pip install pytest-timeout)")
    for nodeid in EXCLUDED:
        cmd += ["--deselect", nodeid]
    if args.k:
        cmd += ["-k", args.k]
    cmd += args.pytest_args
    cmd += args.paths or ["tests"]
    started = time.monotonic()
    with open(output, "wb") as out:
        try:
            rc = subprocess.run(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=args.run_timeout).returncode
        except subprocess.TimeoutExpired:
            log(f"the run exceeded {args.run_timeout} s and was stopped")
            rc = -1
    log(f"pytest exit {rc} after {time.monotonic() - started:.0f} s; output in {output}")
    return rc


def read_junit(path: Path) -> dict[str, dict]:
    """nodeid -> {"outcome": passed|failed|error|skipped, "message": str, "text": str}."""
    results: dict[str, dict] = {}
    if not path.exists():
        return results
    for case in ET.parse(path).getroot().iter("testcase"):
        file = case.get("file")
        classname = case.get("classname", "")
        name = case.get("name", "")
        parts = classname.split(".")
        # xunit1 with --import-mode=importlib: classname "tests.test_x.Class", file "tests/test_x.py"
        if file is None:
            file = "/".join(parts[:2]) + ".py"
        cls = parts[2:] if len(parts) > 2 else []
        nodeid = "::".join([file, *cls, name])
        outcome, message, text = "passed", "", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = el.get("message", "")
                text = el.text or ""
                break
        # A test that failed and also errored in teardown appears twice: keep the worst.
        prev = results.get(nodeid)
        if prev is None or prev["outcome"] in ("passed", "skipped"):
            results[nodeid] = {"outcome": outcome, "message": message, "text": text}
    return results


def counts(results: dict[str, dict]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for r in results.values():
        out[r["outcome"]] += 1
    return out


def excerpt(r: dict, lines: int = 12) -> str:
    text = (r.get("text") or "").strip().splitlines()
    tail = text[-lines:] if text else []
    head = r.get("message", "").strip().splitlines()[:1]
    return "\n".join(head + (["..."] if len(text) > lines else []) + tail)


def by_design_reason(nodeid: str) -> str | None:
    for prefix, reason in BY_DESIGN.items():
        if nodeid == prefix or nodeid.startswith(prefix + "::") or nodeid.startswith(prefix + "["):
            return reason
    return None


def compare(direct: dict[str, dict], proxied: dict[str, dict]) -> dict:
    bad = ("failed", "error")
    regressions, by_design, improvements, missing, skip_diff = [], [], [], [], []
    for nodeid, d in sorted(direct.items()):
        p = proxied.get(nodeid)
        if p is None:
            if d["outcome"] == "passed":
                missing.append(nodeid)
            continue
        if d["outcome"] == "passed" and p["outcome"] in bad:
            reason = by_design_reason(nodeid)
            entry = {"test": nodeid, "outcome": p["outcome"], "error": excerpt(p)}
            if reason:
                entry["reason"] = reason
                by_design.append(entry)
            else:
                regressions.append(entry)
        elif d["outcome"] in bad and p["outcome"] == "passed":
            improvements.append({"test": nodeid, "direct_error": excerpt(d, 4)})
        elif (d["outcome"] == "skipped") != (p["outcome"] == "skipped"):
            skip_diff.append({"test": nodeid, "direct": d["outcome"], "pgwarden": p["outcome"],
                              "why": (d if d["outcome"] == "skipped" else p)["message"]})
    return {"regressions": regressions, "by_design": by_design, "improvements": improvements,
            "missing_through_pgwarden": missing, "skip_differences": skip_diff}


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sdist", type=Path, help="asyncpg sdist (.tar.gz); default: pip download it")
    ap.add_argument("--workdir", type=Path, help="where to unpack, log and report (default: a temp dir)")
    ap.add_argument("--mode", choices=("both", "direct", "pgwarden"), default="both")
    ap.add_argument("--timeout", type=int, default=60, help="per-test timeout, s (pytest-timeout)")
    ap.add_argument("--run-timeout", type=int, default=600, help="a whole pytest run, s")
    ap.add_argument("--database", default="postgres",
                    help="PGDATABASE of both runs and pgwarden's upstream.database. asyncpg's suite "
                         "assumes its default connection is on 'postgres' (a few tests open pools "
                         "with database='postgres' and expect to see the same tables)")
    ap.add_argument("--client-user", default=APP_USER,
                    help="user name sent to pgwarden (anything works; the token authenticates)")
    ap.add_argument("-k", help="pytest -k expression")
    ap.add_argument("--pytest-args", dest="pytest_args", default=[], type=lambda s: s.split(),
                    help="extra pytest arguments, space separated")
    ap.add_argument("paths", nargs="*", help="test paths or node ids inside the suite (default: tests)")
    args = ap.parse_args(argv)

    missing = [mod for mod in ("asyncpg", "pytest", "distro") if importlib.util.find_spec(mod) is None]
    if missing:
        print(f"missing for asyncpg's tests: {' '.join(missing)} (pip install {' '.join(missing)} "
              "pytest-timeout)", file=sys.stderr)
        return 2
    import asyncpg

    version = asyncpg.__version__
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pgwarden-asyncpg-suite-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sdist = args.sdist or fetch_sdist(workdir, version)
    suite = unpack_tests(sdist, workdir, version)
    log(f"asyncpg {version} tests unpacked in {suite}")

    pg = TempPostgres().start()
    warden = None
    results: dict[str, dict[str, dict]] = {}
    try:
        log(f"PostgreSQL on 127.0.0.1:{pg.port} (log {pg.base / 'server.log'})")
        # PGVERSION / ASYNCPG_VERSION un-skip test__environment's two checks.
        common = {"PGHOST": "127.0.0.1", "PGDATABASE": args.database, "PGSSLMODE": "disable",
                  "PGCONNECT_TIMEOUT": "30", "ASYNCPG_VERSION": version,
                  "PGVERSION": pg.psql("SHOW server_version").split()[0]}
        if args.mode in ("both", "direct"):
            log("run 1: directly against PostgreSQL")
            env = {**common, "PGPORT": str(pg.port), "PGUSER": APP_USER, "PGPASSWORD": APP_PASSWORD}
            run_pytest(suite, env, workdir / "direct.xml", workdir / "direct.txt", args)
            results["direct"] = read_junit(workdir / "direct.xml")
        if args.mode in ("both", "pgwarden"):
            warden = Pgwarden(pg, workdir, args.database)
            warden.start()
            log(f"pgwarden on 127.0.0.1:{warden.port} (log {warden.log_path})")
            log("run 2: through pgwarden")
            env = {**common, "PGPORT": str(warden.port), "PGUSER": args.client_user,
                   "PGPASSWORD": warden.token(ttl_s=6 * 3600)}
            run_pytest(suite, env, workdir / "pgwarden.xml", workdir / "pgwarden.txt", args)
            results["pgwarden"] = read_junit(workdir / "pgwarden.xml")
    finally:
        if warden is not None:
            warden.stop()
        # keep the server log next to the reports
        try:
            shutil.copy(pg.base / "server.log", workdir / "postgres.log")
        except OSError:
            pass
        pg.stop()

    print(f"\nasyncpg {version} suite; reports in {workdir}")
    print("excluded from both runs:")
    for nodeid, reason in EXCLUDED.items():
        print(f"  {nodeid}: {reason}")
    for name, res in results.items():
        c = counts(res)
        print(f"{name:>9}: {len(res)} tests: {c['passed']} passed, {c['failed']} failed, "
              f"{c['error']} errors, {c['skipped']} skipped")
    if not results or any(not r for r in results.values()):
        print("a run produced no JUnit report")
        return 2
    if set(results) != {"direct", "pgwarden"}:
        return 0

    cmp = compare(results["direct"], results["pgwarden"])
    (workdir / "comparison.json").write_text(json.dumps(cmp, indent=2))
    print(f"\npassed directly, failed through pgwarden: {len(cmp['regressions'])} "
          f"(+{len(cmp['by_design'])} expected by design)")
    for r in cmp["regressions"]:
        print(f"\nREGRESSION {r['test']} ({r['outcome']})")
        print("    " + r["error"].replace("\n", "\n    "))
    if cmp["by_design"]:
        print("\nexpected by design (pgwarden serves only upstream.database, as upstream.user):")
        for r in cmp["by_design"]:
            print(f"  {r['test']}: {r['reason']}")
            print("      " + r["error"].splitlines()[0] if r["error"] else "")
    if cmp["improvements"]:
        print("\nfailed directly, passed through pgwarden:")
        for r in cmp["improvements"]:
            print(f"  {r['test']}")
    if cmp["missing_through_pgwarden"]:
        print("\npassed directly, absent from the pgwarden report (run stopped?):")
        for t in cmp["missing_through_pgwarden"]:
            print(f"  {t}")
    if cmp["skip_differences"]:
        print("\nskipped in one run only:")
        for r in cmp["skip_differences"]:
            print(f"  {r['test']}: direct {r['direct']}, pgwarden {r['pgwarden']} ({r['why']})")
    return 1 if cmp["regressions"] or cmp["missing_through_pgwarden"] else 0


if __name__ == "__main__":
    sys.exit(main())
