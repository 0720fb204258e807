#!/usr/bin/env python3
"""What several pgwarden processes behind one port would reach: a measurement of a design not built.

A single-threaded proxy is a serialisation point: while it waits for the CPU, every
client waits. `bench/ceiling.py --forwarder-processes 2` showed that two bare
forwarders sharing a port (SO_REUSEPORT) reach more of direct than one. This
measures the same for pgwarden itself, with the ten-rule policy of `run.py`'s
`pgwarden-rules`: direct, one pgwarden, and N pgwardens sharing one port, in
rotating order, select-only.

pgwarden has no option to share its port, and this does not add one: the
processes are started through this file (``--serve``), which sets SO_REUSEPORT
on Twisted's listening sockets before running `pgwarden run`. What such a
deployment would still lack, and why it is not built, is in docs/performance.md
("A second process raises the ceiling"): a CancelRequest reaching another
process than its session's is ignored, every process keeps its own record chain
and metrics.

    .venv/bin/python bench/processes.py                          # 2 processes, simple and prepared
    .venv/bin/python bench/processes.py --processes 3 --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def serve(argv: list[str]) -> int:
    """`pgwarden run` with SO_REUSEPORT on every listening socket."""
    from twisted.internet import tcp

    create = tcp.Port.createInternetSocket

    def create_shared(port):
        sock = create(port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock

    tcp.Port.createInternetSocket = create_shared
    from pgwarden.cli import main as pgwarden

    return pgwarden(argv)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    import yaml
    from ceiling import compare, round_arguments, serve_through, setting_up
    from pgbench_run import pgwardens, settings, workloads

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    round_arguments(p, rounds=4, duration=6)
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work, pg, direct, jwks, token = setting_up(stack, "pgwarden-processes-")
        one = pgwardens.PgwardenRunner(
            "x1", pgwardens.write_pgwarden_config(pg, work, "x1", settings.RULES_POLICY, jwks), work, token, stack)
        config = pgwardens.write_pgwarden_config(pg, work, "shared", settings.RULES_POLICY, jwks)
        with socket.socket() as probe:  # a free port for all of them (port 0 would give each its own)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        doc = yaml.safe_load(config.read_text())
        doc["listen"]["port"] = port
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        pids = []
        for i in range(args.processes):
            svc, _ = serve_through(__file__, f"shared-{i}", config, work, stack)
            pids.append(svc.pid)
        shared = f"x{args.processes}"
        targets = {
            "direct": (direct, []),
            "x1": (one.target, [one.service.pid]),
            shared: (workloads.Target(shared, "127.0.0.1", port, settings.BENCH_SUBJECT, token), pids),
        }
        compare(pg, targets, args.mode or ["simple", "prepared"], args.rounds, args.duration,
                f", ten rules, x1: one pgwarden, {shared}: {args.processes} sharing a port")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.path.insert(0, str(HERE.parent))
        sys.exit(serve(sys.argv[2:]))
    sys.exit(main())
