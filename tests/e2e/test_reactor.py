"""The end-to-end tests run on the reactor `pgwarden run` installs: PGWARDEN_REACTOR's choice.

`make test` runs the suite twice: on pgwarden's own reactor, and with
``PGWARDEN_REACTOR=default`` on Twisted's, where `pgwarden.turns.Turns` ends
its turns with ``callLater(0)`` instead of at the end of the poll.
"""

import subprocess
import sys

from pgwarden.proxy.reactor import PgwardenReactor, chosen
from pgwarden.turns import IEndOfPoll


def test_tests_run_on_the_reactor_pgwarden_reactor_names(reactor_thread):
    # If this fails, every other end-to-end test is checking a different event loop.
    if chosen() == "default":
        assert not isinstance(reactor_thread, PgwardenReactor)
        assert not IEndOfPoll.providedBy(reactor_thread)  # the turns end by callLater(0)
    else:
        assert isinstance(reactor_thread, PgwardenReactor)
        assert IEndOfPoll.providedBy(reactor_thread)


def test_an_unknown_reactor_stops_pgwarden_run_saying_which_exist(tmp_path):
    import os

    done = subprocess.run([sys.executable, "-m", "pgwarden", "run", "-c", str(tmp_path / "none.yaml")],
                          env={**os.environ, "PGWARDEN_REACTOR": "select"}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == "pgwarden: PGWARDEN_REACTOR='select': expected one of pgwarden, default"
