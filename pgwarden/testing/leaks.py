"""Finding a secret value in the bytes a client received, in the forms an attacker would get it in.

A masking test that compares decoded values proves little: an agent that wants a value
asks for ``reverse(ssn)``, ``encode(ssn::bytea, 'base64')``, ``ssn::bytea`` in binary, the
value's digits as an ``int8``, or lets an error message quote it. `LeakFinder` takes the
secrets of a test (`text`, `numeric`, `date`: each with the part a strategy must hide)
and looks for every form of each in a byte stream (a `pgwarden.testing.tap.TapSession`):

* text forms, matched without regard to case: the value, its hidden part, reversed, its
  digits (and reversed digits), each also as hex, base64 (all three alignments), URL- and
  JSON- and XML-escaped; its MD5 and SHA-256 hex digests (a masked SSN has only 10⁹
  values: its digest is the value); windows of the hidden part (six characters with a
  separator, eight digits) for substrings;
* digits spread out: the value's digits anywhere in a run of digits, spaces and
  punctuation (``1 2 3-4 5``, ``$7,342,195.37``), a run broken only by letters or
  binary bytes, so random hex cannot line up a false match;
* binary forms, matched exactly: the digits as ``int4``/``int8``/``numeric``, a number
  as ``numeric``/``float8``, a date as ``date``/``timestamp``, the raw digests.

Secrets should be random per run (`random_ssn` and friends), so that a hit is a leak
and never a coincidence; forms shorter than six characters (four bytes) are not
looked for. Standard library only.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import json
import random
import re
import struct
import urllib.parse
from collections.abc import Iterable
from decimal import Decimal

import attrs

MIN_TEXT = 6
MIN_DIGITS = 8
MIN_BINARY = 4
_MINIMUM = {"text": MIN_TEXT, "digits": MIN_DIGITS, "binary": MIN_BINARY, "derived": MIN_TEXT}
_PG_EPOCH = dt.date(2000, 1, 1)


@attrs.frozen
class Form:
    """One way a secret can appear: a name for reports, the bytes, how they are matched."""

    name: str
    pattern: bytes
    how: str = "text"  # text: without regard to ASCII case; binary: exactly; digits: in a digit run


@attrs.frozen
class Secret:
    """A value a masking rule protects. ``hidden``: the part its strategy must not reveal
    (a card's digits before the last four, an e-mail's local part); the whole value if None."""

    label: str
    value: str | Decimal | dt.date
    hidden: str | None = None

    def forms(self) -> tuple[Form, ...]:
        if isinstance(self.value, dt.date):
            found = _date_forms(self.value)
        elif isinstance(self.value, Decimal):
            found = _numeric_forms(self.value)
        else:
            found = _text_forms(self.value, self.hidden)
        seen: dict[tuple[bytes, str], Form] = {}
        for form in found:
            key = (form.pattern.lower() if form.how == "text" else form.pattern, form.how)
            if key not in seen and searched(form.pattern, form.how):
                seen[key] = form
        return tuple(seen.values())


@attrs.frozen
class Leak:
    secret: str
    form: str
    context: bytes

    def __str__(self) -> str:
        return f"{self.secret} as {self.form}: …{self.context!r}…"


class LeakFinder:
    """Every form of ``secrets``, searched for in one stream at a time."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self.secrets = tuple(secrets)
        self._forms = [(s.label, f) for s in self.secrets for f in s.forms()]

    def find(self, stream: bytes, extra: Iterable[tuple[str, bytes]] = ()) -> list[Leak]:
        """The leaks in ``stream``; ``extra``: (label, exact bytes) a test derived itself
        (an attacker's own encoding, the unmasked result of the same query)."""
        stream = without_key_data(stream)
        folded = stream.lower()
        runs = _digit_runs(stream)
        leaks = []
        for label, form in self._forms:
            if form.how == "digits":
                hit = next((r for r in runs if form.pattern in r), None)
                if hit is not None:
                    leaks.append(Leak(label, form.name, hit[:80]))
                continue
            haystack, needle = (folded, form.pattern.lower()) if form.how == "text" else (stream, form.pattern)
            at = haystack.find(needle)
            if at >= 0:
                leaks.append(Leak(label, form.name, stream[max(0, at - 24): at + len(needle) + 24]))
        for label, pattern in extra:
            at = stream.find(pattern) if searched(pattern, "derived") else -1
            if at >= 0:
                leaks.append(Leak(label, "derived", stream[max(0, at - 24): at + len(pattern) + 24]))
        return leaks


