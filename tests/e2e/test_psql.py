"""psql through pgwarden: simple and multi-statement queries, \\copy both ways, errors."""

from __future__ import annotations

import os
import subprocess


def psql(running, *args: str, stdin: str | None = None, token: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGPASSWORD=token or running.token(), PGSSLMODE="disable")
    return subprocess.run(
        ["psql", "-X", "-h", running.host, "-p", str(running.port), "-U", "agent", "-d", "appdb",
         "-v", "ON_ERROR_STOP=1", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=60,
    )


def test_simple_query(pgwarden):
    out = psql(pgwarden, "-A", "-t", "-c", "select 6 * 7")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42"


def test_multi_statement_string(pgwarden):
    out = psql(pgwarden, "-A", "-t", "-c", "create temp table ms (x int); insert into ms values (1), (2); "
               "select sum(x) from ms")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["CREATE TABLE", "INSERT 0 2", "3"]


def test_multi_statement_error_rolls_back_the_whole_string(pgwarden, pg_server):
    pg_server.psql("drop table if exists ms_keep; create table ms_keep (x int)", "appdb")
    out = psql(pgwarden, "-c", "insert into ms_keep values (1); select 1/0; insert into ms_keep values (2)")
    assert out.returncode != 0
    assert "division by zero" in out.stderr
    assert pg_server.psql("select count(*) from ms_keep", "appdb") == "0"


def test_copy_in_and_out(pgwarden, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("".join(f"{i},name {i}\n" for i in range(5000)))
    dst = tmp_path / "out.csv"
    script = (
        "create temp table c (id int, name text);\n"
        f"\\copy c from '{src}' with (format csv)\n"
        f"\\copy (select * from c order by id) to '{dst}' with (format csv)\n"
        "select count(*) from c;\n"
    )
    out = psql(pgwarden, "-A", "-t", stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "5000"
    assert dst.read_text() == src.read_text()


def test_bad_token_is_refused_without_detail(pgwarden):
    out = psql(pgwarden, "-c", "select 1", token="not-a-token")
    assert out.returncode != 0
    assert "pgwarden: authentication failed" in out.stderr
    assert "DETAIL" not in out.stderr


def test_psql_shows_server_errors_with_position(pgwarden):
    out = psql(pgwarden, "-c", "select nosuchcolumn from pg_class")
    assert out.returncode != 0
    assert 'column "nosuchcolumn" does not exist' in out.stderr
    assert "LINE 1:" in out.stderr
