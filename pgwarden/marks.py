"""Text an agent wrote, as a person deciding about it must read it: every character that hides,
moves or disguises text shown as a mark naming it (``<U+202E>``).

The approvals inbox (`pgwarden_plugins.approve.inbox`, a mark in a span titled with the
character's name) and the terminal (`pgwarden.approvals_cli`, the mark alone) show the same
characters as marks:

* by Unicode category, the controls (C0 and C1, tab and newline aside: in a terminal an escape
  sequence erases and rewrites what was printed), the format characters (bidirectional
  embeddings, overrides and isolates, zero-width characters: Trojan Source, CVE-2021-42574), the
  line and paragraph separators, surrogate, private-use and unassigned code points;
* (red team twelve) the space characters other than U+0020 (Unicode's ``Zs``: the no-break
  space, the en and em spaces, the ideographic space, ...) and the letters drawn as blank space
  (the Hangul fillers, the braille blank): a page or a terminal draws each as a space, while
  PostgreSQL's lexer takes every non-ASCII character for a letter of an identifier.
  ``DELETE FROM things t<NBSP>WHERE<NBSP>id<NBSP>IS<NBSP>NULL`` reads as a DELETE of no row and
  deletes every row: "t where id is null" is the table's alias.

A CR before a newline stays: a line end as Windows clients send it.

Every other character outside ASCII is shown as itself, but named (`foreign`): a Cyrillic ``і``
in ``WHERE іd = 1`` is another column than ``id`` (red team twelve: a column the agent added,
all of its values 1, made a DELETE that read as one row's delete every row). The inbox
highlights each and says which they are; the terminal lists them under the statement.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

#: Unicode categories of the characters shown as marks
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
#: letters and symbols drawn as blank space (U+3164 HANGUL FILLER, U+2800 BRAILLE PATTERN BLANK, ...)
BLANK_LOOKING = frozenset("\u115f\u1160\u3164\uffa0\u2800")
#: what may be one of them (everything but printable ASCII, tab and newline): each is looked up
SUSPECT = re.compile(r"[^\t\n\x20-\x7e]")


def hidden(text: str, at: int) -> bool:
    """Whether ``text[at]`` (a `SUSPECT` character) is shown as a mark."""
    char = text[at]
    category = unicodedata.category(char)
    if category == "Zs":
        return True  # (U+0020 is not SUSPECT)
    if category not in HIDDEN_CATEGORIES:
        return char in BLANK_LOOKING
    return not (char == "\r" and text.startswith("\n", at + 1))


def mark(char: str) -> str:
    return f"<U+{ord(char):04X}>"


def char_name(char: str) -> str:
    return unicodedata.name(char, "control or unassigned character")


def marked(text: str) -> str:
    """``text`` with each hidden character replaced by its mark (for a terminal)."""
    parts: list[str] = []
    last = 0
    for found in SUSPECT.finditer(text):
        at = found.start()
        if hidden(text, at):
            parts += [text[last:at], mark(text[at])]
            last = at + 1
    parts.append(text[last:])
    return "".join(parts)


#: how many distinct characters `foreign` names at most
FOREIGN_NAMED = 12


def foreign(text: str) -> list[str]:
    """The distinct characters outside ASCII in ``text`` that are shown as themselves (not hidden),
    in order of appearance, each as ``і U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I``;
    at most `FOREIGN_NAMED` of them, then ``...``."""
    seen: dict[str, None] = {}
    for found in SUSPECT.finditer(text):
        char = found.group()
        if ord(char) > 0x7F and char not in seen and not hidden(text, found.start()):
            if len(seen) == FOREIGN_NAMED:
                return [*(describe(c) for c in seen), "..."]
            seen[char] = None
    return [describe(c) for c in seen]


def describe(char: str) -> str:
    return f"{char} {mark(char)[1:-1]} {char_name(char)}"


#: A run of this many blank characters (spaces, tabs, line ends) or more is pointed out
#: (red team twelve: `... WHERE id = 1` then thousands of blank lines, then `OR true`: the
#: inbox's formatted form, which shows the statement without them, was folded)
BLANK_RUN = 200
_BLANKS = re.compile(rf"[ \t\r\n\f\v]{{{BLANK_RUN},}}")


def longest_blank(sql: str) -> int:
    """The length of the longest run of ASCII blanks in ``sql`` of at least `BLANK_RUN`, else 0."""
    return max((m.end() - m.start() for m in _BLANKS.finditer(sql)), default=0)


#: A run of this many characters without an ASCII blank or more is pointed out (red team
#: fourteen: `... WHERE id = 1 /*` and thousands of dashes `*/OR/**/true` on a second line: a
#: browser wraps a line at blanks only, so the run went on far to the right of the page, its end
#: out of sight, and the formatted form, which shows `WHERE id = 1 OR true`, was folded)
UNBROKEN_RUN = 200
_UNBROKEN = re.compile(rf"[^ \t\r\n\f\v]{{{UNBROKEN_RUN},}}")


def longest_unbroken(sql: str) -> int:
    """The length of the longest run of characters other than ASCII blanks in ``sql`` of at least
    `UNBROKEN_RUN`, else 0."""
    return max((m.end() - m.start() for m in _UNBROKEN.finditer(sql)), default=0)


#: Bytes of each parameter value an approval request shows (`pgwarden.approvals.SHOWN_PARAMETER_BYTES`).
SHOWN_PARAMETER_BYTES = 2048


def cut_note(value: str | None, size: int | None) -> str | None:
    """What an approver must be told about a parameter shown as ``value`` whose whole value is
    ``size`` bytes (None: not known): that it was cut, and by how much (red team thirteen: a
    trailing "…", which a value may hold itself, was all that said so). None when shown whole."""
    if size is not None:
        if size <= SHOWN_PARAMETER_BYTES:
            return None
        return (f"cut: the first {SHOWN_PARAMETER_BYTES:,} of {size:,} bytes are shown; the statement runs with "
                f"the whole value")
    if value is not None and value.endswith("\u2026"):
        return "may be cut (its size is not known): the statement runs with the whole value"
    return None


def copy_in_note(kinds: Sequence[str], tables: Sequence[str]) -> str | None:
    """What an approver must know of a `COPY ... FROM STDIN` (kind ``copy_from``: from the client)
    and says nothing about otherwise (red team fifteen): its rows come from the agent after the
    approval, so nobody sees them; None for any other statement."""
    if "copy_from" not in kinds:
        return None
    into = ", ".join(tables) or "its table"
    return (f"This COPY reads its rows from the agent after the approval: they are not shown here and are not "
            f"known yet. Approving it lets the agent write whatever rows it sends into {into}.")
