"""JSON Schemas that ship with pgwarden (the record format: records.schema.json)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files


@cache
def record_schema() -> dict:
    return json.loads(files(__name__).joinpath("records.schema.json").read_text())
