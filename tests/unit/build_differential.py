"""The same seeded inputs through the hot path's modules, for `test_build_differential`: run once
compiled and once as pure Python (``PGWARDEN_PURE_PYTHON=1``), each run prints, per part, the
SHA-256 of everything the modules answered, and the test compares the two runs bit for bit.

Everything here is deterministic given the seed: the relay's clock is a counter, its own
statement names (random per session) are written as one placeholder, and no wall-clock time,
address or id reaches the transcripts. ``--dump DIR`` writes each part's transcript too, to see
where two runs part.

    python tests/unit/build_differential.py SEED COUNT [--dump DIR]
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pgwarden import compiled
from pgwarden.chain import GENESIS, lines_for
from pgwarden.mask_rows import PartialText, Prefilter, Step, Walker, field
from pgwarden.recorder import timestamp
from pgwarden.relay.counting import CountRows
from pgwarden.relay.engine import ALLOW, PENDING, Relay
from pgwarden.sql.cache import StatementCache
from pgwarden.sql.template import fits_template, numeric_template, signs_precede_numbers, template_parts
from pgwarden.stamp import format_ns
from pgwarden.verdict import Refusal
from pgwarden.wire import messages as m
from pgwarden.wire.framing import MessageFramer

OWN_NAME = re.compile(rb"pgwarden_[0-9a-f]{8}")

# ------------------------------------------------------------------ SQL texts

WORDS = ["SELECT", "*", "FROM", "things", "secret.things", "WHERE", "id", "=", "-", "+", "1", "42", "-7", "3.5",
         "1e3", "0x1F", "'x'", "'it''s'", "E'\\n'", "$1", "$2", "(", ")", "::int", "::text", "AND", "OR", "LIMIT",
         "OFFSET", '"Quoted"', "$$b$$", "NULL", "true", "-true", ",", ";", "DELETE", "UPDATE", "SET", "n", "INSERT",
         "INTO", "VALUES", "pg_read_file", "now()", "ünïcode", "--c\n", "/*c*/", "OPERATOR(pg_catalog.+)", "#"]

SHAPES = ["SELECT abalance FROM pgbench_accounts WHERE aid = {n}",
          "SELECT * FROM things WHERE id = {n} AND n > {m}",
          "SELECT * FROM things WHERE id = -{n}",
          "SELECT * FROM things WHERE id = - {n}",
          "SELECT {n}, '{s}' FROM things LIMIT {m}",
          "UPDATE things SET n = n + {n} WHERE id = {m}",
          "DELETE FROM secret.things WHERE id = {n}",
          "SELECT pg_read_file('/etc/{s}')",
          "INSERT INTO things VALUES ({n}, '{s}')",
          "SELECT * FROM things WHERE id = {n}; DROP TABLE things",
          "SELECT {n}e{m}, {n}.{m}, 0x{n}",
          "SELECT $1::int + {n}",
          "PREPARE p{n} AS SELECT {m}",
          "SET search_path = s{n}",
          "SELECT * FROM things WHERE id = {n}::bigint -- {s}"]


def sql_text(rng: random.Random) -> str:
    if rng.random() < 0.6:
        shape = rng.choice(SHAPES)
        return shape.format(n=rng.choice([0, 1, 7, 42, 99999, 12345678901234567890]), m=rng.randrange(100),
                            s=rng.choice(["x", "passwd", "ü", "a'b", ""]))
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 14)))


# ------------------------------------------------------------------ parts


def statements(rng: random.Random, count: int, out: Callable[[object], None]) -> None:
    """The statement cache (its numeric templates, shared syntax and fingerprints) and the
    templates' own functions, on texts that differ in constants and on token soups."""
    cache = StatementCache(size=64)
    for _ in range(count):
        sql = sql_text(rng)
        template = numeric_template(sql)
        parts = template_parts(template) if template is not None else None
        out(["template", sql, template, signs_precede_numbers(sql),
             None if parts is None else [p.hex() for p in parts],
             None if parts is None else fits_template(sql_text(rng), parts)])
        statement = cache.get(sql)
        try:
            a = statement.analysis
            analysis = [sorted(a.kinds), sorted(a.tables), sorted(a.writes), sorted(a.functions), a.has_where,
                        a.constant_free, [list(s) for s in a.settings], a.read_write, list(a.deallocates),
                        list(a.executes), a.changes_context]
        except Exception as e:  # noqa: BLE001 - the same refusal is the answer to compare
            analysis = [type(e).__name__, str(e)]
        try:
            fingerprint = statement.fingerprint
        except Exception as e:  # noqa: BLE001
            fingerprint = [type(e).__name__, str(e)]
        out(["statement", sql, statement.sql, fingerprint, analysis])
    out(["cache", cache.template_hits, cache.fingerprint_hits, len(cache)])


