"""`pgwarden verify`, `pgwarden replay` and `pgwarden tail`: record logs for auditors and SREs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO

import orjson

from pgwarden.chain import GENESIS, verify
from pgwarden.marks import marked
from pgwarden.schemas import record_schema

# ---------------------------------------------------------------------- verify


def cmd_verify(args) -> int:
    try:
        report = verify(args.files, allow_restarts=args.allow_restarts, head=args.head)
    except OSError as e:
        print(f"pgwarden verify: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    if report.problem is not None:
        print(f"pgwarden verify: BROKEN after {report.records} intact records: {report.problem}")
        oldest_first = _rotation_order(args.files)
        if oldest_first is not None and oldest_first != args.files:  # `verify records.jsonl*`, say
            print("pgwarden verify: hint: these are the files of one rotated log, given out of order; "
                  f"oldest first: pgwarden verify {' '.join(oldest_first)}")
        return 1
    start = "the start of the chain" if report.starts_at == GENESIS else f"prev {report.starts_at[:16]}… " \
        "(earlier files not given)"
    print(f"pgwarden verify: ok: {report.records} records from {start}; head {report.head or '-'}")
    return 0


def _rotation_order(paths: list[str]) -> list[str] | None:
    """``paths`` oldest first if they are files of one rotated log (FILE.2, FILE.1, FILE), else None."""

    def age(path: str) -> tuple[str, int]:  # FILE.N was rotated out N times ago; FILE is the newest
        head, dot, n = path.rpartition(".")
        return (head, int(n)) if dot and n.isdigit() else (path, 0)

    aged = {path: age(path) for path in paths}
    if len(paths) < 2 or len(aged) != len(paths) or len({base for base, _ in aged.values()}) != 1:
        return None
    return sorted(paths, key=lambda path: -aged[path][1])


# ---------------------------------------------------------------------- reading


def _records(paths: Iterable[str]) -> Iterator[dict]:
    for path in paths:
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue  # `verify` is the tool that names broken lines
                if isinstance(record, dict):
                    yield record


# ---------------------------------------------------------------------- replay


def _table(rows: list[list[str | None]]) -> list[str]:
    if not rows:
        return []
    cells = [["" if v is None else v.replace("\n", "\\n") for v in row] for row in rows]
    widths = [max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(max(map(len, cells)))]
    return [" " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in cells]


def _literal(value: str | None) -> str:
    """A parameter as psql would show it in SQL: NULL, or quoted with '' doubled."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def render_session(records: list[dict]) -> list[str]:
    """A psql-like transcript of one session's records."""
    out: list[str] = []
    database = "db"
    statements: dict[int, dict] = {}
    for r in records:
        kind = r.get("type")
        who = r.get("identity") or {}
        if kind == "session_start":
            database = r.get("database") or database
            groups = ", ".join(who.get("groups") or [])
            out.append(f"-- session {r['session']} · {who.get('subject')} ({groups}) from {r.get('client')} · "
                       f"{database} · {r.get('ts')}")
        elif kind == "auth_failure":
            out.append(f"-- authentication failed from {r.get('client')}: {r.get('reason')} ({r.get('sqlstate')})")
        elif kind == "statement":
            statements[r["statement"]] = r
            sql = r.get("sql", "").strip()
            out.append(f"{database}=> {sql}{'' if sql.endswith(';') else ';'}")
            v = r.get("verdict") or {}
            if v.get("action") != "allow" or v.get("rule"):
                where = ", ".join(f"{k} {v[k]}" for k in ("policy", "rule") if v.get(k))
                out.append(f"-- {v.get('action', '?').upper()}{' by ' + where if where else ''}"
                           f"{': ' + v['reason'] if v.get('reason') else ''}")
        elif kind == "approval":
            out.append(f"-- approval {r.get('request')}: {r.get('state')}"
                       f"{' by ' + r['approver'] if r.get('approver') else ''}"
                       f"{': ' + r['reason'] if r.get('reason') else ''}")
        elif kind == "result":
            stmt = statements.get(r["statement"], {}) if "statement" in r else {}
            if stmt.get("protocol") == "extended" and r.get("parameters") is not None:
                out.append(f"-- parameters: {', '.join(_literal(p) for p in r['parameters'])}")
            if r.get("sqlstate"):
                out.append(f"ERROR:  {r['sqlstate']}: {r.get('error', '')}")
            else:
                sample = r.get("rows_sample")
                if sample:
                    out.extend(_table(sample))
                    shown = len(sample)
                    if r["rows"] > shown or r.get("rows_sample_clipped"):
                        out.append(f" … ({r['rows'] - shown} more rows not recorded)")
                n = r.get("rows", 0)
                cut = ", truncated by the row limit" if r.get("truncated") else ""
                out.append(f"({n} row{'' if n == 1 else 's'}{cut})")
            if r.get("masked"):
                out.append(f"-- masked: {', '.join(r['masked'])}")
            out.append(f"-- {r.get('duration_ms')} ms (upstream {r.get('upstream_ms')}, pgwarden "
                       f"{r.get('pgwarden_ms')}), {r.get('bytes')} bytes")
        elif kind == "session_end":
            out.append(f"-- session ended: {r.get('reason')} · {r.get('statements')} statements, "
                       f"{r.get('refused')} refused, {r.get('rows')} rows, {r.get('duration_ms')} ms")
    # What an agent wrote (its SQL, parameters, rows) with its hidden characters as marks: an
    # escape sequence in a comment rewrote the auditor's terminal line (red team twelve)
    return [marked(line) for line in out]


