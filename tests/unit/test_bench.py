"""bench/ keeps working between benchmark runs: every module imports, `bench/run.py --help` answers,
issue 20's table computes and prints its figures (the floor's among them) from given results.

The benchmark itself takes minutes and is run by hand (`make bench`); what can rot unseen
in between is an import of one of its modules, each run here in a fresh interpreter the way
the scripts run (``bench/`` first on the path), or a figure of the table that no run shows
until the lead's next quiet one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

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
                   "--paired-rounds", "--table-rounds", "--table-duration", "--table-only", "--sessions",
                   "--no-forwarder"):
        assert option in done.stdout
    assert "pgbench against PostgreSQL directly, through pgwarden and through PgBouncer" in done.stdout


@pytest.fixture(scope="module")
def table() -> Iterator[ModuleType]:
    """`pgbench_run.table`, imported the way the scripts import it (``bench/`` first on the path);
    the bench modules are forgotten afterwards, so no other test meets bench's top-level names."""
    sys.path.insert(0, str(BENCH))
    try:
        import pgbench_run.table

        yield pgbench_run.table
    finally:
        sys.path.remove(str(BENCH))
        for name in [n for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(str(BENCH))]:
            del sys.modules[name]


def _result(target: str, latency_ms: float | None = None, cpu_us: float | None = None) -> object:
    from pgbench_run.workloads import RunResult

    return RunResult(target=target, ok=True, tps=1000.0, latency_ms=latency_ms, transactions=4000,
                     cpu_us_per_statement=cpu_us)


def _round(forwarder_cpu_1c: float, forwarder_latency_ms: float) -> dict:
    """One round of the one-client and 8-client runs: direct 0.100 ms, PgBouncer +20 µs at 10 µs of
    CPU (20 at 8 clients), pass-through pgwarden +60 µs at 30 µs of CPU (50 at 8 clients)."""
    r = _result
    return {
        "latency-1c": {"direct": r("direct", 0.100), "pgbouncer": r("pgbouncer", 0.120, 10.0),
                       "pgwarden": r("pgwarden", 0.160, 30.0),
                       "forwarder": r("forwarder", forwarder_latency_ms, forwarder_cpu_1c)},
        "select-simple": {"direct": r("direct"), "pgbouncer": r("pgbouncer", cpu_us=20.0),
                          "pgwarden": r("pgwarden", cpu_us=50.0), "forwarder": r("forwarder", cpu_us=25.0)},
    }


def test_the_forwarder_runs_at_one_client_and_at_eight(table):
    workloads = {w.name: names for w, names in table.TABLE_WORKLOADS}
    assert "forwarder" in workloads["latency-1c"] and "forwarder" in workloads["select-simple"]


def test_the_forwarders_cpu_is_read_from_its_own_pid(table):
    from pgbench_run.workloads import Target

    direct = Target("direct", "127.0.0.1", 1, "u", "p")
    found = table.runners(direct, None, None, {}, Target("forwarder", "127.0.0.1", 2, "u", "p"), 4242)
    assert found["forwarder"].pid() == 4242 and found["forwarder"].inner.target.port == 2
    assert "forwarder" not in table.runners(direct, None, None, {})


def test_the_floor_is_the_forwarders_ratio_to_pgbouncer_and_its_share_of_pass_throughs(table):
    # CPU at 1 client: forwarder 15, 12, 18 µs over PgBouncer's 10; latency: +40, +30, +50 µs over +20
    by_round = [_round(15.0, 0.140), _round(12.0, 0.130), _round(18.0, 0.150)]
    summary = table.summarize(by_round, 4, {})
    cpu, latency = summary["figures"]["floor_cpu_1c"], summary["figures"]["floor_latency"]
    assert cpu["median"] == pytest.approx(1.5) and (cpu["low"], cpu["high"]) == pytest.approx((1.2, 1.8))
    assert latency["median"] == pytest.approx(2.0) and latency["high"] == pytest.approx(2.5)
    assert cpu["met"] is None and latency["met"] is None  # a reference, not a target
    # pass-through: 3.0x PgBouncer's CPU, 3.0x its added latency: the floor is half of the one, 2/3 of the other
    assert cpu["share_of"] == {"figure": "cpu_1c_pass", "share": pytest.approx(0.5)}
    assert latency["share_of"] == {"figure": "latency_pass", "share": pytest.approx(2 / 3)}
    absolute = summary["absolute_us"]
    assert absolute["added latency at 1 client, forwarder"]["median"] == pytest.approx(40.0)
    assert absolute["CPU per statement at 1 client, forwarder"]["median"] == pytest.approx(15.0)
    assert absolute["CPU per statement at 8 clients (simple), forwarder"]["median"] == pytest.approx(25.0)
    json.dumps(summary)  # as `.bench/results.json` takes it

    lines = table.render(summary)
    floor_cpu = next(ln for ln in lines if "floor: forwarder CPU per statement at 1 client over PgBouncer's" in ln)
    assert "1.50x (1.20-1.80)" in floor_cpu and "50% of pass-through's 3.00x" in floor_cpu
    floor_latency = next(ln for ln in lines if "floor: forwarder added latency at 1 client over PgBouncer's" in ln)
    assert "2.00x (1.50-2.50)" in floor_latency and "67% of pass-through's 3.00x" in floor_latency
    assert any("CPU per statement at 8 clients (simple), forwarder" in ln and "25 µs (25-25)" in ln for ln in lines)