def frontend_message(rng: random.Random, names: list[str]) -> object:
    pick = rng.random()
    name = rng.choice(names)
    if pick < 0.25:
        return m.Query(sql_text(rng))
    if pick < 0.4:
        return m.Parse(name, sql_text(rng), tuple(rng.choice([0, 23, 25]) for _ in range(rng.randrange(3))))
    if pick < 0.55:
        return m.Bind(rng.choice(["", "p"]), name, (), tuple(rng.choice([b"1", None, b"\xff"])
                                                         for _ in range(rng.randrange(3))), (rng.randrange(2),))
    if pick < 0.62:
        return m.Describe(rng.choice("SP"), rng.choice(["", "p", name]))
    if pick < 0.72:
        return m.Execute(rng.choice(["", "p"]), rng.choice([0, 0, 1, 5]))
    if pick < 0.85:
        return m.Sync()
    if pick < 0.9:
        return m.Close(rng.choice("SP"), rng.choice(["", "p", name]))
    if pick < 0.94:
        return m.Flush()
    if pick < 0.97:
        return m.CopyData(rng.randbytes(rng.randrange(8)))
    return m.FunctionCall(rng.randrange(3000), (0,), (b"x",), 0)


def backend_reply(rng: random.Random) -> list[object]:
    """A server's answer to one statement: its result, or an error, then often ReadyForQuery."""
    out: list[object] = []
    pick = rng.random()
    if pick < 0.15:
        out += [m.ParseComplete(), m.BindComplete()]
    columns = tuple(m.Column(f"c{i}", 16400, i + 1, rng.choice([23, 25, 17]), -1, -1, 0)
                    for i in range(rng.randrange(1, 4)))
    if pick < 0.7:
        out.append(m.RowDescription(columns))
        for _ in range(rng.randrange(6)):
            out.append(m.DataRow(tuple(rng.choice([None, b"", b"123-45-6789", b"a@b.c", rng.randbytes(5),
                                                   b"4111111111111111"]) for _ in columns)))
        out.append(rng.choice([m.CommandComplete(f"SELECT {rng.randrange(9)}"), m.PortalSuspended(),
                               m.CommandComplete("DELETE 3"), m.CommandComplete("INSERT 0 1")]))
    elif pick < 0.8:
        out.append(m.ErrorResponse((("S", "ERROR"), ("C", rng.choice(["42501", "22012", "40001"])),
                                    ("M", "nope"))))
    elif pick < 0.85:
        out.append(m.EmptyQueryResponse())
    elif pick < 0.9:  # (a change of how text is read ends the session: seldom)
        setting = rng.choice(["application_name"] * 8 + ["client_encoding", "standard_conforming_strings"])
        out.append(m.ParameterStatus(setting, rng.choice(["UTF8", "on"]) if setting != "application_name"
                                     else rng.choice(["a", "ü"])))
    else:
        out.append(m.NoticeResponse((("S", "NOTICE"), ("M", "hm"))))
    if rng.random() < 0.7:
        out.append(m.ReadyForQuery(rng.choice("ITE")))
    return out


def _encode(msg: object) -> bytes:
    return msg.encode()  # type: ignore[attr-defined]


