"""pgbench against PostgreSQL directly, through pgwarden and through PgBouncer, in one run.

Why one script does everything: the figures of a workload only mean something
next to each other when they were taken on the same machine, the same data and
the same minute. So this starts a throwaway PostgreSQL, fills it with
``pgbench -i``, puts pgwarden and PgBouncer in front of it, and then runs each
workload against the targets back to back (rotating which goes first) before
moving on to the next workload. For the select-only simple and prepared
workloads two more targets join: a second pgwarden whose policy has ten block
rules, so what checking rules costs is measured beside the pass-through figure,
and a third that records every statement to a file, so what recording costs is
measured against recording off in the same run, once per workload like the
other targets and then in a few paired rounds of shorter runs (recording off
and on, alternating order) whose median resolves what one pair cannot. The
ratios to direct of the pgwarden with rules, for which the targets are set,
are also measured that way: rounds of direct, it and PgBouncer. The
pgwardens without a record sink run with recording off (no sink, the
recording plugin disabled).

Prints a table of TPS and ratios, the cost of recording and the size of its
records, the latency pgwarden adds per statement, and pgwarden's memory; writes
the same to ``.bench/results.json``. At the end the record file is checked with
`pgwarden.chain.verify` against the chain head pgwarden logged when it closed it.
Everything it started is stopped and every temporary directory removed on exit,
Ctrl-C and errors included.

    make bench                      # default: 15 s per run
    .venv/bin/python bench/run.py --quick --only select-simple --no-pgbouncer
    .venv/bin/python bench/run.py --no-rules        # without the pgwarden with rules
    .venv/bin/python bench/run.py --no-recording    # without the pgwarden that records
    .venv/bin/python bench/run.py --paired-rounds 5 # more rounds for the recording cost and the rules targets
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Benchmark the working tree, not some other install: before any module of the package imports pgwarden.
sys.path.insert(0, str(REPO))