def test_the_floor_at_eight_clients_is_the_forwarders_cpu_and_throughput_over_pgbouncers(table):
    by_round = [_round(15.0, 0.140)]
    by_round[0]["select-simple"]["forwarder"].tps = 900.0  # PgBouncer 1000 TPS, pgwarden 1000 (made-up)
    by_round[0]["select-simple"]["pgwarden"].tps = 600.0
    summary = table.summarize(by_round, 4, {})
    cpu, tps = summary["figures"]["floor_cpu_8c"], summary["figures"]["floor_tps"]
    assert cpu["median"] == pytest.approx(25.0 / 20.0) and cpu["share_of"]["figure"] == "cpu_8c_pass"
    assert tps["median"] == pytest.approx(0.9) and tps["share_of"] == {"figure": "tps_pass_simple",
                                                                     "share": pytest.approx(1.5)}
    lines = table.render(summary)
    assert any("floor: forwarder throughput, simple, 8 clients" in ln and "0.90x" in ln
               and "150% of pass-through's 0.60x" in ln for ln in lines)


def test_without_the_forwarder_the_floor_is_not_measured(table):
    by_round = [_round(15.0, 0.140)]
    for got in by_round[0].values():
        del got["forwarder"]
    summary = table.summarize(by_round, 4, {})
    assert summary["figures"]["floor_cpu_1c"]["share_of"]["share"] is None
    assert "median" not in summary["figures"]["floor_latency"]
    line = next(ln for ln in table.render(summary) if "floor: forwarder CPU per statement" in ln)
    assert line.endswith("not measured")


def test_no_forwarder_leaves_the_floor_out_and_says_so(table):
    import argparse
    import contextlib

    from pgbench_run.launch import start_table_forwarder

    notes: list[str] = []
    with contextlib.ExitStack() as stack:  # nothing is started: it returns before
        args = argparse.Namespace(table_rounds=1, no_forwarder=True)
        assert start_table_forwarder(args, None, Path("/nonexistent"), stack, notes) == (None, None)
        assert notes == ["The table's floor (bench/forwarder.py) left out (--no-forwarder)."]
        assert start_table_forwarder(argparse.Namespace(table_rounds=0, no_forwarder=False), None,
                                     Path("/nonexistent"), stack, notes) == (None, None)
    assert len(notes) == 1  # no table, no floor, nothing to say


def test_the_report_names_the_interpreter_pgwarden_runs_on_and_its_build(table):
    """A figure of pgwarden's CPU depends on the interpreter's build (docs/performance.md), so the
    report says which one ran: this one (`start_pgwarden` starts ``sys.executable``)."""
    import os
    import platform

    from pgbench_run.launch import interpreter_build
    from pgbench_run.report import render_report

    line = interpreter_build()
    assert line.startswith(f"CPython {platform.python_version()} ({os.path.realpath(sys.executable)}; ")
    linked = "libpython" in Path("/proc/self/maps").read_text()
    assert ("libpython shared" in line) is linked and ("libpython in the executable" in line) is not linked
    from pgwarden.compiled import build

    assert line.endswith(f"pgwarden {build()}")
    assert render_report([], None, {}, [], 15, interpreter=line).splitlines()[1] == f"pgwarden on {line}"


# The in-process loops (no server, no sockets) run for a few hundred statements each: they use
# pgwarden's internals (a session's connection state, the relay, the recorder), which change
# under them without an import failing (decide_loop and record_path failed for a session when the
# decision came to require a `ConnectionState`).
IN_PROCESS_LOOPS = [
    pytest.param(["relay_loop.py", "--n", "200", "--rounds", "1"], r"simple .* µs .*\nextended .* µs", id="relay"),
    *(pytest.param(["decide_loop.py", "--config", config, "--n", "200", "--rounds", "1"],
                   rf"{config}: [\d.]+ µs of CPU per decision", id=f"decide-{config}")
      for config in ("pass", "rules", "recording")),
    *(pytest.param(["record_path.py", "--config", config, "--part", part, "--time", "--n", "200"],
                   rf"{config} {part}: [\d.]+ µs per statement", id=f"record-{config}-{part}")
      for config in ("rules", "recording") for part in ("before-send", "all")),
]


@pytest.mark.parametrize(("argv", "says"), IN_PROCESS_LOOPS)
def test_the_in_process_loops_run(argv: list[str], says: str) -> None:
    import re

    done = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=120, cwd=BENCH.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(says, done.stdout), done.stdout
