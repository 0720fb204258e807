"""Content detectors: values that look like secrets or personal data wherever they appear.

Each `Detector` is a regular expression that finds candidates and, where a format has
a checksum or a grammar, a validator from a maintained library (python-stdnum's Luhn,
SSN and IBAN rules; Google's phonenumbers): hand-written checksums are where scanners
go wrong. Third parties add their own through ``pgwarden_mask_detectors``.

Speed: each detector promises what every match of its holds (``digits``, ``anchors``), and a
`Scanner` makes of them a `pgwarden.mask_rows.Prefilter`: the row walk passes over every value
it rejects (most values) without the expression running. Only on a candidate does it search
the combined expression, and validate and replace what it finds; a value that is one hit whole
of a detector without validator is replaced without decoding. Patterns never look behind their
match (no leading ``\\b``), so a candidate is found in a run exactly where it is found in its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pgwarden.mask_rows import Prefilter
from pgwarden.masking import Detector

# phonenumbers and python-stdnum are imported by the validators, on the first candidate:
# about 2 MiB a pgwarden without detect rules (or with no candidate yet) does not hold.


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def _ssn(text: str) -> bool:
    from stdnum.us import ssn

    return ssn.is_valid(_digits(text))


def _card(text: str) -> bool:
    from stdnum import luhn

    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _iban(text: str) -> bool:
    from stdnum import iban

    return iban.is_valid(text)


def _phone(text: str) -> bool:
    import phonenumbers

    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


BUILTIN = (
    Detector("ssn", r"\d{3}[- ]\d{2}[- ]\d{4}(?!\d)", _ssn, digits=9),
    Detector("credit_card", r"\d(?:[ -]?\d){12,18}(?!\d)", _card, digits=13),
    Detector("email", r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}", anchors=("@",)),
    Detector("iban", r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}", _iban, digits=2),
    Detector("phone", r"\+?\(?\d{1,4}\)?[ .-]?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\d)", _phone, digits=9),
    Detector("jwt", r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}", anchors=("eyJ",)),
    Detector("api_key", r"(?:(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
                        r"|xox[baprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|-----BEGIN [A-Z ]*PRIVATE KEY-----)",
             anchors=("_live_", "_test_", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza",
                      "-----BEGIN ")),
)
# What each promises (`Detector.digits`, `Detector.anchors`), counted from its pattern: ssn
# 3+2+4 digits, a card 13 at least, a phone 1+2+3+3, an IBAN its 2 check digits; the others
# by the literal text every match holds. tests/unit/test_detect_prefilter.py checks each.


class Scanner:
    """The detectors of one result column set, compiled into one expression (bytes and text)."""

    __slots__ = ("detectors", "prefilter", "whole", "_run", "_text", "_without")

    def __init__(self, detectors: Iterable[Detector]) -> None:
        self.detectors = tuple(detectors)
        alternation = "|".join(f"(?P<d{i}>{d.pattern})" for i, d in enumerate(self.detectors))
        self._run = re.compile(alternation.encode())
        self._text = re.compile(alternation)
        self._without: dict[int, Scanner] = {}
        #: passes every value in which a detector could find something; None: it cannot tell
        self.prefilter = Prefilter.of([(d.digits, d.anchors) for d in self.detectors])
        # Over ASCII text a bytes expression matches as the text one does, but for \s (which in
        # text also matches \x1c-\x1f): without it in a pattern, a value that is one match whole
        # of a detector without validator is that detector's hit, and nothing else (`whole`).
        alike = not any(re.search(r"\\[sS]", d.pattern) for d in self.detectors)
        #: group of the combined expression -> detector name, for `pgwarden.mask_rows.Detection`
        self.whole: dict[str, str] = {f"d{i}": d.name for i, d in enumerate(self.detectors)
                                      if d.validate is None} if alike else {}

    @property
    def pattern(self) -> re.Pattern[bytes]:
        """The combined expression over bytes (`candidate`'s)."""
        return self._run

    def candidate(self, raw: bytes) -> bool:
        """Whether anything in ``raw`` (a run of rows, a message) could be a hit."""
        return self._run.search(raw) is not None

    def scrub(self, text: str) -> tuple[str, list[str]]:
        """``text`` with each validated hit replaced by ``[name]``, and the names of the hits."""
        hits: list[str] = []

        def replace(match: re.Match[str]) -> str:
            index = int(match.lastgroup[1:])  # type: ignore[index]
            detector = self.detectors[index]
            found = match.group(0)
            if detector.validate is not None and not detector.validate(found):
                # Not this one: the others may still find something inside it.
                rest = self._without.get(index)
                if rest is None:
                    rest = self._without[index] = Scanner(d for d in self.detectors if d is not detector)
                inner, more = rest.scrub(found) if rest.detectors else (found, [])
                hits.extend(more)
                return inner
            hits.append(detector.name)
            return f"[{detector.name}]"

        scrubbed = self._text.sub(replace, text)
        return scrubbed, hits