def cmd_replay(args) -> int:
    if args.against is not None:
        if args.session is not None:
            print("pgwarden replay: --session and --against do not go together", file=sys.stderr)
            return 2
        return cmd_replay_against(args)
    if args.session is None:
        print("pgwarden replay: say what to replay: --session ID (a transcript) or --against CONFIG",
              file=sys.stderr)
        return 2
    try:
        records = [r for r in _records(args.files) if r.get("session", "").startswith(args.session)]
    except OSError as e:
        print(f"pgwarden replay: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    sessions = {r["session"] for r in records}
    if not sessions:
        print(f"pgwarden replay: no session {args.session!r} in {', '.join(args.files)}", file=sys.stderr)
        return 1
    if len(sessions) > 1:
        print(f"pgwarden replay: {args.session!r} matches {len(sessions)} sessions: {', '.join(sorted(sessions))}",
              file=sys.stderr)
        return 1
    records.sort(key=lambda r: r.get("seq", 0))
    print("\n".join(render_session(records)))
    return 0


def cmd_replay_against(args) -> int:
    """Exit 0: nothing would change; 1: something would; 2: the records or the config cannot be used."""
    from pgwarden.cli import _checked, _live_context
    from pgwarden.replay import ReplayError, replay, report_lines
    from pgwarden.sql.context import default_context

    checked = _checked(args.against)
    if checked is None:
        return 2
    config, host = checked
    catalog = default_context().catalog
    if args.dsn:
        context = _live_context(args.dsn, "replay")
        if context is None:
            return 2
        catalog = context.catalog
    try:
        outcome = replay(args.files, config, host, catalog, allow_restarts=args.allow_restarts)
    except ReplayError as e:
        print(f"pgwarden replay: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(orjson.dumps(outcome.as_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print("\n".join(report_lines(outcome, args.against)))
    return 1 if outcome.changes else 0


# ---------------------------------------------------------------------- tail

_COLOURS = {"allow": "32", "approve": "33", "block": "31", "error": "31", "auth": "35", "session": "36",
            "mask": "33"}


def summary(r: dict) -> tuple[str, str]:
    """One line for a person, and the colour class of it; hidden characters as marks (`pgwarden.marks`)."""
    line, cls = _summary(r)
    return marked(line), cls


def _summary(r: dict) -> tuple[str, str]:
    kind = r.get("type", "?")
    who = (r.get("identity") or {}).get("subject") or "-"
    head = f"{r.get('ts', '')[11:23]} {r.get('session', '')[:8]} {who:<16} "
    if kind == "statement":
        v = r.get("verdict") or {}
        action = v.get("action", "?")
        rule = f" [{v.get('policy')}/{v.get('rule')}]" if v.get("rule") else ""
        sql = " ".join(r.get("sql", "").split())
        shadow = f" (+{len(r['shadow'])} shadow)" if r.get("shadow") else ""
        return head + f"{action.upper():<7} {sql[:160]}{rule}{shadow}", action
    if kind == "result":
        # the transaction ended here, rolled back: nothing of these results stayed (red team fifteen)
        undone = f" (rolled back: results from seq {r['rolled_back_from']} on)" if "rolled_back_from" in r else ""
        if r.get("sqlstate"):
            return head + f"ERROR   {r['sqlstate']} {r.get('error', '')}{undone}", "error"
        shadow = f" (+{len(r['shadow'])} shadow)" if r.get("shadow") else ""
        return head + (f"RESULT  {r.get('rows')} rows, {r.get('bytes')} bytes, {r.get('duration_ms')} ms"
                       f"{shadow}{undone}"), ""
    if kind == "auth_failure":
        return head + f"AUTH    failed from {r.get('client')}: {r.get('reason')}", "auth"
    if kind == "approval":
        return head + f"APPROVAL {r.get('request')} {r.get('state')}", "approve"
    if kind == "session_start":
        return head + f"START   from {r.get('client')} ({r.get('application_name') or '-'})", "session"
    if kind == "session_end":
        return head + f"END     {r.get('reason')}: {r.get('statements')} statements, {r.get('refused')} refused", \
            "session"
    return head + kind, ""


def shadow_lines(r: dict) -> list[tuple[str, str]]:
    """A record's shadow verdicts (docs/records.md), one line each, under its summary: what the
    shadow rule or policy would have done, marked where it differs from what was enforced."""
    enforced = (r.get("verdict") or {}).get("action")
    lines = []
    for e in r.get("shadow") or ():
        action = str(e.get("action", "?"))
        where = f"{e.get('policy')}/{e.get('rule')}" if e.get("rule") else f"{e.get('policy')} (policy)"
        if action == "mask":
            columns = ", ".join(f"{c.get('column')} ({c.get('source')}, {c.get('strategy')}) {c.get('values')} values"
                                for c in e.get("columns") or ())
            text = f"would mask {columns}"
        elif action == "error":
            text = f"failed: {e.get('reason')}"
        else:
            differs = enforced is not None and action != enforced
            text = ("would need approval" if action == "approve" else f"would {action}") \
                + (f" (enforced: {enforced})" if differs else " (as enforced)") \
                + (f": {e['reason']}" if e.get("reason") else "")
        lines.append((" " * 13 + f"shadow {action.upper():<7} {where}: {text}", action))
    return lines


def _wanted(r: dict, args) -> bool:
    if getattr(args, "shadow", False) and not r.get("shadow"):
        return False
    if args.type and r.get("type") not in args.type:
        return False
    if args.verdict and (r.get("verdict") or {}).get("action") not in args.verdict:
        return False
    if args.subject:
        import fnmatch

        subject = (r.get("identity") or {}).get("subject") or ""
        if not any(fnmatch.fnmatchcase(subject, s) for s in args.subject):
            return False
    return True


def _follow(path: str, poll_s: float = 0.2) -> Iterator[bytes]:
    """Every line of ``path``, then the lines appended to it, across rotation (the file renamed
    and recreated). One handle reads both, so no line appended in between is missed."""
    f = open(path, "rb")
    inode = os.fstat(f.fileno()).st_ino
    partial = b""
    while True:
        chunk = f.readline()
        if chunk:
            partial += chunk
            if partial.endswith(b"\n"):
                yield partial
                partial = b""
            continue
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_ino != inode or st.st_size < f.tell()):
            f.close()
            f = open(path, "rb")
            inode = os.fstat(f.fileno()).st_ino
            continue
        sys.stdout.flush()
        time.sleep(poll_s)


def cmd_tail(args, out: IO[str] | None = None) -> int:
    out = out or sys.stdout
    colour = args.color == "always" or (args.color == "auto" and out.isatty())
    shadow = getattr(args, "shadow", False)
    if args.json:
        def show(r):
            out.write(orjson.dumps(r).decode() + "\n")
    else:
        def show(r):
            lines = [summary(r)]
            if shadow:  # the shadow verdicts beside the enforced one
                lines += shadow_lines(r)
            for text, cls in lines:
                code = _COLOURS.get(cls)
                out.write(f"\x1b[{code}m{text}\x1b[0m\n" if colour and code else text + "\n")
    try:
        for r in _records(args.files[:-1] if args.follow else args.files):
            if _wanted(r, args):
                show(r)
        out.flush()
        if args.follow:
            for line in _follow(args.files[-1]):
                try:
                    r = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(r, dict) and _wanted(r, args):
                    show(r)
                    out.flush()
    except BrokenPipeError:  # `pgwarden tail ... | head`: the reader has what it wanted
        try:
            sys.stdout = open(os.devnull, "w")  # no second error when Python flushes at exit
        except OSError:
            pass
        return 0
    except OSError as e:
        print(f"pgwarden tail: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("verify", help="check the hash chain of record files (oldest first)")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--allow-restarts", action="store_true",
                   help="accept new chains inside the files (stdout logs of several pgwarden processes)")
    p.add_argument("--head", help="a chain head known from elsewhere (pgwarden's log): the files must reach it")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("replay", help="a session as a psql-like transcript (--session), or every recorded "
                                      "statement decided again under a candidate config (--against)")
    p.add_argument("files", nargs="+", metavar="FILE", help="record files, oldest first (gzip'd ones too)")
    p.add_argument("--session", help="the session id (a unique prefix will do)")
    p.add_argument("--against", metavar="CONFIG",
                   help="a candidate config: what would it have decided? Exit 1 if anything changes")
    p.add_argument("--dsn", help="with --against: read the catalog of this database (default: the shipped "
                                 "snapshot of the built-in catalog, which knows no tables of yours)")
    p.add_argument("--json", action="store_true", help="with --against: the report as JSON")
    p.add_argument("--allow-restarts", action="store_true",
                   help="accept new chains inside the files (stdout logs of several pgwarden processes)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("tail", help="records for people, filtered; -f follows the file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-f", "--follow", action="store_true")
    # The choices come from the record schema: a misspelt type is an error, not an empty screen.
    schema = record_schema()
    types = schema["properties"]["type"]["enum"]
    actions = schema["$defs"]["statement"]["properties"]["verdict"]["properties"]["action"]["enum"]
    p.add_argument("--type", action="append", choices=types, metavar="TYPE",
                   help=f"record type (repeatable): {', '.join(types)}")
    p.add_argument("--verdict", action="append", choices=actions, metavar="ACTION",
                   help=f"{', '.join(actions)} (repeatable)")
    p.add_argument("--subject", action="append", help="identity subject glob (repeatable)")
    p.add_argument("--shadow", action="store_true",
                   help="only records with shadow verdicts, each shown under the enforced one")
    p.add_argument("--json", action="store_true", help="the matching records as JSON lines")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.set_defaults(func=cmd_tail)