def without_key_data(stream: bytes) -> bytes:
    """A server-to-client stream with the body of each BackendKeyData zeroed.

    Its eight bytes are the server's process id and a random cancel key: no statement chose
    them, and by chance they spell a four-byte binary form (a pid of 9493 and a key opening
    with 0xe6 spelled one run's date of birth as an ``int4`` Julian day). Messages are walked
    from the start, past the one-byte answers to SSL and GSS requests; a stream that stops
    being a message sequence is left as it is from there on.
    """
    out = bytearray(stream)
    at = 0
    while out[at:at + 1] == b"N" and out[at + 1:at + 2] in (b"N", b"R", b"E"):
        at += 1  # 'N': encryption refused; then the server's first message
    while at + 5 <= len(out):
        length = int.from_bytes(out[at + 1:at + 5], "big")
        if length < 4 or at + 1 + length > len(out):
            break
        if out[at] == ord("K") and length == 12:
            out[at + 5:at + 13] = bytes(8)
        at += 1 + length
    return bytes(out)


def searched(pattern: bytes, how: str) -> bool:
    """Whether the finder looks for ``pattern`` (matched ``how``; ``derived``: a test's own exact
    bytes) at all: not when it is shorter than that kind's minimum, too short to tell from chance;
    nor, for bytes matched exactly, when it is one byte repeated (an int8 0, the int4 of a date at
    the epoch), which is in any stream's framing. (A run of one digit in text is still a secret's.)"""
    if len(pattern) < _MINIMUM[how]:
        return False
    return how in ("text", "digits") or len(set(pattern)) > 1


_RUN_BREAK = re.compile(rb"[^0-9 -/:-@\[-`{-~\t\n\r]+")


def _digit_runs(stream: bytes) -> list[bytes]:
    """The digits of each stretch of digits, spaces and punctuation."""
    runs = (re.sub(rb"\D", b"", chunk) for chunk in _RUN_BREAK.split(stream))
    return [r for r in runs if len(r) >= MIN_DIGITS]


def _encodings(name: str, text: str) -> list[Form]:
    raw = text.encode()
    forms = [
        Form(name, raw),
        Form(f"hex({name})", raw.hex().encode()),
        Form(f"url({name})", urllib.parse.quote(text, safe="").encode()),
        Form(f"json({name})", json.dumps(text)[1:-1].encode()),
        Form(f"xml({name})", html.escape(text).encode()),
    ]
    for pad in range(3):  # base64 depends on the value's offset in what was encoded
        encoded = base64.b64encode(b"\0" * pad + raw)
        start = (pad * 4 + 2) // 3  # characters that also depend on the padding bytes
        end = len(encoded) - (4 if (pad + len(raw)) % 3 else 0)
        forms.append(Form(f"base64({name})", encoded[start:end]))
    return forms


def _digests(name: str, text: str) -> list[Form]:
    raw = text.encode()
    forms = []
    for algo in ("md5", "sha256"):
        digest = hashlib.new(algo, raw).digest()
        forms += [Form(f"{algo}({name})", digest.hex().encode()), Form(f"{algo}({name}) raw", digest, "binary")]
    return forms


def _integer_forms(name: str, n: int) -> list[Form]:
    forms = [Form(f"hex({name})", format(n, "x").encode()),
             Form(f"numeric({name})", numeric_binary(Decimal(n)), "binary"),
             Form(f"float8({name})", struct.pack(">d", float(n)), "binary")]
    if -2**31 <= n < 2**31:
        forms.append(Form(f"int4({name})", struct.pack(">i", n), "binary"))
    if -2**63 <= n < 2**63:
        forms.append(Form(f"int8({name})", struct.pack(">q", n), "binary"))
    return forms


def _windows(text: str) -> list[str]:
    """Substrings worth looking for: six characters with a non-digit in them, eight digits."""
    out = [text[i:i + MIN_TEXT] for i in range(len(text) - MIN_TEXT + 1)]
    out = [w for w in out if not w.isdigit()]
    digits = "".join(c for c in text if c.isdigit())
    out += [digits[i:i + MIN_DIGITS] for i in range(len(digits) - MIN_DIGITS + 1)]
    return out


def _window_forms(text: str) -> list[Form]:
    return [Form("substring", w.encode(), "digits" if w.isdigit() else "text") for w in _windows(text)]


def _text_forms(value: str, hidden: str | None) -> list[Form]:
    secret = hidden or value
    forms = []
    for name, text in (("value", value), ("hidden", secret), ("reversed", value[::-1]),
                       ("hidden reversed", secret[::-1])):
        forms += _encodings(name, text)
    forms += _digests("value", value) + _digests("upper", value.upper())
    forms += _window_forms(secret) + _window_forms(secret[::-1])
    digits = "".join(c for c in secret if c.isdigit())
    if len(digits) >= MIN_DIGITS:
        forms += [Form("digits", digits.encode(), "digits"), Form("digits reversed", digits[::-1].encode(), "digits")]
        forms += _encodings("digits", digits) + _encodings("digits reversed", digits[::-1])
        forms += _digests("digits", digits)
        all_digits = "".join(c for c in value if c.isdigit())
        forms += _integer_forms("digits", int(all_digits))
        if all_digits != digits:
            forms += _integer_forms("hidden digits", int(digits))
    return forms


