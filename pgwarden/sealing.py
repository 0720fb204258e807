"""The hash chain's lines (`lines_for`), compiled by Cython: SHA-256 straight from OpenSSL.

Why: each record a sink writes is sealed with SHA-256 of its bytes and the previous record's
hash (`pgwarden.chain`), two records a statement. Python 3.11's ``hashlib.sha256(data)`` looks
the algorithm up in OpenSSL 3's provider store for every object it makes (``EVP_MD_fetch``: a
property query under a lock, reference counts, an allocated context): ~1 µs of overhead a hash
warm, more after a wake-up, where hashing a record's ~500 bytes with the CPU's SHA instructions
takes ~0.2 µs. At one client that overhead was ~5 µs of the ~25 µs recording costs a statement
(a ``perf`` profile of the pgwarden process: docs/performance.md). And each line was built
with four copies of the record's bytes (two slices, two ``%`` formats).

Compiled (the ``if cython.compiled`` branch), the line is built once, in place: the record's
bytes, ``,"prev":"<previous hash>``, then the hash of that and ``"}`` written after it, by
OpenSSL's own ``SHA256_Init`` / ``SHA256_Update`` / ``SHA256_Final`` (the digest underneath its
provider's, the same bytes: SHA-256 is SHA-256), found at import in the ``libcrypto`` that
``hashlib`` has loaded. Where they cannot be found (another OpenSSL build, another system) or
give a wrong hash for a known text, compiled or not, this is the Python below: ``hashlib``, as
before. The pure-Python build (``PGWARDEN_PURE_PYTHON=1``, or no C compiler) is the Python only.
`tests/unit/build_differential.py` compares both builds' lines bit for bit.
"""

from __future__ import annotations

import hashlib

try:
    import cython
except ImportError:  # Cython is needed to build only: without it, this runs as Python
    from pgwarden import _no_cython as cython

if cython.compiled:
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize
    from cython.cimports.cpython.unicode import PyUnicode_DecodeASCII
    from cython.cimports.libc.string import memcpy
    from cython.cimports.posix.dlfcn import RTLD_NOW, dlopen, dlsym

_sha256 = hashlib.sha256

#: whether the compiled loop hashes with OpenSSL's functions (`_bind`); False: ``hashlib``
NATIVE = False

#: a text and its SHA-256, checked once the functions are found
_KNOWN = b'{"prev":"0"}'
_KNOWN_DIGEST = hashlib.sha256(_KNOWN).hexdigest()


def _libcrypto_paths() -> list[str]:
    """The ``libcrypto`` shared objects this process has loaded (``hashlib``'s among them)."""
    found: list[str] = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").partition("/")[2]
                if path:
                    path = "/" + path
                    name = path.rsplit("/", 1)[-1]
                    if name.startswith("libcrypto") and ".so" in name and path not in found:
                        found.append(path)
    except OSError:
        pass
    return found


def _bind() -> bool:
    """Finds OpenSSL's SHA-256 functions in a loaded ``libcrypto`` (never loads one), and checks
    them against ``hashlib`` on a known text. Compiled only."""
    if cython.compiled:
        global _init, _update, _final
        for path in _libcrypto_paths():
            encoded = path.encode()
            lib = dlopen(encoded, RTLD_NOW | 4)  # RTLD_NOLOAD (glibc's value): only one already loaded
            if lib == cython.NULL:
                continue
            init = dlsym(lib, b"SHA256_Init")
            update = dlsym(lib, b"SHA256_Update")
            final = dlsym(lib, b"SHA256_Final")
            if init == cython.NULL or update == cython.NULL or final == cython.NULL:
                continue
            _init = cython.cast(sha256_init_t, init)  # type: ignore[name-defined]  # noqa: F821 (sealing.pxd)
            _update = cython.cast(sha256_update_t, update)  # type: ignore[name-defined]  # noqa: F821 (sealing.pxd)
            _final = cython.cast(sha256_final_t, final)  # type: ignore[name-defined]  # noqa: F821 (sealing.pxd)
            if _hex_of(_KNOWN) == _KNOWN_DIGEST:
                return True
        _init = cython.NULL  # type: ignore[name-defined]
    return False


