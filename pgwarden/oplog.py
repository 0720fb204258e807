"""pgwarden's own log (start, reload, upstream errors, plugin failures), kept apart from records.

Records go to their sinks (stdout by default); this log goes to stderr, so an
SRE can route the two separately. On a terminal it is readable text; otherwise
one JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the event's
own fields, and ``error`` with the traceback when a failure is logged.
"""

from __future__ import annotations

import sys
from typing import IO

import orjson
from twisted.logger import FileLogObserver, ILogObserver, formatEvent, globalLogBeginner
from zope.interface import implementer

from pgwarden.recorder import timestamp

_SIMPLE = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class JsonLinesObserver:
    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: dict) -> None:
        line = {
            "ts": timestamp(event.get("log_time")),
            "level": getattr(event.get("log_level"), "name", "info"),
            "logger": event.get("log_namespace", "-"),
            "msg": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in line and isinstance(value, _SIMPLE):
                line[key] = value
        failure = event.get("log_failure")
        if failure is not None:
            line["error"] = failure.getTraceback()
        try:
            self._out.write(orjson.dumps(line).decode() + "\n")
            self._out.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it


def _text(event: dict) -> str | None:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text += "\n" + failure.getTraceback()
    level = getattr(event.get("log_level"), "name", "info")
    return f"{timestamp(event.get('log_time'))[:23]} {level:<5} [{event.get('log_namespace', '-')}] {text}\n"


def observer_for(out: IO[str]):
    """Text for people on a terminal, JSON lines for machines otherwise."""
    if out.isatty():
        return FileLogObserver(out, _text)
    return JsonLinesObserver(out)


def start(out: IO[str] | None = None) -> None:
    globalLogBeginner.beginLoggingTo([observer_for(out or sys.stderr)], redirectStandardIO=False)
