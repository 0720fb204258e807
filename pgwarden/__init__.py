"""pgwarden: a PostgreSQL wire-protocol proxy that governs what AI agents may do to a database."""

__version__ = "0.1.0"
