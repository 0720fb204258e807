"""Hypothesis profiles: ``ci`` (the default) and ``deep`` (``HYPOTHESIS_PROFILE=deep``)."""

import os

from hypothesis import settings

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("deep", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
