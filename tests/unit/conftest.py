"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pgwarden import cli
from pgwarden.sql.context import SqlContext

#: `pgwarden explain SQL [ARGS...]` run in-process: its exit code and what it printed (stdout + stderr)
Explain = Callable[..., tuple[int, str]]


@pytest.fixture
def make_explain(tmp_path, monkeypatch, capsys) -> Callable[[str, Callable[[], SqlContext]], Explain]:
    """``make_explain(config_text, context)``: `pgwarden explain` over that config as subject ``a``,
    with ``--dsn`` answered by ``context()`` instead of a database's catalog."""

    def make(config: str, context: Callable[[], SqlContext]) -> Explain:
        cfg = tmp_path / "c.yaml"
        cfg.write_text(config)
        monkeypatch.setattr(cli, "_live_context", lambda dsn: context())

        def run(sql: str, *args: str) -> tuple[int, str]:
            code = cli.main(["explain", "-c", str(cfg), "--subject", "a", "--dsn", "test", *args, sql])
            captured = capsys.readouterr()
            return code, captured.out + captured.err

        return run

    return make