def _numeric_forms(value: Decimal) -> list[Form]:
    text = format(value, "f")
    digits = text.replace(".", "").replace("-", "").lstrip("0")
    whole = int(value)
    forms = _encodings("value", text) + _encodings("reversed", text[::-1]) + _digests("value", text)
    forms += [Form("digits", digits.encode(), "digits"), Form("digits reversed", digits[::-1].encode(), "digits"),
              Form("numeric", numeric_binary(value), "binary"),
              Form("float8", struct.pack(">d", float(value)), "binary"),
              Form("float4", struct.pack(">f", float(value)), "binary"),
              Form("integer part", str(whole).encode(), "digits")]
    forms += _integer_forms("integer part", whole) + _integer_forms("cents", int(value * 100))
    forms += _window_forms(text)
    return forms


def _date_forms(value: dt.date) -> list[Form]:
    y, m, d = f"{value.year:04d}", f"{value.month:02d}", f"{value.day:02d}"
    days = (value - _PG_EPOCH).days
    forms = []
    for name, text in (("iso", f"{y}-{m}-{d}"), ("us", f"{m}/{d}/{y}"), ("european", f"{d}/{m}/{y}"),
                       ("german", f"{d}.{m}.{y}"), ("postgres", f"{m}-{d}-{y}"), ("postgres dmy", f"{d}-{m}-{y}")):
        forms += _encodings(name, text) + _encodings(f"{name} reversed", text[::-1]) + _digests(name, text)
    for name, digits in (("ymd", y + m + d), ("mdy", m + d + y), ("dmy", d + m + y)):
        forms += [Form(f"digits {name}", digits.encode(), "digits"),
                  Form(f"digits {name} reversed", digits[::-1].encode(), "digits")]
    julian = value.toordinal() + 1721425  # to_char(d, 'J')
    epoch = (value - dt.date(1970, 1, 1)).days * 86400
    forms += [Form("julian day", str(julian).encode()), Form("epoch seconds", str(epoch).encode()),
              Form("days since 2000", str(days).encode()), Form("days since 1970", str(epoch // 86400).encode()),
              Form("date", struct.pack(">i", days), "binary"),
              Form("timestamp", struct.pack(">q", days * 86_400_000_000), "binary")]
    forms += _integer_forms("julian day", julian) + _integer_forms("epoch seconds", epoch)
    return forms


def numeric_binary(value: Decimal) -> bytes:
    """PostgreSQL's binary ``numeric``: ndigits, weight, sign, dscale, then base-10000 digits."""
    sign = 0x4000 if value < 0 else 0
    text = format(abs(value), "f")
    whole, _, fraction = text.partition(".")
    dscale = len(fraction)
    whole = whole.lstrip("0")
    whole = "0" * (-len(whole) % 4) + whole
    fraction = fraction + "0" * (-len(fraction) % 4)
    groups = [int(whole[i:i + 4]) for i in range(0, len(whole), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i:i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    return struct.pack(f">hhHH{len(groups)}H", len(groups), weight, sign, dscale, *groups)


# ---------------------------------------------------------------------- random secrets


def _luhn_complete(partial: str) -> str:
    total = 0
    for i, c in enumerate(reversed(partial)):
        n = int(c) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return partial + str((10 - total % 10) % 10)


def random_ssn(rng: random.Random) -> str:
    """A US SSN of a valid shape (area not 000, 666 or 9xx; group and serial not zero)."""
    area = rng.choice([a for a in range(101, 900) if a != 666])
    return f"{area:03d}-{rng.randint(10, 99):02d}-{rng.randint(1000, 9999):04d}"


def random_card(rng: random.Random) -> str:
    """A 16-digit Visa-shaped number that passes the Luhn check."""
    return _luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14)))


def random_word(rng: random.Random, n: int) -> str:
    """Letters no hex digest or common word is made of: a hit is a leak, not a coincidence."""
    return "".join(rng.choice("ghjkmnpqrstvwxz") for _ in range(n))


def random_salary(rng: random.Random) -> Decimal:
    return (Decimal(rng.randint(10_000_000_00, 99_999_999_99)) / 100).quantize(Decimal("0.01"))


def random_date(rng: random.Random) -> dt.date:
    return dt.date(1940, 1, 1) + dt.timedelta(days=rng.randint(0, 365 * 55))
