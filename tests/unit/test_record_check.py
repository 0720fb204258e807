"""The records' fast check (fastjsonschema) and the reference (jsonschema) give the same answers.

`pgwarden.testing.record_check` trusts fastjsonschema when it accepts a record; these tests hold it
to jsonschema's verdict on the documented records (docs/records.md, every type), on each of them
broken in one place every way (a field removed, given a value of another type, out of range or off
its pattern, a key added), and on records broken in several places at random.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import fastjsonschema
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgwarden.schemas import record_schema
from pgwarden.testing.matrix import examples
from pgwarden.testing.record_check import (
    SHARED_KEYWORDS,
    Disagreement,
    RecordValidator,
    fast_checks_alike,
    keywords,
    record_validator,
)

DOCUMENTED = [record for record in (json.loads(line) for line in
              (Path(__file__).resolve().parents[2] / "docs" / "records.md").read_text().splitlines()
              if line.startswith('{"ts"')) if "hash" in record]  # not the op log's lines
REFERENCE = jsonschema.Draft202012Validator(record_schema())
FAST = fastjsonschema.compile(record_schema())

#: values of every JSON type, some out of the schema's ranges and patterns
OTHERS = [None, True, False, 0, -1, 1.5, -0.5, "", "x", "2026-11-25T16:21:11Z", "abc", "00000000000000000000",
          [], [1], ["a"], [None], {}, {"a": 1}, {"subject": None, "groups": []}]


def fast_accepts(record) -> bool:
    try:
        FAST(record)
    except fastjsonschema.JsonSchemaValueException:
        return False
    return True


def paths(value, prefix=()):
    """Every place in a JSON value: the paths to each dict key and list item."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*prefix, k)
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*prefix, i)
            yield from paths(v, (*prefix, i))


def test_the_documented_records_cover_every_type_and_both_accept_them():
    assert {r["type"] for r in DOCUMENTED} == set(record_schema()["properties"]["type"]["enum"])
    for record in DOCUMENTED:
        assert not list(REFERENCE.iter_errors(record)), record
        assert fast_accepts(record), record
        assert record_validator().is_valid(record)


def near(value) -> list:
    """Values close to ``value`` that the schema may refuse: the edges of its ranges and patterns."""
    if isinstance(value, bool):
        return [not value, 1, None]
    if isinstance(value, int):
        return [-1, 0, value + 0.5, str(value), None]
    if isinstance(value, float):
        return [-0.5, 0, -1, str(value), None]
    if isinstance(value, str):
        return ["", value + "x", value[:-1], value.upper(), 1, None]
    if isinstance(value, list):
        return [[], [None], [1], "x", {}]
    return [{}, [], "x", None]


def mutations(record):
    """The record broken in one place, every way `near` knows, at every place."""
    for path in paths(record):
        *parent_path, last = path
        for how in ["remove", *range(len(near(_at(record, path)))), "add"]:
            changed = copy.deepcopy(record)
            parent = _at(changed, parent_path)
            if how == "remove":
                del parent[last]
            elif how == "add":
                if not isinstance(parent[last], dict):
                    continue
                parent[last]["extra"] = 1
            else:
                parent[last] = near(parent[last])[how]
            yield path, how, changed


def _at(value, path):
    for step in path:
        value = value[step]
    return value


@pytest.mark.parametrize("number", range(len(DOCUMENTED)))
def test_both_give_the_same_answer_on_each_record_broken_in_one_place(number):
    record = DOCUMENTED[number]
    refusals = 0
    for path, how, changed in mutations(record):
        refused = bool(list(REFERENCE.iter_errors(changed)))
        assert refused == (not fast_accepts(changed)), (path, how, changed)
        refusals += refused
    assert refusals  # the mutations reach the schema's rules, not only what it allows


@st.composite
def broken(draw):
    record = copy.deepcopy(draw(st.sampled_from(DOCUMENTED)))
    for _ in range(draw(st.integers(1, 3))):
        where = list(paths(record))
        path = draw(st.sampled_from(where)) if where else ()
        *parent_path, last = path or (None,)
        parent = _at(record, parent_path)
        how = draw(st.sampled_from(["remove", "replace", "add"] if path else ["add"]))
        if how == "remove":
            del parent[last]
        elif how == "replace":
            parent[last] = copy.deepcopy(draw(st.sampled_from(near(parent[last]) + OTHERS)))
        else:
            target = parent[last] if path and isinstance(parent[last], dict) else record
            target[draw(st.sampled_from(["extra", "rows", "sql", "policy", "count", "groups"]))] = \
                copy.deepcopy(draw(st.sampled_from(OTHERS)))
    return record


@settings(max_examples=examples(300), deadline=None)
@given(record=broken())
def test_both_give_the_same_answer_on_broken_records(record):
    refused = bool(list(REFERENCE.iter_errors(record)))
    assert refused == (not fast_accepts(record)), (refused, record)
    errors = list(record_validator().iter_errors(record))
    assert bool(errors) == refused
    assert not any(isinstance(e, Disagreement) for e in errors)


def test_a_refusal_jsonschema_does_not_share_is_reported_not_passed():
    validator = RecordValidator(record_schema())
    validator.fast = lambda record: (_ for _ in ()).throw(fastjsonschema.JsonSchemaValueException("made up"))
    (error,) = validator.iter_errors(DOCUMENTED[0])
    assert isinstance(error, Disagreement) and "made up" in error.message


def test_jsonschema_alone_where_fastjsonschema_is_missing():
    validator = RecordValidator(record_schema())
    validator.fast = None
    bad = {**DOCUMENTED[0], "seq": 0}
    assert validator.is_valid(DOCUMENTED[0]) and not validator.is_valid(bad)
    assert "less than the minimum" in next(validator.iter_errors(bad)).message


@pytest.mark.parametrize("field", ["ts", "session", "prev", "hash"])
def test_patterns_are_checked_by_both(field):
    record = {**DOCUMENTED[0], field: DOCUMENTED[0][field] + "x"}
    assert list(REFERENCE.iter_errors(record)) and not fast_accepts(record)


def test_the_fast_check_is_used_for_the_records_schema():
    assert keywords(record_schema()) <= SHARED_KEYWORDS and fast_checks_alike(record_schema())
    assert RecordValidator(record_schema()).fast is not None


@pytest.mark.parametrize("keyword", ["prefixItems", "unevaluatedProperties", "dependentRequired"])
def test_a_schema_with_a_keyword_outside_the_shared_ones_is_checked_by_jsonschema_alone(keyword):
    value = [{"type": "integer"}] if keyword == "prefixItems" else False if keyword == "unevaluatedProperties" \
        else {"a": ["b"]}
    schema = {**record_schema(), "properties": {**record_schema()["properties"], "x": {keyword: value}}}
    assert RecordValidator(schema).fast is None


def test_a_ref_with_a_constraint_beside_it_is_checked_by_jsonschema_alone():
    """fastjsonschema checks a $ref alone (draft 7) and would pass what the constraint beside it refuses."""
    schema = {**record_schema(), "properties": {**record_schema()["properties"],
                                                "seq": {"$ref": "#/$defs/count", "minimum": 5}}}
    validator = RecordValidator(schema)
    assert validator.fast is None
    assert not validator.is_valid({**DOCUMENTED[0], "seq": 2})
