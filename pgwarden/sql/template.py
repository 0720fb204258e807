"""A statement text with its small integers set aside, found without parsing: the statement
cache's cheap way to libpg_query's ``normalize``.

Agents, and pgbench's simple protocol, send the same statement again and again with another
number in it (``WHERE aid = 12345``). Each such text is new to an exact-text cache, and
``normalize`` parses it in full to find its constants (about 30,000 instructions, a fifth of
pgwarden's whole work for a pass-through statement). `numeric_template` replaces each
standalone run of one to nine ASCII digits by `PLACEHOLDER` and keeps every other byte; it
gives up (None) on any text where bytes could mean something else depending on what is around
them: quotes of every kind, ``$`` (dollar quotes, parameters), backslashes, comments, control
characters and anything not ASCII.

The template is a key, never a reading: the cache learns what it stands for from
``normalize`` itself, on the first text of each template (`normalized_shape`). Why a template
checked once holds for every text with the same template: such texts differ only in the values
of runs of at most nine digits at the same places, each one an integer constant the lexer reads
alike (``ICONST``, a 32-bit value), so the server's grammar sees the same token kinds and builds
the same tree, with other values in it. ``normalize`` replaces constants by where they are in
that tree, never by their value: when it replaced exactly the template's runs in the first text
(a unary minus folded in, as it does), it replaces exactly those in every text of the template,
and the normalized text is the same. Where it did not (a number the grammar consumes, such as
``float(24)``, ``FETCH 5`` or ``ORDER BY 1``; a run of more than nine digits), the template is
remembered as unusable and each text of it is normalized as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # (annotations only: compiled, a machine integer; never imported at run time)
    from mypy_extensions import i64

#: stands for a run of digits in a template (no statement text holds a NUL: the protocol cannot carry one)
PLACEHOLDER: Final = "\x00"
#: the longest run replaced: nine digits always fit the 32 bits the lexer's ICONST takes
MAX_DIGITS: Final = 9

# Texts holding any of these get no template: quotes (', ", `), $, \\, comments (-- and /*),
# control characters (NUL among them) and anything not ASCII; `numeric_template` tests each byte.


def _continues(c: i64) -> bool:
    """Whether byte ``c`` continues an identifier or a number for PostgreSQL's lexer (the text
    is ASCII): a letter, a digit, ``_``, ``$`` or ``.``."""
    return 97 <= c <= 122 or 65 <= c <= 90 or 48 <= c <= 57 or c == 95 or c == 36 or c == 46


def numeric_template(sql: str) -> str | None:
    """``sql`` with each standalone run of at most `MAX_DIGITS` digits replaced by `PLACEHOLDER`,
    or None when the text holds anything a template cannot stand for (see the module's doc)."""
    if not sql.isascii():
        return None
    data = sql.encode("ascii")
    # i64: compiled, machine integers (no tagged-integer tests at each comparison and step);
    # plain ints in Python. (The byte classes by the most common first: letters and ``_``.)
    n: i64 = len(data)
    pieces: list[str] = []
    start: i64 = 0  # where the text not yet copied into pieces begins
    i: i64 = 0
    while i < n:
        c: i64 = data[i]
        if c >= 65:  # letters, _, and [ \ ] ^ ` { | } ~ DEL
            if c >= 127 or c == 92 or c == 96:
                return None
            i += 1
            continue
        if c < 48:
            # What gives up (above) is tested here, byte by byte, rather than by a search of the
            # text for each: most bytes are letters, past one test.
            if c < 32 and c != 9 and c != 10 and c != 13 or c == 39 or c == 34 or c == 36:
                return None
            if (c == 45 or c == 47) and i + 1 < n and data[i + 1] == (45 if c == 45 else 42):
                return None  # -- or /*
            i += 1
            continue
        if c > 57:  # : ; < = > ? @
            i += 1
            continue
        # a digit: a run starts here (the byte before it is not a digit: runs are skipped whole)
        end: i64 = i + 1
        while end < n and 48 <= data[end] <= 57:
            end += 1
        if (i == 0 or not _continues(data[i - 1])) and end - i <= MAX_DIGITS \
                and (end == n or not _continues(data[end])):
            pieces.append(sql[start:i])
            pieces.append(PLACEHOLDER)
            start = end
        # (else the run is a part of a longer number or a name, or too long: kept as it is)
        i = end
    if not pieces:
        return sql
    pieces.append(sql[start:])
    return "".join(pieces)


def template_parts(template: str) -> list[bytes]:
    """``template`` cut at its placeholders, as bytes (a template is ASCII): what
    `fits_template` compares a text with."""
    return [part.encode("ascii") for part in template.split(PLACEHOLDER)]


def fits_template(sql: str, parts: list[bytes]) -> bool:
    """Whether ``numeric_template(sql)`` is the template whose `template_parts` are ``parts``,
    without making the template: ``sql`` is the parts with a run of one to `MAX_DIGITS` digits
    between each two.

    Why that is the same answer: the parts are a template's text between its placeholders, so
    they hold nothing `numeric_template` gives up on, and each digit run in them is kept for
    what is around it within the part (a placeholder stood for a whole run: no part starts or
    ends with a digit). The byte before each placeholder and the byte after it continue no
    name or number (the run it stood for was standalone). So a text made of the parts with
    such runs between them has exactly those runs replaced, and nothing else: its template.
    Any other text, the template of a text made otherwise, answers False (its template is
    then made as for any text). (Bytes and machine integers: compiled, a byte is read
    natively, where a character of a str and its comparisons go through the generic API.)
    """
    try:  # (compiled, ``encode`` is a C call, ``isascii`` a method looked up by name)
        data = sql.encode("ascii")
    except UnicodeEncodeError:
        return False  # (the parts and the digits are ASCII)
    n: i64 = len(data)
    last: i64 = len(parts) - 1
    pos: i64 = 0
    k: i64 = 0
    while True:
        part = parts[k]
        size: i64 = len(part)
        if pos + size > n or data[pos:pos + size] != part:
            return False
        pos += size
        if k == last:
            return pos == n
        start: i64 = pos
        while pos < n and 48 <= data[pos] <= 57:
            pos += 1
        if pos == start or pos - start > MAX_DIGITS:
            return False
        k += 1


def normalized_shape(template: str, normalized: str) -> bool:
    """Whether ``normalized`` (libpg_query's ``normalize`` of a text whose template is
    ``template``) is the template with each placeholder replaced by a parameter ``$n`` (a minus
    sign right before it may be folded into the parameter): then every text of the template
    normalizes to ``normalized``."""
    parts = template.split(PLACEHOLDER)
    last = len(parts) - 1
    size = len(normalized)
    pos = 0
    for k in range(len(parts)):
        part = parts[k]
        if normalized.startswith(part, pos) and (k == last or pos + len(part) < size
                                                   and normalized[pos + len(part)] == "$"):
            pos += len(part)
        elif k < last and part.endswith("-") and normalized.startswith(part[:-1], pos) \
                and pos + len(part) - 1 < size and normalized[pos + len(part) - 1] == "$":
            pos += len(part) - 1  # the minus went into the constant
        else:
            return False
        if k == last:
            break
        pos += 1  # the "$"
        digits = pos
        while pos < size and "0" <= normalized[pos] <= "9":
            pos += 1
        if pos == digits:
            return False
    return pos == size


#: what PostgreSQL's lexer skips as white space between tokens
_SPACE: Final = " \t\n\r\f\v"


def signs_precede_numbers(sql: str) -> bool:
    """Whether every minus sign in ``sql`` is followed by a number (after white space only):
    then texts with the same normalized text have the same parse tree, else not.

    libpg_query's ``normalize`` folds a minus into the constant after it, whatever that
    constant is: ``-5``, ``-'5'``, ``-true`` and ``-NULL`` all become ``$1``. Only a number
    takes the sign into its value; before any other constant the minus is an operator call of
    its own, which a database may define to run a function (a prefix ``-`` on text). Any other
    ``-`` (before a name, a quote, a parenthesis, a comment, another minus) answers False,
    whether or not it is a sign: the text is then never shared by its normalized text. A ``--``
    is never a sign (a comment's start, or inside one, a string or a quoted name).
    """
    n = len(sql)
    i = sql.find("-")
    while i >= 0:
        j = i + 1
        if j < n and sql[j] == "-":
            i = sql.find("-", j + 1)
            continue
        while j < n and sql[j] in _SPACE:
            j += 1
        if j == n:
            return False
        c = sql[j]
        if not ("0" <= c <= "9" or c == "."):
            return False
        i = sql.find("-", j)
    return True
