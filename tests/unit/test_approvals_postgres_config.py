"""``approvals.postgres``: `pgwarden check` reports each problem with its line and what was expected,
and never shows the DSN (it may hold a password)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_check import GOOD, problems_of

SECRET = "TOPSECRET-in-the-dsn"


def check(tmp_path: Path, approvals: str) -> tuple[int, str, list[str], Path]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(GOOD + approvals)
    done = subprocess.run([sys.executable, "-m", "pgwarden", "check", "-c", str(cfg)], capture_output=True,
                          text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr, problems_of(done.stderr, cfg), cfg


@pytest.mark.parametrize(("approvals", "expected"), [
    ("approvals: {store: postgres}\n",
     "line 10: approvals: expected a postgres: {dsn or dsn_file, password_file, schema} section with store: postgres"),
    ("approvals:\n  store: postgres\n  postgres: {dsn: 'host=db', dsn_file: /x}\n",
     "line 12: approvals.postgres: expected exactly one of dsn or dsn_file"),
    ("approvals:\n  store: postgres\n  postgres: {dsn: 'host=db', schema: Approvals-1}\n",
     "line 12: approvals.postgres: expected schema to be a lower-case SQL identifier of at most 63 characters "
     "(letters, digits, _), got 'Approvals-1'"),
    ("approvals:\n  store: postgres\n  postgres: {dsn: 'host=db', pasword_file: /x}\n",
     "line 12: approvals.postgres.pasword_file: unknown key; did you mean `password_file`?"),
    (f"approvals:\n  store: postgres\n  postgres:\n    dsn: 'host=db password={SECRET} oops'\n",
     "line 13: approvals.postgres.dsn: expected a libpq connection string (host=... dbname=... user=...) or a URI "
     "(postgresql://...); this one does not parse (it is not shown: it may hold a password)"),
])
def test_problems_name_the_key_its_line_and_what_was_expected(tmp_path, approvals, expected):
    code, output, found, _ = check(tmp_path, approvals)
    assert code == 2, output
    assert found == [expected]
    assert SECRET not in output


def test_a_dsn_file_that_does_not_parse_is_reported_without_its_text(tmp_path):
    (tmp_path / "dsn").write_text(f"postgresql://u:{SECRET}%zz@db/x\n")
    section = f"approvals:\n  store: postgres\n  postgres: {{dsn_file: {tmp_path / 'dsn'}}}\n"
    code, output, found, _ = check(tmp_path, section)
    assert code == 2 and len(found) == 1
    assert found[0].startswith("line 12: approvals.postgres.dsn_file: expected a libpq connection string")
    assert SECRET not in output


def test_a_good_section_passes_and_its_password_is_not_shown(tmp_path):
    code, output, found, _ = check(tmp_path, "approvals:\n  store: postgres\n  approver_groups: [dba]\n  postgres:\n"
                                             f"    dsn: 'host=db dbname=approvals user=pgwarden password={SECRET}'\n"
                                             "    password_file: /nonexistent/password\n")
    assert code == 0, output
    assert SECRET not in output