def _hex_of(data: bytes) -> str:
    """``hashlib.sha256(data).hexdigest()`` by the functions `_bind` found. Compiled only."""
    if cython.compiled:
        ctx = cython.declare(cython.ulonglong[32])  # SHA256_CTX is 112 bytes
        digest = cython.declare(cython.uchar[32])
        text = cython.declare(cython.char[64])
        i = cython.declare(cython.int)
        digits = cython.declare(cython.p_char, b"0123456789abcdef")
        _init(ctx)  # type: ignore[name-defined]
        _update(ctx, PyBytes_AS_STRING(data), len(data))  # type: ignore[name-defined]
        _final(digest, ctx)  # type: ignore[name-defined]
        for i in range(32):
            text[2 * i] = digits[digest[i] >> 4]
            text[2 * i + 1] = digits[digest[i] & 15]
        return PyUnicode_DecodeASCII(text, 64, cython.NULL)
    return _sha256(data).hexdigest()


def _lines_for_python(bodies: list[bytes], prev: str, out: list[bytes]) -> str:
    head = prev.encode()
    for body in bodies:
        if body == b"{}":
            covered = b'{"prev":"%s"}' % head
        else:
            covered = b'%s,"prev":"%s"}' % (body[:-1], head)
        head = _sha256(covered).hexdigest().encode()
        out.append(b'%s,"hash":"%s"}\n' % (covered[:-1], head))
    return head.decode()


@cython.binding(False)
def lines_for(bodies: list[bytes], prev: str, out: list[bytes]) -> str:
    """Appends to ``out`` the chained line of each serialised record (a JSON object's bytes), in
    order; returns the last hash. A line is the record with ``"prev"`` (the hash before it) and
    ``"hash"`` (SHA-256 of the record with its ``"prev"``) added as its last two keys."""
    if cython.compiled:
        fits = NATIVE
        for body in bodies:  # (a loop: ``all()`` of a generator made a generator object per call)
            if type(body) is not bytes or len(body) < 2:
                fits = False
        if fits:
            head_bytes = prev.encode()
            head = cython.declare(cython.p_char, PyBytes_AS_STRING(head_bytes))
            h = cython.declare(cython.Py_ssize_t, len(head_bytes))
            ctx = cython.declare(cython.ulonglong[32])
            digest = cython.declare(cython.uchar[32])
            kept = cython.declare(cython.Py_ssize_t)
            seplen = cython.declare(cython.Py_ssize_t)
            k = cython.declare(cython.Py_ssize_t)
            i = cython.declare(cython.int)
            p = cython.declare(cython.p_char)
            sep = cython.declare(cython.p_char)
            digits = cython.declare(cython.p_char, b"0123456789abcdef")
            line = None
            for body in bodies:
                if body == b"{}":
                    kept = 1
                    sep = b'"prev":"'
                    seplen = 8
                else:
                    kept = len(body) - 1
                    sep = b',"prev":"'
                    seplen = 9
                # the line: record[:-1] + sep + head + '","hash":"' + 64 hex + '"}\n'; what the
                # hash covers: the same up to head, then '"}'
                k = kept + seplen + h
                line = PyBytes_FromStringAndSize(cython.NULL, k + 10 + 64 + 3)
                p = PyBytes_AS_STRING(line)
                memcpy(p, PyBytes_AS_STRING(body), kept)
                memcpy(p + kept, sep, seplen)
                memcpy(p + kept + seplen, head, h)
                _init(ctx)  # type: ignore[name-defined]
                _update(ctx, p, k)  # type: ignore[name-defined]
                _update(ctx, b'"}', 2)  # type: ignore[name-defined]
                _final(digest, ctx)  # type: ignore[name-defined]
                memcpy(p + k, b'","hash":"', 10)
                for i in range(32):
                    p[k + 10 + 2 * i] = digits[digest[i] >> 4]
                    p[k + 10 + 2 * i + 1] = digits[digest[i] & 15]
                memcpy(p + k + 74, b'"}\n', 3)
                out.append(line)
                head = p + k + 10  # (the line is kept in ``out``)
                h = 64
            if line is None:
                return prev
            return PyUnicode_DecodeASCII(head, 64, cython.NULL)
    return _lines_for_python(bodies, prev, out)


NATIVE = _bind()
