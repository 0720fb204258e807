"""bench/ keeps working between benchmark runs: every module imports, `bench/run.py --help` answers.

The benchmark itself takes minutes and is run by hand (`make bench`); what can rot unseen
in between is an import of one of its modules, each run here in a fresh interpreter the way
the scripts run (``bench/`` first on the path).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(
    [f"pgbench_run.{p.stem}" for p in (BENCH / "pgbench_run").glob("*.py") if p.stem != "__init__"]
    + [p.stem for p in BENCH.glob("*.py")]
)


def test_the_modules_are_found():
    assert {"pgbench_run.cli", "pgbench_run.report", "pgbench_run.rounds", "pgbench_run.table", "run",
            "ab"} <= set(MODULES)


# Each module imported as if first: the bench modules imported before it are forgotten (pgwarden,
# the expensive part, stays loaded), so an import cycle that one entry point hides shows.
IMPORT_EACH = """
import importlib, sys, traceback
bench, modules = sys.argv[1], sys.argv[2:]
sys.path.insert(0, bench)
for name in modules:
    for loaded in [m for m in sys.modules if m.partition(".")[0] in {n.partition(".")[0] for n in modules}]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        print(f"{name}: {traceback.format_exc()}")
"""


def test_each_module_imports_on_its_own():
    done = subprocess.run([sys.executable, "-c", IMPORT_EACH, str(BENCH), *MODULES], capture_output=True, text=True,
                          timeout=120, cwd=BENCH)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_run_py_answers_help_with_its_options():
    done = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for option in ("--duration", "--quick", "--only", "--no-pgbouncer", "--no-rules", "--no-recording",
                   "--paired-rounds", "--table-rounds", "--table-duration", "--table-only", "--sessions"):
        assert option in done.stdout
    assert "pgbench against PostgreSQL directly, through pgwarden and through PgBouncer" in done.stdout
