"""What `pgwarden explain` says masking would do to a statement, with no database and no values.

The proxy learns a result's columns from the server's RowDescription; explain has none, so it
makes one from the statement's lineage (each output's name; the table OID, attribute number and
type of a direct output from the catalog, text otherwise) and then takes the proxy's own path:
`masking.resolve_shape` and `PluginHost.result_masks`. What it prints is therefore what the
masking plugins answer, not a re-implementation of their rules.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import attrs

from pgwarden.masking import resolve_shape
from pgwarden.plugins import MaskingFailed
from pgwarden.sql.lineage import Lineage, NamedLineage, Source
from pgwarden.wire import messages as m

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog, ColumnFacts
    from pgwarden.plugins import PluginHost
    from pgwarden.session import Session
    from pgwarden.sql.statement import Statement

#: The name of the one column explain asks about when lineage cannot say what a statement returns.
EVERY_COLUMN = "(every column)"


@attrs.frozen
class OutputMask:
    """One output of one statement and the mask the plugins would give it (None: none)."""

    output: str
    rule: str | None = None
    strategy: str | None = None
    source: str | None = None
    #: masked whole because it is derived from, or may be, a masked column (not its rule's strategy)
    whole: bool = False


@attrs.frozen
class StatementMasks:
    """What masking does to the rows of one statement of the string."""

    #: None: the statement returns no rows
    outputs: tuple[OutputMask, ...] | None
    #: the result would be refused: a masking plugin failed (its name and why)
    refused: str | None = None


def _facts(catalog: Catalog, source: Source) -> ColumnFacts | None:
    for relation in catalog.relations_named(source.table):
        if relation.schema == source.schema:
            return next((c for c in catalog.columns_of(relation.oid) or () if c.name == source.column), None)
    return None


def _same(lineage: Lineage) -> Lineage:
    return lineage


def description_of(lineage: Lineage, catalog: Catalog) -> m.RowDescription | None:
    """The RowDescription the server would send, as far as lineage and the catalog tell: None when
    the statement returns no rows; one opaque column when lineage cannot say what it returns."""
    if lineage.outputs is None:
        return m.RowDescription((m.Column(EVERY_COLUMN),)) if lineage.opaque else None
    columns = []
    for output in lineage.outputs:
        facts = None
        if output.direct and not output.opaque and len(output.sources) == 1:
            (source,) = output.sources
            facts = _facts(catalog, source)
        if facts is None:
            columns.append(m.Column(output.name))
        else:
            columns.append(m.Column(output.name, facts.relation, facts.attnum, facts.type or 25))
    return m.RowDescription(tuple(columns))


def statement_masks(host: PluginHost, statement: Statement, session: Session, catalog: Catalog) -> list[StatementMasks]:
    """Per statement of the string, each output's mask as the loaded masking plugins answer it
    (SQL-level names defined earlier in the string resolved as a session would)."""
    named = NamedLineage()
    found = []
    for lineage in statement.lineage:
        resolved = named.resolve(lineage)
        named.after(lineage)
        description = description_of(resolved, catalog)
        if description is None:
            found.append(StatementMasks(None))
            continue
        shape = resolve_shape(description, functools.partial(_same, resolved), catalog)
        try:
            masks = host.result_masks(shape, statement, session)
        except MaskingFailed as e:
            found.append(StatementMasks((), refused=str(e)))
            continue
        outputs = []
        for i, column in enumerate(description.columns):
            mask = masks.get(i)
            if mask is None:
                outputs.append(OutputMask(column.name))
            else:
                whole = mask.strategy in ("redact", "null") and mask.source != shape.columns[i].direct
                outputs.append(OutputMask(column.name, mask.rule, mask.strategy, mask.source or None, whole))
        found.append(StatementMasks(tuple(outputs)))
    return found


def masks_json(masks: list[StatementMasks]) -> list[dict[str, object]]:
    """As `pgwarden explain --json` prints them."""
    return [{"outputs": None if one.outputs is None else [attrs.asdict(o) for o in one.outputs],
             "refused": one.refused} for one in masks]


def masks_lines(masks: list[StatementMasks]) -> list[str]:
    """As `pgwarden explain` prints them: ``name: strategy by policy/rule (source)``."""
    lines = []
    for number, one in enumerate(masks, 1):
        head = "masks" if len(masks) == 1 else f"masks {number}"
        if one.refused is not None:
            lines.append(f"{head:10} the result would be refused: {one.refused}")
            continue
        if one.outputs is None:
            continue
        masked = [o for o in one.outputs if o.rule is not None]
        lines.append(f"{head:10} " + (f"{len(masked)} of {len(one.outputs)} output(s) masked" if masked
                                      else "none"))
        for output in masked:
            how = f"{output.strategy} (masked whole)" if output.whole else output.strategy
            source = output.source if output.source not in (None, "(unknown)") else "unknown"
            lines.append(f"  {output.output}: {how} by {output.rule} (source {source})")
    return lines
