"""Log output: plain text for a person at a terminal, or one JSON object per line for a
log collector, with the call, handoff and agent a line is about as fields of their own.

Log lines name what they are about in the message, by one convention across the code:
``call=<id>``, ``handoff=<id>``, ``agent=<login or id>``. The JSON form lifts those into
``call_id``, ``handoff_id`` and ``agent`` (a line may also pass them with ``extra=``), so
a collector can follow one call through the controller without parsing text.

Callers' numbers are personal data: at info level and above they are written masked
(:func:`mask_number`); a person who needs the full number reads it in the call history,
which has its own access rules.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The message convention, lifted into fields: call=<uuid>, handoff=<n>, agent=<login|n>.
_FIELDS = {
    "call_id": re.compile(r"\bcall=([0-9A-Za-z-]+)"),
    "handoff_id": re.compile(r"\bhandoff=(\d+)"),
    "agent": re.compile(r"\bagent=([\w.@-]+)"),
}


def mask_number(number: str | None) -> str:
    """A phone number as logs may show it: enough to tell calls apart, not to call back
    (``+33123456789`` -> ``+33*******89``)."""
    if not number:
        return ""
    keep_head = 3 if number.startswith("+") else 2
    if len(number) <= keep_head + 2:
        return "*" * len(number)
    return number[:keep_head] + "*" * (len(number) - keep_head - 2) + number[-2:]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        for field, pattern in _FIELDS.items():
            given = getattr(record, field, None)
            if given is None:
                found = pattern.search(message)
                given = found.group(1) if found else None
            if given is not None:
                line[field] = int(given) if field == "handoff_id" else str(given)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, log_format: str = "text") -> None:
    """The root logger's level and format (the `switchboard` command calls this once
    its settings are read)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r}: one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    root.setLevel(level.upper())
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    for handler in root.handlers:
        handler.setFormatter(formatter)
