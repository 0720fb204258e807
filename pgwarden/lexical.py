"""The settings that decide how the server reads statement text, held where the session started.

``client_encoding`` decides which bytes make which characters (in SJIS the second
byte of 表 is a backslash on its own); ``standard_conforming_strings`` decides
whether a backslash escapes inside ``'...'``. pgwarden reads every statement with
the values the server reported at login (ParameterStatus; see
`pgwarden.sql.encoding` and `pgwarden.sql.lexer`).

Why a change is refused rather than followed: pgwarden decides a statement when
it arrives, before the server has run the ones sent before it (pipelines, several
Queries in one packet). After ``SET standard_conforming_strings = off``, the
statements already queued behind it would be read by pgwarden with the old rules
and by the server with the new ones. So the core refuses, whatever the policies
say, every statement that sets either to another value than the current one,
``set_config`` with a setting name or value computed at run time, and ``SET
NAMES``. ``RESET``, ``SET ... TO DEFAULT``, ``RESET ALL`` and ``DISCARD ALL`` go
back to the login value and pass. Should the server report a change all the same
(a function did it), the relay ends the session (`changed_from_login`).

``application_name`` is guarded here too, though it changes no reading: pgwarden names the
upstream session after the agent's verified identity at login (``upstream.application_name``,
``pgwarden:{subject}``), and the server's logs, ``pg_stat_activity`` and auditing extensions
attribute the session's statements by it. A change (``SET``, ``SET LOCAL``, ``set_config``, a
function's ``SET application_name`` clause or ``set_config`` in a function it runs, a function
created or altered with one) is refused; ``RESET``, ``RESET ALL`` and ``DISCARD ALL`` go back to
the login value and pass. ``ALTER ROLE``/``ALTER DATABASE ... SET application_name`` pass: the
login's own value (the startup packet's) takes precedence over them.

``backslash_quote`` is not reported by the server and never changes where a
literal ends, only whether ``\\'`` is refused: pgwarden assumes its default
(``safe_encoding``: refused in a client-only encoding such as SJIS) so that it
refuses the same statements as the server, and leaves changes of it alone.
"""

from __future__ import annotations

from collections.abc import Iterable

from pgwarden.sql.encoding import ClientEncoding, canonical
from pgwarden.sql.lexer import DEFAULT_LEXER, LexerSettings
from pgwarden.verdict import Refusal

CLIENT_ENCODING = "client_encoding"
STANDARD_CONFORMING_STRINGS = "standard_conforming_strings"
TRACKED = frozenset({CLIENT_ENCODING, STANDARD_CONFORMING_STRINGS})
APPLICATION_NAME = "application_name"


def parse_bool(text: str) -> bool | None:
    """A boolean setting's value as PostgreSQL's ``parse_bool`` reads it; None when it is not one."""
    t = text.lower()
    if not t:
        return None
    if t == "1":
        return True
    if t == "0":
        return False
    if t[0] in "ty" and ("true" if t[0] == "t" else "yes").startswith(t):
        return True
    if t[0] in "fn" and ("false" if t[0] == "f" else "no").startswith(t):
        return False
    if len(t) >= 2 and "on".startswith(t):
        return True
    if len(t) >= 2 and "off".startswith(t):
        return False
    return None


def lexer_of(parameters: dict[str, str], encoding: ClientEncoding) -> LexerSettings:
    """The lexer settings of a session in ``encoding`` whose server reported ``parameters``."""
    value = parameters.get(STANDARD_CONFORMING_STRINGS)
    standard = value is None or parse_bool(value) is not False
    if standard and not encoding.client_only:
        return DEFAULT_LEXER
    return LexerSettings(standard_conforming_strings=standard, backslash_quote=not encoding.client_only)


def changed_from_login(name: str, value: str, encoding: str, lexer: LexerSettings) -> bool:
    """Whether the server's report ``name = value`` contradicts how pgwarden reads the session."""
    if name == CLIENT_ENCODING:
        return canonical(value) != encoding
    if name == STANDARD_CONFORMING_STRINGS:
        return parse_bool(value) != lexer.standard_conforming_strings
    return False


def may_change(sql: str) -> bool:
    """False when the text cannot name SET, RESET, DISCARD or set_config: then nothing in it
    changes a setting, and it need not be parsed for `refusal`.

    Keywords and unquoted names are spelt out (in any case), quoted names too, except
    ``U&"..."`` with escapes: those are looked at. (A function that changes a setting
    from inside is no text here: see the relay's wait rule and its end of the session.)
    """
    low = sql.lower()
    return "set" in low or "discard" in low or "u&" in low


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def refusal(settings: Iterable[tuple[str, str | None]], functions: frozenset[str], encoding: str,
            lexer: LexerSettings) -> Refusal | None:
    """The core's refusal of a statement that would change how the server reads later ones.

    ``settings`` and ``functions`` come from the statement's analysis (`Analysis.settings`:
    a None value is RESET / DEFAULT, or a value computed at run time when ``set_config`` is
    called; the name ``*`` is RESET ALL / DISCARD ALL, or a name computed at run time).
    """
    computed = "set_config" in functions  # then a None value or a "*" name may be one
    for name, value in settings:
        if name == "*":
            if value is not None and not computed:
                return _renaming("a function it runs calls set_config with a setting name computed at run time")
            if computed:
                return Refusal(
                    "42501",
                    "pgwarden: blocked: set_config with a setting name computed at run time",
                    "It could change client_encoding or standard_conforming_strings, which decide how the "
                    "server reads the statements after it, or application_name, which carries the agent's "
                    "identity to the server's logs.",
                    "Name the setting as a literal, e.g. set_config('work_mem', '64MB', false).",
                )
            continue
        if name == APPLICATION_NAME:
            if value is None and not computed:
                continue  # RESET, SET ... TO DEFAULT: back to the login value
            return _renaming("application_name cannot be changed during the session")
        if name not in TRACKED:
            continue
        if value is None:
            if not computed:
                continue  # RESET, SET ... TO DEFAULT: back to the login value
            same = False
        elif name == CLIENT_ENCODING:
            same = canonical(value) == encoding
        else:
            same = parse_bool(value) == lexer.standard_conforming_strings
        if same:
            continue
        if name == CLIENT_ENCODING:
            return Refusal(
                "42501",
                "pgwarden: blocked: client_encoding cannot be changed during the session",
                f"pgwarden reads every statement in the client_encoding the session started with "
                f"({encoding}); statements sent after a change would be read differently by the server.",
                "Set client_encoding in the connection string instead (e.g. client_encoding=UTF8 "
                "or PGCLIENTENCODING), then reconnect.",
            )
        return Refusal(
            "42501",
            "pgwarden: blocked: standard_conforming_strings cannot be changed during the session",
            f"pgwarden parses every statement with the standard_conforming_strings the session started "
            f"with ({_on(lexer.standard_conforming_strings)}); statements sent after a change would be "
            f"parsed differently by the server.",
            "Write E'...' for strings with backslash escapes instead; session settings such as "
            "client_encoding belong in the connection string.",
        )
    return None


def _renaming(why: str) -> Refusal:
    """The refusal of a statement that may rename the upstream session (``application_name``)."""
    return Refusal(
        "42501",
        f"pgwarden: blocked: {why}",
        "pgwarden names the session after the agent's identity (application_name, set at login): the "
        "server's logs and pg_stat_activity attribute its statements by that name.",
        "Leave application_name as it is (RESET application_name returns to it); to name the client, give "
        "application_name in the connection string: pgwarden adds it after the identity.",
    )
