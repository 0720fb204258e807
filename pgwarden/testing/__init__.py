"""Testing tools for pgwarden and its plugin authors: a throwaway PostgreSQL, keys, fixtures."""
