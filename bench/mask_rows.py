#!/usr/bin/env python3
"""What rewriting rows costs, in-process: `row_transform` over the 10,000 DataRows of
`bench/masking.py`'s ``wide`` table, in runs of about 64 KiB as the relay hands them over.

Far less noisy than pgbench on a shared machine: the masks are the mask plugin's own answers
(``pgwarden_result_masks`` for the same policies), the rows those PostgreSQL sends for
``SELECT * FROM wide`` (text format). Prints the best of ``--repeat`` timings of the whole
result per configuration, and, against ``--baseline`` (a plain copy of the rows, what
pass-through costs at least), nothing else: the pgbench ratios include the relay and the server.

    .venv/bin/python bench/mask_rows.py
    .venv/bin/python bench/mask_rows.py --repeat 20 --profile detect
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import pstats
import sys
import time
from decimal import Decimal
from types import SimpleNamespace

import attrs

from pgwarden.api import MaskSpec
from pgwarden.config import _CONVERTER, structure_section
from pgwarden.masking import ResultColumn, ResultShape, row_transform
from pgwarden.policy.model import Policy
from pgwarden.wire import messages as m
from pgwarden_plugins.mask import Masking

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from masking import DETECT_RULE, MASK_RULES, ROWS  # noqa: E402

# (name, type OID) of ``wide``'s columns.
COLUMNS = [("id", 23), ("name", 25), ("email", 25), ("ssn", 25), ("card", 25), ("city", 25), ("note", 25),
           ("amount", 1700), ("created", 1082), ("score", 23)]
RUN = 65536


def rows() -> list[bytes]:
    """The DataRows of ``wide`` as PostgreSQL sends them (text format), as bench/masking.py fills it."""
    out = []
    for g in range(1, ROWS + 1):
        ssn = f"{g % 899 + 100:03d}-{g % 89 + 10:02d}-{g % 8999 + 1000:04d}"
        values = [str(g), f"User {g}", f"user{g}@example.com", ssn, f"4111 1111 1111 {g % 10000:04d}",
                  f"City {g % 100}", f"a note about order {g}", str((Decimal(g) * Decimal("13.37")).quantize(
                      Decimal("0.01"))), (datetime.date(2020, 1, 1) + datetime.timedelta(days=g % 1000)).isoformat(),
                  str(g % 1000)]
        body = len(values).to_bytes(2, "big") + b"".join(len(v.encode()).to_bytes(4, "big") + v.encode()
                                                          for v in values)
        out.append(b"D" + (len(body) + 4).to_bytes(4, "big") + body)
    return out


def runs(data: list[bytes]) -> list[bytes]:
    """The rows in runs of about `RUN` bytes, whole messages each."""
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for row in data:
        current.append(row)
        size += len(row)
        if size >= RUN:
            out.append(b"".join(current))
            current, size = [], 0
    if current:
        out.append(b"".join(current))
    return out


def transform(rules: list[dict]):
    """``row_transform`` with the mask plugin's answer for ``wide`` under a policy of ``rules``."""
    policy = _CONVERTER.structure({"name": "bench", "default": "allow", "rules": rules}, Policy)
    policy = attrs.evolve(policy, rules=tuple(attrs.evolve(r, spec=structure_section(r.spec.data, MaskSpec, ()))
                                              for r in policy.rules))
    description = m.RowDescription(tuple(m.Column(name, 1, i + 1, oid) for i, (name, oid) in enumerate(COLUMNS)))
    resolved = tuple(ResultColumn(i, c.name, c.type_oid, 0, f"public.wide.{c.name}",
                                  frozenset({f"public.wide.{c.name}"}), False, c)
                     for i, c in enumerate(description.columns))
    shape = ResultShape(description, lambda: (resolved, frozenset(r.direct for r in resolved)))
    plugin = Masking()
    plugin.pgwarden_configure(None, {})
    masks = plugin.pgwarden_result_masks(shape, SimpleNamespace(policies=(policy,)))
    return row_transform(description, masks)


CONFIGS = {"mask-2": MASK_RULES, "detect": MASK_RULES + [DETECT_RULE]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--profile", choices=list(CONFIGS))
    args = parser.parse_args()
    result = runs(rows())
    if args.profile:
        t = transform(CONFIGS[args.profile])
        with cProfile.Profile() as profile:
            for run in result:
                t(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)
        return 0
    timings = {"copy (floor)": lambda: [bytes(bytearray(run)) for run in result]}
    for name, rules in CONFIGS.items():
        def one(rules=rules):
            t = transform(rules)  # a fresh transform per result, as the relay makes one
            return [t(run) for run in result]
        timings[name] = one
    print(f"{ROWS:,} rows of 10 columns in {len(result)} runs; best of {args.repeat} (CPU ms per result)")
    for name, fn in timings.items():
        best = min(_timed(fn) for _ in range(args.repeat))
        print(f"  {name:14} {best * 1000:8.2f} ms   {best / ROWS * 1e6:6.2f} µs/row")
    return 0


def _timed(fn) -> float:
    start = time.process_time()  # CPU time: other processes on a loaded machine move wall time
    fn()
    return time.process_time() - start


if __name__ == "__main__":
    sys.exit(main())
