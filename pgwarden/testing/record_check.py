"""Records checked against their schema, fast enough to check every record of every test.

The suite checks each record each test writes (`check_records`): tens of thousands a run.
jsonschema, the reference implementation of the schema's draft, takes ~1 ms a record here, a
few percent of the whole suite's time in the tests' own process. fastjsonschema compiles the
schema into Python code and takes ~40 µs. So a record is checked by fastjsonschema first; when
it finds a fault, jsonschema says what is wrong (its messages name the keyword and the path), and
if jsonschema finds nothing, the disagreement is itself the failure. Where fastjsonschema is not
installed (a plugin author's environment), or the schema uses what fastjsonschema would read
otherwise than the schema's draft (2020-12) means it (`fast_checks_alike`), jsonschema checks
every record, as before.
``tests/unit/test_record_check.py`` holds the two to the same answers on valid records and on
records broken every way the schema forbids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

#: the keywords fastjsonschema reads as the schema's draft (2020-12) means them: a schema that uses
#: any other (``prefixItems``, ``unevaluatedProperties``, ``dependentRequired``, ``$dynamicRef``, ...)
#: is checked by jsonschema alone, not passed by a validator that would ignore what it cannot read
SHARED_KEYWORDS = frozenset({
    "$schema", "$id", "$ref", "$defs", "$comment", "title", "description", "default", "examples",
    "type", "enum", "const", "properties", "required", "additionalProperties", "propertyNames",
    "patternProperties", "minProperties", "maxProperties", "items", "minItems", "maxItems",
    "uniqueItems", "contains", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "allOf", "anyOf", "oneOf", "not", "if",
    "then", "else",
})

#: where a schema's values are names of the author's choosing, not keywords
_NAMED = frozenset({"properties", "patternProperties", "$defs"})
#: where they are data (values, names), not schemas
_DATA = frozenset({"enum", "const", "default", "examples", "required"})


#: what may stand beside a ``$ref`` that fastjsonschema reads as 2020-12 does: it checks a ``$ref``
#: alone (draft 7's rule) and would ignore a constraint beside it, which 2020-12 applies
_BESIDE_REF = frozenset({"$ref", "$comment", "title", "description", "default", "examples"})


def fast_checks_alike(schema: Any) -> bool:
    """Whether fastjsonschema checks ``schema`` as jsonschema does: only shared keywords, and
    nothing but notes beside a ``$ref``."""
    return keywords(schema) <= SHARED_KEYWORDS and not _constrained_refs(schema)


def _constrained_refs(schema: Any) -> bool:
    if isinstance(schema, dict):
        if "$ref" in schema and not set(schema) <= _BESIDE_REF:
            return True
        return any(_constrained_refs(v) for k, v in schema.items() if k not in _DATA)
    if isinstance(schema, list):
        return any(_constrained_refs(v) for v in schema)
    return False


def keywords(schema: Any) -> set[str]:
    """Every keyword a schema uses, at any depth (not the names under properties or $defs)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key in _NAMED and isinstance(value, dict):
                for sub in value.values():
                    found |= keywords(sub)
            elif key not in _DATA:
                found |= keywords(value)
    elif isinstance(schema, list):
        for item in schema:
            found |= keywords(item)
    return found


class Disagreement(Exception):
    """fastjsonschema refused a record that jsonschema accepts: a fault of this check, reported as one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = f"fastjsonschema refused what jsonschema accepts: {message}"


class RecordValidator:
    """``iter_errors(record)``, as jsonschema's validators have it: nothing for a valid record."""

    def __init__(self, schema: dict[str, Any]) -> None:
        import jsonschema

        self.reference = jsonschema.Draft202012Validator(schema)
        self.fast: Callable[[Any], object] | None = None
        self._refused: type[Exception] = Disagreement  # what `fast` raises for a record it refuses
        if fast_checks_alike(schema):
            try:
                import fastjsonschema
            except ImportError:
                return
            self.fast = fastjsonschema.compile(schema)
            self._refused = fastjsonschema.JsonSchemaValueException

    def iter_errors(self, record: Any) -> Iterator[Any]:
        if self.fast is None:
            return self.reference.iter_errors(record)
        try:
            self.fast(record)
        except self._refused as e:
            errors = list(self.reference.iter_errors(record))
            return iter(errors or [Disagreement(getattr(e, "message", str(e)))])
        return iter(())

    def is_valid(self, record: Any) -> bool:
        return next(self.iter_errors(record), None) is None


@functools.cache
def record_validator() -> RecordValidator:
    """The validator of pgwarden/schemas/records.schema.json, built once (fastjsonschema's
    compilation takes ~50 ms; `check_records` runs after every test)."""
    try:
        import jsonschema  # noqa: F401
    except ImportError as e:
        raise ImportError("checking records against their schema needs jsonschema "
                          "(pip install jsonschema, or pgwarden[test])") from e
    from pgwarden.schemas import record_schema

    return RecordValidator(record_schema())