def _cuts(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` in random pieces (whole, at message bounds or anywhere)."""
    pieces: list[bytes] = []
    while data:
        n = len(data) if rng.random() < 0.4 else rng.randrange(1, len(data) + 1)
        pieces.append(data[:n])
        data = data[n:]
    return pieces


def relay(rng: random.Random, count: int, out: Callable[[object], None]) -> None:
    """Conversations through the sans-IO relay: decisions of every kind (allow, refuse, count,
    pending then resolved), masks on results, pieces cut anywhere, and now and then garbage."""
    for number in range(count):
        _conversation(rng, out)
        out(["conversation", number])


def _conversation(rng: random.Random, out: Callable[[object], None]) -> None:
    ticks = [0.0]

    def clock() -> float:
        ticks[0] += 0.001
        return ticks[0]

    decisions = [ALLOW, ALLOW, ALLOW, PENDING,
                 Refusal("42501", "pgwarden: blocked: no", "Refused by rule 'r'.", "Do reads."),
                 CountRows(rng.randrange(4), "count", "too many rows")]
    pending: list[object] = []

    def decide(request) -> object:
        out(["request", request.protocol, request.sql, request.statement_name, request.seq])
        decision = rng.choice(decisions)
        if decision is PENDING:
            pending.append(request)
        return decision

    def on_shape(shape, origin) -> Callable[[bytes], bytes] | None:
        out(["shape", [c.name for c in shape.columns]])
        if rng.random() < 0.5:
            return None
        general = lambda v: b"#" * len(v)  # noqa: E731
        prefilters = [None, Prefilter.of([(3, ())]), Prefilter.of([(0, ("@",))]), Prefilter.of([(4, ()), (0, ("-",))])]
        first = PartialText(0, 4, general) if rng.random() < 0.5 else (lambda v, c: None if v is None else b"<" + v + b">")
        steps = [Step(0, first, shape.columns[0], None, False, rng.choice(prefilters))]
        if len(shape.columns) > 1:
            steps.append(Step(1, lambda v, c: None if v is None else v[::-1], shape.columns[1], None,
                              rng.random() < 0.5, rng.choice(prefilters)))
        if len(shape.columns) > 2:
            steps.append(Step(2, lambda v, c: None if v is None else b"***", shape.columns[2], field(b"***"),
                              False, None))
        return Walker(steps).walk

    def on_complete(ex) -> None:
        out(["done", ex.seq, ex.rows, ex.bytes, ex.sqlstate, ex.message, ex.truncated])

    r = Relay(decide, on_shape=on_shape, on_complete=on_complete, clock=clock,
              sample_rows=rng.choice([0, 2]), sample_bytes=64, max_message_size=rng.choice([96, 1 << 20, 1 << 20, 1 << 20]))
    r.row_cap = rng.choice([None, 3])
    names = ["", "s1", "s2"]
    for _step in range(rng.randrange(4, 16)):
        if r.closing:
            break
        if pending and rng.random() < 0.5:
            request = pending.pop(0)
            r.resolve(request, rng.choice(decisions[:1] + decisions[4:]))
        elif rng.random() < 0.5:
            data = b"".join(_encode(frontend_message(rng, names)) for _ in range(rng.randrange(1, 5)))
            if rng.random() < 0.03:
                data = rng.randbytes(rng.randrange(1, 12)) + data
            for piece in _cuts(rng, data):
                r.client_data(piece)
        else:
            data = b"".join(_encode(x) for x in backend_reply(rng))
            if rng.random() < 0.03:
                data += rng.randbytes(rng.randrange(1, 12))
            for piece in _cuts(rng, data):
                try:
                    r.server_data(piece)
                except Exception as e:  # noqa: BLE001 - the same failure is the answer to compare
                    out(["raised", type(e).__name__, str(e)])
                    break
        out(["up", OWN_NAME.sub(b"pgwarden_XXXXXXXX", b"".join(r.pop_upstream())).hex()])
        out(["down", OWN_NAME.sub(b"pgwarden_XXXXXXXX", b"".join(r.pop_client())).hex()])
        out(["state", r.state.transaction_status, r.closing, r.idle, r.backlog, r.terminated,
             r.server_fatal, None if r.waiting is None else r.waiting.seq])


def framing(rng: random.Random, count: int, out: Callable[[object], None]) -> None:
    """The framer alone on server streams: runs of rows, messages over the size bound, cuts anywhere."""
    for _ in range(count):
        framer = MessageFramer(rng.choice([32, 256, 1 << 20]), valid_types=None, run_type=ord("D"))
        data = b"".join(_encode(x) for _ in range(rng.randrange(1, 5)) for x in backend_reply(rng))
        if rng.random() < 0.1:
            data = data[: rng.randrange(len(data) + 1)] + rng.randbytes(6)
        for piece in _cuts(rng, data):
            try:
                frames = framer.take(piece)
            except Exception as e:  # noqa: BLE001
                out(["raised", type(e).__name__, str(e)])
                break
            out([f.hex() if isinstance(f, bytes) else repr(f) for f in frames])
        out(["buffered", framer.buffered])


def records(rng: random.Random, count: int, out: Callable[[object], None]) -> None:
    """The hash chain's lines, and timestamps of given times."""
    bodies = [b"{}"] + [json.dumps({"n": rng.randrange(10**9), "s": sql_text(rng)}, separators=(",", ":"),
                                   ensure_ascii=False).encode() for _ in range(count)]
    lines: list[bytes] = []
    head = lines_for(bodies, GENESIS, lines)
    out([head, [line.decode() for line in lines]])
    for _ in range(count):
        now = rng.uniform(0, 4_000_000_000)
        ns = rng.randrange(0, 4_000_000_000 * 10**9)
        out([now, timestamp(now), ns, format_ns(ns)])


PARTS = {"statements": statements, "relay": relay, "framing": framing, "records": records}


def main(argv: list[str]) -> None:
    seed, count = int(argv[0]), int(argv[1])
    dump = Path(argv[argv.index("--dump") + 1]) if "--dump" in argv else None
    report: dict[str, object] = {"build": compiled.build()}
    for name, part in PARTS.items():
        rng = random.Random(f"{seed}-{name}")
        digest = hashlib.sha256()
        lines: list[str] = []

        def out(item: object, digest=digest, lines=lines) -> None:
            line = json.dumps(item, ensure_ascii=True, default=repr)
            digest.update(line.encode() + b"\n")
            if dump is not None:
                lines.append(line)

        part(rng, count, out)
        report[name] = digest.hexdigest()
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            (dump / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
