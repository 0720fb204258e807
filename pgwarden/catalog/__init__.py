"""What the server's catalog says about functions, settings, relations and operators.

One component shared by the analysis, masking and approval (DESIGN.md §8b): a
`Catalog` is an immutable set of facts, from the live server (`live`) or from the
snapshot of a PostgreSQL release's built-in catalog shipped with pgwarden
(`snapshot`), so `pgwarden explain` works without a database and decisions go on
(failing closed for what only the live catalog could tell) while it is unreachable.
"""

from pgwarden.catalog.model import Catalog, FunctionFacts, OperatorFacts, RelationFacts

__all__ = ["Catalog", "FunctionFacts", "OperatorFacts", "RelationFacts"]
