"""Statement analysis on the real PostgreSQL parser (pglast / libpg_query)."""

from pgwarden.sql.statement import Statement, analyze

__all__ = ["Statement", "analyze"]
