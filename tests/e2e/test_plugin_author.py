"""A plugin author who installed only pgwarden and pytest: the shipped fixtures work without the [test] extra.

The extra (hypothesis, psutil, jsonschema, asyncpg, ...) is installed here, so each check
runs in a fresh interpreter whose import system refuses its modules, as if they were not
installed; which modules those are is read from pgwarden's own metadata.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import packages_distributions, requires

from packaging.requirements import Requirement

# Put first on sys.meta_path: every module of ``sys.argv[1]`` (comma-separated) fails to import.
REFUSE = textwrap.dedent("""
    import sys

    BLOCKED = frozenset(sys.argv.pop(1).split(","))


    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)
            return None


    sys.meta_path.insert(0, Refuse())
""")


def extra_only_modules() -> set[str]:
    """The top-level modules of the distributions that only the [test] extra installs (pytest aside)."""
    base, test = set(), set()
    for line in requires("pgwarden") or []:
        req = Requirement(line)
        if req.marker is None:
            base.add(req.name.lower())
        elif req.marker.evaluate({"extra": "test"}):
            test.add(req.name.lower())
    only = test - base - {"pytest"}
    return {module for module, dists in packages_distributions().items()
            if any(d.lower() in only for d in dists)}


def run_refusing(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    blocked = ",".join(sorted(extra_only_modules()))
    return subprocess.run([sys.executable, "-c", REFUSE + code, blocked, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_the_refused_modules_are_the_test_extras_and_really_refused():
    assert {"hypothesis", "psutil", "jsonschema", "asyncpg", "jsonpatch", "kubernetes_validate"} <= extra_only_modules()
    assert "psycopg" not in extra_only_modules() and "pytest" not in extra_only_modules()
    done = run_refusing("import psutil")
    assert done.returncode == 1 and "No module named 'psutil' (refused by the test)" in done.stderr


def test_the_pytest_plugin_and_what_its_fixtures_import_load_without_the_test_extra():
    done = run_refusing(textwrap.dedent("""
        import importlib.metadata

        import pgwarden.testing.pytest_plugin
        # what make_pgwarden imports when it runs, and the plugins it loads
        import pgwarden.app, pgwarden.config, pgwarden.plugins, pgwarden.tokens, pgwarden.chain, pgwarden.schemas
        for entry in importlib.metadata.entry_points(group="pgwarden"):
            entry.load()
        from pgwarden.testing import wait_until
        print("loaded")
    """))
    assert done.returncode == 0 and done.stdout == "loaded\n", done.stderr


# A plugin author's test, as docs/plugins.md shows it: an inline plugin through a real pgwarden.
AUTHORS_TEST = """
import psycopg
import pytest

from pgwarden import Verdict, hookimpl


class NoDeletes:
    @hookimpl
    def pgwarden_check(self, statement, session):
        return Verdict.block("no deletes here") if "delete" in statement.kinds else None


def test_my_plugin(make_pgwarden):
    running = make_pgwarden(plugins=[("no-deletes", NoDeletes())])
    with psycopg.connect(running.dsn(), autocommit=True) as conn:
        assert conn.execute("select 41 + 1").fetchone() == (42,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="no deletes here"):
            conn.execute("delete from pg_class where false")
"""


def test_a_plugin_authors_test_runs_with_make_pgwarden_without_the_test_extra(tmp_path):
    (tmp_path / "test_author.py").write_text(AUTHORS_TEST)
    # hypothesis's own pytest plugin is not there either (its distribution is refused)
    done = run_refusing("import pytest; sys.exit(pytest.main(sys.argv[1:]))",
                        "-p", "no:hypothesispytest", "-p", "no:cacheprovider", "-q", "-rw", "test_author.py",
                        cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    # the records were still checked (their chain), and the test says what was not
    assert "records were checked without their schema: jsonschema is not installed" in done.stdout
