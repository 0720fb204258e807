"""`pgwarden demo` as a newcomer runs it: start, connect with the printed line, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from pgwarden.testing.postgres import free_port


def test_demo_prints_a_working_psql_line_and_cleans_up(tmp_path, spawn):
    directory = tmp_path / "demo"
    proc = spawn(  # should the demo hang, the fixture kills it and its PostgreSQL
        [sys.executable, "-m", "pgwarden", "demo", "--dir", str(directory), "--port", str(free_port())],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stop_signal=signal.SIGINT,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        text = "".join(lines)
        match = re.search(r'PGPASSWORD="\$\(cat (\S+)\)" psql "([^"]+)"', text)
        assert match, text
        token = open(match.group(1)).read().strip()
        out = subprocess.run(
            ["psql", "-X", "-A", "-t", match.group(2), "-c", "select count(*) from users; select count(*) from orders"],
            env=dict(os.environ, PGPASSWORD=token), capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["50", "500"]
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "cleaned up" in rest
    assert not directory.exists()
