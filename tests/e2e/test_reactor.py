"""The end-to-end tests run on the reactor `pgwarden run` installs."""

from pgwarden.proxy.reactor import PgwardenReactor


def test_tests_run_on_pgwarden_reactor(reactor_thread):
    # If this fails, every other end-to-end test is checking a different event loop.
    assert isinstance(reactor_thread, PgwardenReactor)
