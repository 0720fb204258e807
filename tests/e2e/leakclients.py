"""The clients a leak attempt is sent through, and what the tapped bytes say happened.

Each `Client` opens one session through a `Tap`, runs steps (SQL text, or a `Copy`),
swallows whatever the server or pgwarden answered, and returns the bytes of the step
as the tap saw them; the outcome is judged from those bytes (`Answer`), never from
what a driver chose to decode, so every client is judged alike:

* ``simple``: psycopg, a query without parameters in text: the simple Query protocol;
* ``ext-text``: psycopg ``prepare=True``: a named statement (Parse once, then Bind/
  Describe/Execute each time), text results;
* ``ext-binary``: psycopg ``binary=True``: the unnamed statement, binary results;
* ``asyncpg``: its own named statements (cached by text), binary codecs, type introspection;
* ``portal``: a raw client that binds every column in binary, never sends Describe and
  executes the portal one row at a time (PortalSuspended between rows).
"""

from __future__ import annotations

import asyncio
import io
import struct

import asyncpg
import attrs
import psycopg
from rawclient import RawClient

from pgwarden.testing.tap import Tap, TapSession
from pgwarden.wire import messages as m

PROTOCOLS = ("simple", "ext-text", "ext-binary", "asyncpg", "portal")


@attrs.frozen
class Copy:
    """``COPY (query) TO STDOUT`` or ``COPY table TO STDOUT``, with a format."""

    source: str  # a table name, or a query (in parentheses when rendered)
    format: str = "text"  # text | csv | binary
    is_query: bool = True

    @property
    def sql(self) -> str:
        source = f"({self.source})" if self.is_query else self.source
        return f"COPY {source} TO STDOUT" + ("" if self.format == "text" else f" (FORMAT {self.format})")


@attrs.frozen
class Pipeline:
    """Statements sent together, before any answer: one Query string (simple), a psycopg pipeline
    (one Sync), or Parse/Bind/Execute for each and one Sync (portal). Not for asyncpg."""

    statements: tuple[str, ...]

    @property
    def sql(self) -> str:
        return "; ".join(self.statements)


@attrs.frozen
class Raw:
    """Frontend messages (`pgwarden.wire.messages`) sent as they are, read to ReadyForQuery: what
    no driver sends (per-column result formats, a portal described then run in parts, a
    FunctionCall). The raw client (``portal``) only."""

    label: str
    messages: tuple[object, ...]

    @property
    def sql(self) -> str:
        return self.label


Step = str | Copy | Pipeline | Raw


@attrs.frozen
class Answer:
    """The backend messages of one step, framed from the tapped bytes."""

    raw: bytes
    messages: tuple
    raised: str | None = None  # what the client raised on it

    @classmethod
    def parse(cls, raw: bytes, raised: str | None = None) -> Answer:
        out, at = [], 0
        while at + 5 <= len(raw):
            (length,) = struct.unpack_from(">i", raw, at + 1)
            frame = raw[at: at + 1 + length]
            if len(frame) < 1 + length:
                break
            kind = frame[:1]
            # only what an outcome is judged by is decoded (a run of 10,000 rows stays cheap)
            out.append(m.decode_backend(frame) if kind in b"EZsn" else kind)
            at += 1 + length
        return cls(raw, tuple(out), raised)

    @property
    def errors(self) -> list[m.ErrorResponse]:
        return [x for x in self.messages if isinstance(x, m.ErrorResponse)]

    @property
    def rows(self) -> int:
        """DataRows and CopyData sent."""
        return sum(1 for x in self.messages if x in (b"D", b"d"))

    def refused(self) -> bool:
        """pgwarden refused it (42501, its own message) before a single row was sent."""
        errs = self.errors
        return bool(errs) and errs[0].sqlstate == "42501" and (errs[0].message or "").startswith("pgwarden:") \
            and self.messages.index(errs[0]) < next((i for i, x in enumerate(self.messages) if x in (b"D", b"d")),
                                                     len(self.messages))

    def summary(self) -> str:
        errs = "; ".join(f"{e.sqlstate} {e.message}" for e in self.errors)
        return f"{self.rows} rows" + (f", errors: {errs}" if errs else "")


