"""A running pgwarden says on /metrics whether its hot path runs compiled or as pure Python."""

from __future__ import annotations

import urllib.request

from pgwarden import __version__, compiled


def test_metrics_say_which_build_runs(pgwarden_process) -> None:
    """The process inherits this one's environment (PGWARDEN_PURE_PYTHON), so runs the same build."""
    running = pgwarden_process()
    with urllib.request.urlopen(f"http://127.0.0.1:{running.admin_port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    line = f'pgwarden_build_info{{compiled="{compiled.build()}",version="{__version__}"}} 1.0'
    assert line in metrics.splitlines()
