"""Testing tools for pgwarden and its plugin authors: a throwaway PostgreSQL, keys, fixtures."""

from pgwarden.testing.waiting import WaitTimeout, wait_until

__all__ = ["WaitTimeout", "wait_until"]
