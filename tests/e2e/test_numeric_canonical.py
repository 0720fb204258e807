"""A numeric's binary form read as the server writes it in text (`plugins/mask/values.canonical`):
what ``hash`` hashes, so that a value hashes alike in text and binary results (it did not:
``50000.00`` in text, ``50000`` from binary). Compared with the server's own text."""

from __future__ import annotations

import psycopg
import pytest

from pgwarden_plugins.mask.values import Family, canonical

VALUES = ["50000.00", "0", "0.00", "-1.5", "0.0000001", "123456789012345678901234567890.123456789",
          "1e-20", "-0.000", "10000", "99999999.99999999", "NaN", "Infinity", "-Infinity", "1.000000000000000000000000000001"]


@pytest.mark.parametrize("value", VALUES)
def test_a_numerics_binary_form_reads_as_its_text(pg_server, value):
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        text = c.execute("SELECT %s::numeric::text", (value,)).fetchone()[0]
        with c.cursor(binary=True) as cur:
            cur.execute("SELECT %s::numeric", (value,))
            raw = cur.pgresult.get_value(0, 0)
    assert canonical(bytes(raw), Family.NUMERIC, 1).decode() == text
