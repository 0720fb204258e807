"""Hypothesis profiles: ``ci`` (the default), ``ci-thin`` (make test's second pass: with
``PGWARDEN_TEST_MATRIX=thin``, half the examples, `pgwarden.testing.matrix.examples`) and ``deep``
(``HYPOTHESIS_PROFILE=deep``)."""

import os

from hypothesis import settings

from pgwarden.testing.matrix import THIN_EXAMPLES, thin

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("ci-thin", max_examples=int(100 * THIN_EXAMPLES), deadline=None)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci-thin" if thin() else "ci"))
