"""Masking as the core does it: what a result's columns are, and rewriting rows with plugins' masks.

The core resolves each output column of a result before any plugin sees it (`ResultShape`):
the base column the server says it is (RowDescription's table OID and attribute number,
through the catalog) and the base columns the statement's lineage says it is computed
from. Plugins answer with a `ColumnMask` per column; masks of several plugins compose, the
strictest per column winning (`compose`). The core then rewrites DataRows and COPY rows
(`row_transform`, `copy_transform`) and relays untouched every run of rows no mask needs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import attrs

from pgwarden.mask_rows import Prefilter, Step, Walker, field
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m

if TYPE_CHECKING:
    from pgwarden.catalog.model import Catalog
    from pgwarden.sql.lexer import LexerSettings
    from pgwarden.sql.lineage import Lineage

#: Rewrites one value of a result column (text or binary format, as the column says);
#: None is SQL NULL. Keep the value valid for the column's type.
Masker = Callable[[bytes | None, m.Column], bytes | None]

#: Rewrites the fields, ``(code, text)`` pairs, of an ErrorResponse or NoticeResponse.
MessageMask = Callable[[tuple[tuple[str, str], ...]], tuple[tuple[str, str], ...]]

#: How strict a plain `Masker` (plugin contract v1) counts when masks compose: as ``redact``.
PLAIN_STRENGTH = 4


@attrs.frozen
class Detector:
    """A kind of value found by its content: ``pattern`` finds candidates, ``validate`` (if any)
    confirms one (a checksum, a grammar). Patterns must not look behind their match: they are
    first searched over raw row bytes. ``digits`` and ``anchors`` promise what every match holds,
    so that most values are passed over without the expression running; a detector that promises
    neither has every value searched. A broken promise hides matches: keep them true.

    .. versionadded:: 1.1
    """

    name: str
    pattern: str
    validate: Callable[[str], bool] | None = None
    #: every match holds at least this many ASCII digits (0: none need be): a value with fewer
    #: is not searched (`pgwarden.mask_rows.Prefilter`). Since 1.2.
    digits: int = 0
    #: every match contains one of these strings (empty: no such promise): a value holding none
    #: of them (nor ``digits`` digits) is not searched. Since 1.2.
    anchors: tuple[str, ...] = ()


@attrs.frozen
class ResultColumn:
    """One output column of a result, resolved: what the server says it is, what lineage says
    it comes from.

    .. versionadded:: 1.1
    """

    index: int
    name: str
    type_oid: int
    format: int
    #: ``schema.table.column`` this output *is* as stored (RowDescription resolved through the
    #: catalog, or lineage's direct output); None when it is computed or unknown
    direct: str | None
    #: every base column (``schema.table.column``) its value is computed from, per lineage
    sources: frozenset[str]
    #: lineage could not say what it comes from: it may come from anything the statement reads
    opaque: bool
    #: the raw RowDescription column
    column: m.Column = attrs.field(eq=False, repr=False)


Resolved = tuple[tuple[ResultColumn, ...], "frozenset[str] | None"]


@attrs.frozen
class ResultShape:
    """A result's columns as the core resolved them, handed to ``pgwarden_result_masks``.

    Resolved when first read (``columns``, ``reads``): a plugin that has nothing to mask in a
    session answers without the statement's lineage ever being computed.

    .. versionadded:: 1.1
    """

    description: m.RowDescription = attrs.field(repr=False)
    _resolve: Callable[[], Resolved] = attrs.field(repr=False, eq=False)
    #: ``copy`` for the rows of COPY TO STDOUT (text values, no type OIDs: ``type_oid`` 25), else ``rows``
    kind: str = "rows"
    _resolved: list[Resolved] = attrs.field(factory=list, repr=False, eq=False)

    def _get(self) -> Resolved:
        if not self._resolved:
            self._resolved.append(self._resolve())
        return self._resolved[0]

    @property
    def columns(self) -> tuple[ResultColumn, ...]:
        """Each output column, resolved (`ResultColumn`)."""
        return self._get()[0]

    @property
    def reads(self) -> frozenset[str] | None:
        """Every base column the statement may read; None when lineage cannot tell."""
        return self._get()[1]


@attrs.frozen
class ColumnMask:
    """What a plugin does to one column: its masker, how strict it is, and what to record.

    .. versionadded:: 1.1
    """

    masker: Masker
    #: higher is stricter: the strictest mask of a column wins (`pgwarden.api.MASK_STRATEGIES` order)
    strength: int
    #: ``policy/rule`` that asked for it (records and metrics)
    rule: str = ""
    #: the base column it masks as (records and metrics name masked outputs by source, not alias)
    source: str = ""
    strategy: str = ""
    #: when given, the masker need not run on rows in which this finds nothing (a detector's
    #: quick test over a whole run of raw rows): such rows are relayed as they came
    candidate: Callable[[bytes], bool] | None = attrs.field(default=None, eq=False)
    #: detector hits (name -> count) the masker counts; recorded with the result, never values
    hits: Counter[str] | None = attrs.field(default=None, eq=False)
    #: the masker gives every non-NULL value the same answer (``redact``, ``null``, ``fixed``):
    #: it is asked once per result
    constant: bool = False
    #: the masker returns unchanged every value this rejects (`pgwarden.mask_rows.Prefilter`, a
    #: detector's): such values are not asked about
    prefilter: Prefilter | None = attrs.field(default=None, eq=False)
    #: NULL is masked too (the masker is given None): an output computed from a masked value,
    #: whose NULL-ness would say something of it (``nullif(substr(ssn, 1, 1), '8')`` is NULL
    #: exactly when the first digit is 8). A masked column itself keeps its NULLs.
    nulls: bool = False


@attrs.frozen
class MaskedOutput:
    """One masked output of a result, as records name it."""

    column: str
    source: str
    rule: str
    strategy: str


def compose(answers: Iterable[tuple[str, Mapping[int, ColumnMask | Masker] | None]],
            width: int) -> dict[int, ColumnMask]:
    """The strictest mask per column of every plugin's answer ((plugin name, answer) pairs);
    a tie goes to the plugin answering first. A plain `Masker` counts as ``redact``."""
    chosen: dict[int, ColumnMask] = {}
    for plugin, answer in answers:
        for index, mask in (answer or {}).items():
            if not isinstance(index, int) or not 0 <= index < width:
                continue
            if not isinstance(mask, ColumnMask):
                mask = ColumnMask(mask, PLAIN_STRENGTH, rule=f"plugin:{plugin}", strategy="plugin")
            known = chosen.get(index)
            if known is None or mask.strength > known.strength:
                chosen[index] = mask
    return chosen


class _Plan:
    """Masks of one result, applied to raw rows; counts what it masked."""

    __slots__ = ("columns", "masks", "quick", "counted", "outputs", "steps")

    def __init__(self, shape: m.RowDescription, masks: Mapping[int, ColumnMask]) -> None:
        self.columns = shape.columns
        self.masks = sorted(masks.items())
        # Rows need looking at only if a mask has no quick test, or a quick test finds a candidate.
        quick = [mask.candidate for _, mask in self.masks]
        self.quick: tuple[Callable[[bytes], bool], ...] | None = \
            tuple(q for q in quick if q is not None) if all(q is not None for q in quick) else None
        self.counted: Counter[int] = Counter()  # column index -> values masked (COPY rows)
        self.steps: list[Step] = []  # the row walk's, which count their own
        self.outputs = tuple(MaskedOutput(self.columns[i].name, mask.source or self.columns[i].name, mask.rule,
                                          mask.strategy) for i, mask in self.masks)

    @property
    def values(self) -> Counter[int]:
        """Values masked, by column index."""
        counted = Counter(self.counted)
        for step in self.steps:
            if step.count:
                counted[step.index] += step.count
        return counted


def row_transform(shape: m.RowDescription, masks: Mapping[int, ColumnMask | Masker]) -> Callable[[bytes], bytes]:
    """A function rewriting a run of raw DataRows of ``shape`` with ``masks`` (column index -> mask);
    runs in which no mask has anything to do come back as they went in.

    The walk is `pgwarden.mask_rows.Walker` (compiled where the build compiles it): each row
    read by its length words up to its last masked column and rebuilt from slices of the run.
    A masker's answer depends on the value alone, so answers are remembered per column while
    its values repeat; one whose ``constant`` is set is asked once, and values a detector's
    ``prefilter`` rejects are not asked about. NULL is given to plain `Masker`s of contract v1
    and to masks that mask NULL too (``nulls``); otherwise NULL stays NULL.
    """
    plan = _Plan(shape, compose([("", masks)], len(shape.columns)))
    steps: list[Step] = []
    for i, mask in plan.masks:
        column = plan.columns[i]
        constant = field(mask.masker(b"", column)) if mask.constant else None
        steps.append(Step(i, mask.masker, column, constant, mask.strategy == "plugin" or mask.nulls,
                          mask.prefilter))
    plan.steps = steps
    quick = plan.quick
    walk = Walker(steps).walk

    def transform(run: bytes) -> bytes:
        if quick is not None and not any(q(run) for q in quick):
            return run
        return walk(run)

    transform.plan = plan  # type: ignore[attr-defined]  # named in result records and metrics
    transform.columns = tuple(o.column for o in plan.outputs)  # type: ignore[attr-defined]
    return transform


# ---------------------------------------------------------------------------- COPY TO STDOUT rows

_TEXT_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_TEXT_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.S)


def _copy_text_value(field: str) -> str | None:
    if field == "\\N":
        return None

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x" and len(code) > 1:
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return _TEXT_ESCAPES.get(code, code)

    return _TEXT_UNESCAPE.sub(one, field)


def _copy_text_field(value: str | None) -> str:
    if value is None:
        return "\\N"
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r"))


def _csv_fields(line: str) -> list[str]:
    """The raw fields of one CSV row (quotes kept, so that unmasked fields go out as they came)."""
    fields: list[str] = []
    start = 0
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted  # a doubled quote inside a quoted field toggles twice
        elif ch == "," and not quoted:
            fields.append(line[start:i])
            start = i + 1
    fields.append(line[start:])
    return fields


def _csv_value(field: str) -> str | None:
    if field.startswith('"') and field.endswith('"') and len(field) >= 2:
        return field[1:-1].replace('""', '"')
    return None if field == "" else field


def _csv_field(value: str | None) -> str:
    if value is None:
        return ""
    if value == "" or any(ch in value for ch in ',"\n\r') or value == "\\.":
        return '"' + value.replace('"', '""') + '"'
    return value


def copy_transform(shape: m.RowDescription, masks: Mapping[int, ColumnMask | Masker], csv: bool,
                   encoding: str = "utf-8") -> Callable[[bytes], bytes]:
    """Rewrites the CopyData messages of COPY TO STDOUT (text or CSV with the default delimiter,
    quote and escape) column by column with ``masks``; ``shape`` names the columns (all text).
    Each CopyData of COPY OUT holds one row; fields no mask touches are kept byte for byte."""
    plan = _Plan(shape, compose([("", masks)], len(shape.columns)))
    steps = [(i, mask.masker, plan.columns[i]) for i, mask in plan.masks]
    values = plan.counted

    def masked(value: str | None, masker: Masker, column: m.Column, i: int) -> str | None:
        got = masker(None if value is None else value.encode(encoding), column)
        if value is not None:
            values[i] += 1
        return None if got is None else got.decode(encoding, "replace")

    def transform(raw: bytes) -> bytes:
        data = raw[5:].decode(encoding)
        line = data[:-1] if data.endswith("\n") else data
        if csv:
            fields = _csv_fields(line)
            for i, masker, column in steps:
                if i < len(fields):
                    fields[i] = _csv_field(masked(_csv_value(fields[i]), masker, column, i))
            body = ",".join(fields) + "\n"
        else:
            fields = line.split("\t")
            for i, masker, column in steps:
                if i < len(fields):
                    fields[i] = _copy_text_field(masked(_copy_text_value(fields[i]), masker, column, i))
            body = "\t".join(fields) + "\n"
        return m.CopyData(body.encode(encoding)).encode()

    transform.plan = plan  # type: ignore[attr-defined]
    transform.columns = tuple(o.column for o in plan.outputs)  # type: ignore[attr-defined]
    return transform


# ---------------------------------------------------------------------------- resolving a result's columns

#: pg_class.relkind of relations whose columns hold values of their own (not views)
_BASE_KINDS = frozenset({"r", "p", "f"})


def _told(description: m.RowDescription, catalog: Catalog) -> list[tuple[str | None, bool]]:
    """What the server's RowDescription says each column is: (base column or None, unknown),
    ``unknown`` when it names a table column the catalog cannot name (stale, or unreachable)."""
    told: list[tuple[str | None, bool]] = []
    for column in description.columns:
        if not column.table_oid:
            told.append((None, False))
            continue
        relation = catalog.relation(column.table_oid)
        facts = catalog.column(column.table_oid, column.attnum) if relation is not None else None
        if relation is None or facts is None:
            told.append((None, True))
        elif relation.kind in _BASE_KINDS:
            told.append((f"{relation.schema}.{relation.name}.{facts.name}", False))
        else:  # a view's column: what it is comes from lineage
            told.append((None, False))
    return told


def resolve_shape(description: m.RowDescription, lineage: Callable[[], Lineage | None], catalog: Catalog,
                  kind: str = "rows") -> ResultShape:
    """The columns of a result, from both authorities: the server's RowDescription (a column that
    is a table's column as stored, even where lineage missed it) and the statement's lineage
    (what every other column is computed from). Where neither can tell, the column is opaque.
    Resolved lazily: ``lineage`` is called when a plugin first reads the columns."""

    def resolve() -> Resolved:
        return _resolved(description, lineage(), catalog)

    return ResultShape(description, resolve, kind)


def _resolved(description: m.RowDescription, lineage: Lineage | None, catalog: Catalog) -> Resolved:
    columns = description.columns
    outputs = None
    if lineage is not None and not lineage.opaque and lineage.outputs is not None \
            and len(lineage.outputs) == len(columns):
        outputs = lineage.outputs
    told = _told(description, catalog)
    resolved = []
    for i, column in enumerate(columns):
        stored, unknown = told[i]
        if outputs is not None:
            out = outputs[i]
            sources = frozenset(str(s) for s in out.sources)
            direct = stored
            if direct is None and out.direct and len(sources) == 1 and not unknown:
                (direct,) = sources
            opaque = out.opaque or unknown
        else:
            sources = frozenset()
            direct = stored
            opaque = stored is None
        if stored is not None:
            sources |= {stored}
        resolved.append(ResultColumn(i, column.name, column.type_oid, column.format, direct, sources, opaque,
                                     column))
    reads = None
    if lineage is not None and lineage.reads is not None:
        reads = frozenset(str(s) for s in lineage.reads)
    return tuple(resolved), reads


# ---------------------------------------------------------------------------- COPY's options

COPY_REFUSAL = Refusal(
    "42501", "pgwarden: blocked: COPY of masked columns in binary format or with its own delimiter, quote, "
             "escape or NULL",
    "pgwarden masks COPY TO STDOUT rows in the default text and CSV forms only.",
    "Use COPY ... TO STDOUT in text or CSV format with the default options, or a SELECT.")


def copy_options(sql: str, index: int, lexer: LexerSettings | None = None) -> dict[str, object] | None:
    """The options of statement ``index`` of ``sql`` when it is a COPY (``format``, ``header``,
    and whether it sets delimiters, quoting or NULL), else None."""
    from pglast.parser import ParseError

    from pgwarden.sql.lexer import parse_tree

    try:
        tree = parse_tree(sql, lexer) if lexer is not None else parse_tree(sql)
        stmt = tree["stmts"][index]["stmt"]["CopyStmt"]
    except (ParseError, KeyError, IndexError, TypeError):
        return None
    options: dict[str, object] = {"format": "text", "header": False, "custom": False,
                                  "from": bool(stmt.get("is_from")),
                                  "server_side": bool(stmt.get("filename") or stmt.get("is_program"))}
    for item in stmt.get("options", ()):
        elem = item.get("DefElem", {})
        name = elem.get("defname")
        arg = elem.get("arg", {})
        value = arg.get("String", {}).get("sval") if isinstance(arg, dict) else None
        if name == "format":
            options["format"] = (value or "text").lower()
        elif name == "header":
            # A header line is skipped by the masking: it is taken for one only when the server
            # surely writes it (HEADER alone, 1, or a true word: `HEADER 0` is an Integer, off)
            options["header"] = _header_on(arg)
        elif name in ("delimiter", "quote", "escape", "null", "encoding", "force_quote", "force_not_null",
                      "force_null", "default"):
            options["custom"] = True
    return options




def _header_on(arg: object) -> bool:
    """Whether COPY's HEADER option given ``arg`` (its parse tree) writes a header line."""
    if not arg:
        return True  # HEADER alone
    if not isinstance(arg, dict):
        return False
    if "Integer" in arg:
        return (arg["Integer"] or {}).get("ival", 0) == 1
    if "Boolean" in arg:
        return bool((arg["Boolean"] or {}).get("boolval", False))
    if "String" in arg:
        # the server's parse_bool: these, and their prefixes it accepts
        return str((arg["String"] or {}).get("sval", "")).lower() in _TRUE_WORDS
    return False


_TRUE_WORDS = frozenset({"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"})


# ---------------------------------------------------------------------------- rules naming no column

def missing_columns(policies: Iterable[object], catalog: Catalog) -> list[str]:
    """A warning for each column glob of a ``mask`` rule that matches no column of ``catalog``
    (a live one: the snapshot knows no table of the database). Not an error: the column may come
    with the next migration; until then the rule masks nothing, which an operator should know."""
    import fnmatch

    from pgwarden.policy.kinds import MASK

    names = [f"{r.schema}.{r.name}.{c.name}" for r in catalog.relations
             for c in (catalog.columns_of(r.oid) or ())]
    warnings: list[str] = []
    for policy in policies:
        for i, rule in enumerate(getattr(policy, "rules", ())):
            spec = MASK.of(rule)
            if spec is None or spec.detect:
                continue
            for glob in spec.columns:
                if not any(fnmatch.fnmatchcase(name, glob) for name in names):
                    warnings.append(f"mask rule {policy.name}/{rule.name or f'rules[{i}]'}: {glob} matches no "  # type: ignore[attr-defined]
                                    f"column of the database; it masks nothing")
    return warnings
