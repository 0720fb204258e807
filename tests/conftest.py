"""Hypothesis profiles: ``ci`` (the default), ``ci-thin`` (CI's second pass, `make
test-second-pass`: with ``PGWARDEN_TEST_MATRIX=thin``, half the examples,
`pgwarden.testing.matrix.examples`) and ``deep`` (``HYPOTHESIS_PROFILE=deep``); the cyclic
collector tuned as pgwarden's."""

import os

from hypothesis import settings

from pgwarden.cli import tune_gc
from pgwarden.testing.matrix import THIN_EXAMPLES, thin

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("ci-thin", max_examples=int(100 * THIN_EXAMPLES), deadline=None)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci-thin" if thin() else "ci"))


def pytest_collection_finish(session) -> None:
    """The cyclic collector as `pgwarden run` tunes it (`pgwarden.cli.tune_gc`), once the test
    modules are imported: most end-to-end tests run pgwarden in this process, and under the
    default thresholds the collector went through the whole heap (pytest's, hypothesis's, every
    module's) every few statements: ~15% of a worker's CPU (perf over a `make test` pass)."""
    if os.environ.get("PGWARDEN_TEST_DEFAULT_GC") != "1":
        tune_gc()
