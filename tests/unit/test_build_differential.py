"""Compiled and pure Python answer the same, bit for bit (issue 20: the ``.py`` modules are the
source of truth and the fallback, "same behaviour, bit for bit").

The whole suite runs against both builds (`make test`), each checked against what it should
answer; this runs the same seeded inputs through both in one test and compares everything they
answer: the relay's bytes both ways, its requests, results and state after each step (masks,
refusals, counted and pending statements, pieces cut anywhere, garbage), the framer's frames, the
statement cache's analyses, templates and fingerprints, the hash chain's lines and timestamps
(`build_differential.py`). A difference names the part; ``--dump DIR`` on both runs shows where.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pgwarden import compiled

DRIVER = Path(__file__).with_name("build_differential.py")
#: `make fuzz` (the deep profile): many more seeds, each longer
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"


def _run(seed: int, *, pure: bool, count: int = 400) -> dict[str, str]:
    # One hash seed for both: an answer that followed a set's order would otherwise differ between
    # two runs of the same build.
    env = {**{k: v for k, v in os.environ.items() if k != compiled.PURE_ENV}, "PYTHONHASHSEED": "0"}
    if pure:
        env[compiled.PURE_ENV] = "1"
    done = subprocess.run([sys.executable, str(DRIVER), str(seed), str(count)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _compare(seed: int, count: int) -> None:
    native = _run(seed, pure=False, count=count)
    if native["build"] != compiled.COMPILED:
        pytest.skip("the hot path is not compiled here: there is one build to run")
    python = _run(seed, pure=True, count=count)
    assert python["build"] == compiled.PURE
    assert native.keys() == python.keys()
    differing = [part for part in native if part != "build" and native[part] != python[part]]
    assert not differing, (f"compiled and pure Python differ in {differing} (seed {seed}): run "
                           f"{DRIVER.name} {seed} {count} --dump DIR with and without {compiled.PURE_ENV}=1")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_and_pure_python_answer_the_same(seed: int) -> None:
    _compare(seed, 400)


@pytest.mark.skipif(not DEEP, reason="make fuzz only (HYPOTHESIS_PROFILE=deep): ~2 min")
def test_fuzz_both_builds_on_many_seeds() -> None:
    for seed in range(1000, 1040):
        _compare(seed, 2000)
