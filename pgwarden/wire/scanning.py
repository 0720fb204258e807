"""The framer's common case, compiled by Cython: complete messages sliced out of what was read.

Why: `pgwarden.wire.framing.MessageFramer` hands out each complete message of a read (and a run
of consecutive rows as one ``bytes``). Compiled by mypyc, each of its header's bytes was a
bounds-checked index returning a boxed integer, each length four of them with overflow-checked
shifts, and each slice a generic call: ~430 instructions a message, five messages a statement at
one client (its Query; the server's RowDescription, DataRow, CommandComplete, ReadyForQuery).
Compiled by Cython (its pure-Python mode: this ``.py`` is the source, and what runs without a
C compiler), the same loop reads the bytes through a pointer and slices with one allocation.

`nul_at` is ``bytes.find(b"\\0", pos)`` for the wire reader's NUL-terminated strings (a Parse's
text, each statement's): compiled by mypyc, ``find`` was a method call with its arguments parsed
(~1,100 instructions); here, memchr(3).

Only what needs no judgement is done here: the caller (`MessageFramer._scan`) judges the message
where this stops (an unknown type, a length that cannot be right or too large, a message to
stream, one not complete yet), with its errors.
"""

from __future__ import annotations

try:
    import cython
except ImportError:  # Cython is needed to build only: without it, this runs as Python
    from pgwarden import _no_cython as cython

if cython.compiled:
    from cython.cimports.libc.string import memchr


#: where a plan's run type (a flag byte, then the type) and its bound on lengths (8 bytes) are
#: (compiled: C constants of this module)
PLAN_RUN = cython.declare(cython.Py_ssize_t, 256)
PLAN_MAX = cython.declare(cython.Py_ssize_t, 258)


def plan(valid: bytes, maximum: int, run_type: int) -> bytes:
    """What `complete_messages` is given for one framer, fixed when it is made: ``valid`` (a byte
    per type byte value, 1 for a valid type), whether it has a run type and which, and the bound
    on a message's length (``maximum``, at most 2**63 - 1), in one ``bytes`` (one argument where
    they were three, each a boxed integer for each call)."""
    if len(valid) != 256:
        raise ValueError("a plan's table has a byte for each of the 256 type byte values")
    run = bytes((1, run_type)) if 0 <= run_type < 256 else b"\0\0"
    return valid + run + min(maximum, 2**63 - 1).to_bytes(8, "big")


@cython.binding(False)
@cython.locals(p=cython.p_uchar, ok=cython.p_uchar, t=cython.int, length=cython.Py_ssize_t,
               end=cython.Py_ssize_t, start=cython.Py_ssize_t, n=cython.Py_ssize_t, maximum=cython.Py_ssize_t,
               run_type=cython.int, i=cython.int)
def complete_messages(data: bytes, pos: cython.Py_ssize_t, out: list[object], scan_plan: bytes) -> cython.Py_ssize_t:
    """Appends to ``out`` the messages of ``data[pos:]``, in order, while each is complete, of a
    type the plan (`plan`) marks valid and of a length from 4 to its bound; consecutive ones of
    its run type as one ``bytes`` (a run). Returns where it stopped: fewer than 5 bytes left, or
    a message that is not one of those.

    A message that is all of ``data`` is handed out as ``data`` itself (no copy). A length's
    four bytes are read unsigned: one that is negative as PostgreSQL's int32 is then above any
    bound or beyond the end, and stops the scan all the same.
    """
    p = data  # compiled: a pointer to the bytes (Python: the bytes, indexed alike)
    ok = scan_plan
    n = len(data)
    run_type = ok[PLAN_RUN + 1] if ok[PLAN_RUN] else -1
    maximum = 0
    for i in range(8):
        maximum = (maximum << 8) | ok[PLAN_MAX + i]
    while n - pos >= 5:
        t = p[pos]
        length = (p[pos + 1] << 24) | (p[pos + 2] << 16) | (p[pos + 3] << 8) | p[pos + 4]
        end = pos + 1 + length
        if end > n or length < 4 or length > maximum or not ok[t]:
            break
        if t == run_type:
            start = pos
            pos = end
            while n - pos >= 5 and p[pos] == t:
                length = (p[pos + 1] << 24) | (p[pos + 2] << 16) | (p[pos + 3] << 8) | p[pos + 4]
                end = pos + 1 + length
                if end > n or length < 4 or length > maximum:
                    break
                pos = end
            out.append(p[start:pos])
            continue
        out.append(data if pos == 0 and end == n else p[pos:end])
        pos = end
    return pos


@cython.binding(False)
@cython.locals(n=cython.Py_ssize_t, found=cython.p_uchar, start=cython.p_uchar)
def nul_at(data: bytes, pos: cython.Py_ssize_t) -> cython.Py_ssize_t:
    """Where the first NUL byte of ``data`` from ``pos`` on is, or -1 (``pos`` from 0 on)."""
    if pos < 0:
        raise ValueError("nul_at: a position from 0 on")
    if cython.compiled:
        n = len(data)
        if pos >= n:
            return -1
        start = cython.cast(cython.p_uchar, cython.cast(cython.p_char, data))
        found = cython.cast(cython.p_uchar, memchr(start + pos, 0, n - pos))
        return -1 if found == cython.NULL else found - start
    return data.find(b"\0", pos)
