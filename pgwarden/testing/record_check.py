"""Records checked against their schema, fast enough to check every record of every test.

The suite checks each record each test writes (`check_records`): tens of thousands a run.
jsonschema, the reference implementation of the schema's draft, takes ~1 ms a record here, a
few percent of the whole suite's time in the tests' own process. fastjsonschema compiles the
schema into Python code and takes ~40 µs. So a record is checked by fastjsonschema first; when
it finds a fault, jsonschema says what is wrong (its messages name the keyword and the path), and
if jsonschema finds nothing, the disagreement is itself the failure. Where fastjsonschema is not
installed (a plugin author's environment), jsonschema checks every record, as before.
``tests/unit/test_record_check.py`` holds the two to the same answers on valid records and on
records broken every way the schema forbids.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any


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
        self.fast: Callable[[Any], object] | None
        self._refused: type[Exception] = Disagreement
        try:
            import fastjsonschema
        except ImportError:
            self.fast = None
        else:
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