class Client:
    """One session through the tap, over one protocol."""

    def __init__(self, protocol: str, tap: Tap, token: str, database: str) -> None:
        self.protocol = protocol
        self._tap, self._token, self._database = tap, token, database
        self.problems: list[str] = []  # what the client raised, for failure messages
        self._open()
        self.session: TapSession = tap.latest()

    def _dsn(self) -> str:
        return (f"host={self._tap.host} port={self._tap.port} user=agent dbname={self._database} "
                f"password={self._token} sslmode=disable")

    def _open(self) -> None:
        if self.protocol == "asyncpg":
            self._loop = asyncio.new_event_loop()
            self._conn = self._loop.run_until_complete(asyncpg.connect(
                host=self._tap.host, port=self._tap.port, user="agent", password=self._token,
                database=self._database, ssl=False))
        elif self.protocol == "portal":
            self._raw = RawClient(self._tap.host, self._tap.port)
            answer = self._raw.login(self._token, database=self._database)
            assert isinstance(answer[-1], m.ReadyForQuery), answer
            self._named: dict[str, str] = {}
        else:
            self._conn = psycopg.connect(self._dsn(), autocommit=True)

    def run(self, step: Step) -> Answer:
        """Runs the step; its answer, with what the client raised (None if nothing)."""
        start = len(self.session.received)
        raised = None
        try:
            self._run(step)
        except Exception as e:  # noqa: BLE001 - a server error, or a value the driver could not decode
            raised = f"{type(e).__name__}: {e}"
            self.problems.append(raised)
        return Answer.parse(self.session.received[start:], raised)

    def _run(self, step: Step) -> None:
        if isinstance(step, Raw) and self.protocol != "portal":
            raise TypeError("raw messages go through the raw client only")
        if self.protocol == "asyncpg":
            self._loop.run_until_complete(self._asyncpg(step))
        elif self.protocol == "portal":
            self._portal(step)
        elif isinstance(step, Pipeline):
            if self.protocol == "simple":
                self._conn.execute(step.sql)
                return
            with self._conn.pipeline(), self._conn.cursor(binary=self.protocol == "ext-binary") as cur:
                for sql in step.statements:
                    cur.execute(sql)
        elif isinstance(step, Copy):
            with self._conn.cursor() as cur, cur.copy(step.sql) as copy:
                for _ in copy:
                    pass
        elif self.protocol == "simple":
            cur = self._conn.execute(step)
            while cur.nextset():  # every result of a multi-statement string is read
                pass
        elif self.protocol == "ext-text":
            self._conn.execute(step, prepare=True)
        else:
            self._conn.cursor(binary=True).execute(step)

    async def _asyncpg(self, step: Step) -> None:
        if isinstance(step, Pipeline):
            raise TypeError("asyncpg has no pipeline of statements")
        if isinstance(step, Copy):
            out = io.BytesIO()
            if step.is_query:
                await self._conn.copy_from_query(step.source, output=out, format=step.format)
            else:
                await self._conn.copy_from_table(step.source, output=out, format=step.format)
        else:
            await self._conn.fetch(step)

    def _portal(self, step: Step) -> None:
        rc = self._raw
        if isinstance(step, Raw):
            rc.send(b"".join(msg.encode() for msg in step.messages))  # type: ignore[attr-defined]
            rc.until_ready()
            return
        if isinstance(step, Copy):
            rc.send(m.Query(step.sql).encode())
            rc.until_ready()
            return
        if isinstance(step, Pipeline):
            rc.send(b"".join(m.Parse("", sql).encode() + m.Bind("", "", result_formats=(1,)).encode()
                             + m.Execute("").encode() for sql in step.statements) + m.Sync().encode())
            rc.until_ready()
            return
        name = self._named.get(step)
        out = b""
        if name is None:
            name = self._named[step] = f"s{len(self._named)}"
            out += m.Parse(name, step).encode()
        out += m.Bind("", name, result_formats=(1,)).encode() + m.Execute("", 1).encode() + m.Flush().encode()
        rc.send(out)
        while True:
            msg = rc.recv_message()
            if msg is None:
                return
            if isinstance(msg, m.PortalSuspended):
                rc.send(m.Execute("", 1).encode() + m.Flush().encode())
            elif isinstance(msg, (m.CommandComplete, m.EmptyQueryResponse, m.ErrorResponse)):
                if isinstance(msg, m.ErrorResponse) and self._named.get(step) == name:
                    del self._named[step]  # maybe never parsed: parse it again next time
                break
        rc.send(m.Sync().encode())
        rc.until_ready()

    def close(self) -> bytes:
        """Ends the session; every byte pgwarden sent on it."""
        try:
            if self.protocol == "asyncpg":
                self._loop.run_until_complete(self._conn.close(timeout=5))
                self._loop.close()
            elif self.protocol == "portal":
                self._raw.send(m.Terminate().encode())
                self._raw.close()
            else:
                self._conn.close()
        except Exception as e:  # noqa: BLE001 - a session pgwarden already ended: its bytes are what counts
            self.problems.append(f"closing: {type(e).__name__}: {e}")
        return self.session.wait_closed()
