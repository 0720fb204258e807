"""Masking, round six (2026-12-06): what the session's own checks found, each seen delivering the
value before its fix."""

from __future__ import annotations

import psycopg
import pytest

from pgwarden.testing.pytest_plugin import BUILTIN_PLUGINS

SSN = "123-45-6789"


@pytest.fixture
def family(pg_server, make_pgwarden):
    """A partitioned table and an inheritance parent, their column masked by the parent's name."""
    pg_server.psql("drop table if exists r6_part cascade; drop table if exists r6_parent cascade;"
                   "create table r6_part (id int, ssn text) partition by range (id);"
                   "create table r6_part_1 partition of r6_part for values from (0) to (10);"
                   "create table r6_part_1x partition of r6_part for values from (10) to (20) partition by range (id);"
                   "create table r6_part_1x_a partition of r6_part_1x for values from (10) to (20);"
                   f"insert into r6_part values (1, '{SSN}'), (11, '{SSN}');"
                   "create table r6_parent (id int, ssn text); create table r6_child (extra int) inherits (r6_parent);"
                   f"insert into r6_child values (1, '{SSN}', 0)", "appdb")
    yield make_pgwarden(policies=[{"name": "a", "default": "allow", "rules": [
        {"name": "s", "mask": {"columns": ["public.r6_part.ssn", "public.r6_parent.ssn"], "with": "redact"}}]}],
        only=BUILTIN_PLUGINS)
    pg_server.psql("drop table if exists r6_part cascade; drop table if exists r6_parent cascade", "appdb")


@pytest.mark.parametrize("table", ["r6_part_1", "r6_part_1x_a", "r6_child", "only r6_child"])
def test_a_partition_or_child_read_by_its_own_name_is_masked_by_its_parents_rule(family, table):
    # Its rows are the parent's rows (read through the parent they were masked); by its own name
    # they came back in clear, and a condition on them was no oracle.
    with psycopg.connect(family.dsn(), autocommit=True) as c:
        got = c.execute(f"select id, ssn from {table}").fetchall()
        assert got and SSN not in repr(got) and {ssn for _, ssn in got} == {"***"}
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="masked column public.r6_p"):
            c.execute(f"select id from {table} where ssn like '1%'")
