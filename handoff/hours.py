"""Business hours: when an assistant's number is staffed, in the site's time zone.

An assistant's hours are weekly spans ("mon-fri 09:00-17:00", "sat 10:00-13:00") and
holiday dates (closed all day). No spans at all means always open, which is what every
assistant had before hours existed. Out of hours a call still reaches the number, but
the assistant's fallback applies at once: its outside number, or the AI keeps the caller
and notes a call-back request. The controller checks at the start of each call, against
the store, so an admin's change applies to the next call without a reload.

The spans are read in the site's zone (desk.time_zone, else the server's own, with its
summer time), never in UTC: "09:00" is what the people answering the phone read on their
clocks. A span ends before it starts on the same day only by mistake, so one that would
run past midnight is refused with the way to write it (two spans).
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, tzinfo
from pathlib import Path
from typing import Protocol

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^\s*([a-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY_MINUTES = 24 * 60

Clock = Callable[[], datetime]


def utc_clock() -> datetime:
    return datetime.now(UTC)


def server_zone() -> tzinfo:
    """The server's own zone, with its summer time rules (not just today's offset)."""
    try:
        return zoneinfo.ZoneInfo.from_file(Path("/etc/localtime").open("rb"), "localtime")
    except (OSError, ValueError):
        return UTC


class BadHours(ValueError):
    """Hours or holidays an admin typed that cannot be read; the message says why."""


@dataclass(frozen=True)
class Span:
    days: frozenset[int]  # 0 = Monday, as datetime.weekday()
    start: int  # minutes since midnight
    end: int  # minutes since midnight, after start; 24:00 is 1440

    def __str__(self) -> str:
        return f"{_days_text(self.days)} {_clock_text(self.start)}-{_clock_text(self.end)}"


@dataclass(frozen=True)
class Hours:
    spans: tuple[Span, ...] = ()
    holidays: frozenset[date] = frozenset()

    @classmethod
    def parse(cls, spans: Iterable[str], holidays: Iterable[str] = ()) -> Hours:
        """Read the admin's spans and ISO dates; BadHours names the first wrong one."""
        return cls(tuple(_span(text) for text in spans if text.strip()),
                   frozenset(_holiday(text) for text in holidays if text.strip()))

    @classmethod
    def of(cls, record: HasHours) -> Hours:
        """The hours stored with an assistant (written by :meth:`parse`, so valid)."""
        return cls.parse(record.hours or [], record.holidays or [])

    @property
    def always_open(self) -> bool:
        return not self.spans and not self.holidays

    def is_open(self, moment: datetime, zone: tzinfo) -> bool:
        local = moment.astimezone(zone)
        if local.date() in self.holidays:
            return False
        if not self.spans:
            return True
        minute = local.hour * 60 + local.minute
        return any(local.weekday() in s.days and s.start <= minute < s.end
                   for s in self.spans)

    def span_texts(self) -> list[str]:
        return [str(s) for s in self.spans]

    def holiday_texts(self) -> list[str]:
        return [d.isoformat() for d in sorted(self.holidays)]


class HasHours(Protocol):
    @property
    def hours(self) -> list[str]: ...
    @property
    def holidays(self) -> list[str]: ...


def _span(text: str) -> Span:
    match = _SPAN.match(text.lower())
    if match is None:
        raise BadHours(f"{text.strip()!r}: write days and times, e.g. 'mon-fri 09:00-17:00'")
    days = _days(match.group(1), text)
    start = _minutes(int(match.group(2)), int(match.group(3)), text)
    end = _minutes(int(match.group(4)), int(match.group(5)), text)
    if end <= start:
        raise BadHours(f"{text.strip()!r}: it ends before it starts; a span past midnight is "
                       "two spans, e.g. 'fri 22:00-24:00' and 'sat 00:00-06:00'")
    return Span(days, start, end)


def _days(text: str, whole: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise BadHours(f"{whole.strip()!r}: days are {', '.join(DAYS)} (e.g. mon-fri or "
                           "sat,sun)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise BadHours(f"{whole.strip()!r}: {part} runs backwards; write it as "
                           f"{first}-sun,mon-{last}")
        days.update(range(a, b + 1))
    return frozenset(days)


def _minutes(hour: int, minute: int, whole: str) -> int:
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise BadHours(f"{whole.strip()!r}: times run from 00:00 to 24:00")
    return hour * 60 + minute


def _holiday(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadHours(f"holiday {text.strip()!r}: write a date as YYYY-MM-DD") from None


def _days_text(days: frozenset[int]) -> str:
    ordered = sorted(days)
    runs: list[str] = []
    start = prev = ordered[0]
    for day in [*ordered[1:], None]:
        if day is not None and day == prev + 1:
            prev = day
            continue
        runs.append(DAYS[start] if start == prev else f"{DAYS[start]}-{DAYS[prev]}")
        if day is not None:
            start = prev = day
    return ",".join(runs)


def _clock_text(minutes: int) -> str:
    return time(minutes // 60, minutes % 60).strftime("%H:%M") if minutes < _DAY_MINUTES \
        else "24:00"
