"""A bounded cache of analysed statements, keyed by their text.

Agents repeat themselves: the same SQL text, analysed once, serves every later
occurrence in every session (a `Statement` is immutable once analysed).
"""

from __future__ import annotations

from collections import OrderedDict

from pgwarden.sql.statement import Statement


class StatementCache:
    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._items: OrderedDict[str, Statement] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, sql: str) -> Statement:
        items = self._items
        statement = items.get(sql)
        if statement is not None:
            items.move_to_end(sql)
            self.hits += 1
            return statement
        self.misses += 1
        statement = items[sql] = Statement(sql)
        if len(items) > self._size:
            items.popitem(last=False)
        return statement

    def __len__(self) -> int:
        return len(self._items)
