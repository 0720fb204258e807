#!/usr/bin/env python3
"""`make bench`: pgbench against PostgreSQL directly, through pgwarden and through PgBouncer, in one run.

The benchmark is the package beside this file, `pgbench_run` (its docstring, `--help` and
bench/README.md say what it does): settings, workloads, servers, pgwardens, rounds, report,
launch and cli, one module each.
"""

import sys

from pgbench_run.cli import main

if __name__ == "__main__":
    sys.exit(main())
