"""A number's DTMF menu: "press 1 for sales, 2 for billing" before any AI answers.

A menu belongs to the assistant a number reaches (the dialplan stays as it is: the
number goes to that assistant's Stasis arguments). The controller plays the prompt into
the call bridge, so the recording holds it, and reads the caller's key from ARI's
ChannelDtmfReceived. A key leads to an assistant, whose AI then answers the call as if
its own number had been dialled, or to a queue, whose members get the card at once
while the menu's own AI keeps the caller company. No key, or keys that lead nowhere,
twice: the menu's own assistant answers, so a caller with a rotary phone or a bad
keypad still reaches someone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

KEYS = "0123456789*#"
MAX_PROMPT = 500
_OPTION = re.compile(
    r"^\s*([0-9*#])\s*=\s*(assistant|queue)\s*:\s*([A-Za-z][A-Za-z0-9_\-]{0,63})\s*$")


class BadMenu(ValueError):
    """A menu an admin wrote that cannot be used; the message says why."""


@dataclass(frozen=True)
class Choice:
    """Where a key leads: an assistant's name or a queue's name (one of them)."""

    kind: str  # "assistant" or "queue"
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class Menu:
    prompt: str = ""
    options: tuple[tuple[str, Choice], ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.options)

    def choice(self, key: str) -> Choice | None:
        return dict(self.options).get(key)

    @classmethod
    def parse(cls, prompt: str, lines: Iterable[str]) -> Menu:
        """The admin's prompt and ``KEY=assistant:NAME`` / ``KEY=queue:NAME`` lines;
        BadMenu names the first wrong one. No lines: no menu."""
        options: dict[str, Choice] = {}
        for line in lines:
            if not line.strip():
                continue
            match = _OPTION.match(line)
            if match is None:
                raise BadMenu(f"{line.strip()!r}: a menu key is KEY=assistant:NAME or "
                              "KEY=queue:NAME, KEY one of 0-9, * or #")
            key = match.group(1)
            if key in options:
                raise BadMenu(f"key {key} is given twice")
            options[key] = Choice(match.group(2), match.group(3))
        prompt = " ".join(prompt.split())
        if options and not prompt:
            raise BadMenu("a menu needs the prompt callers hear (e.g. 'Press 1 for sales')")
        if len(prompt) > MAX_PROMPT:
            raise BadMenu(f"the menu prompt is {MAX_PROMPT} characters at most")
        return cls(prompt if options else "", tuple(sorted(options.items())))

    @classmethod
    def of(cls, record: HasMenu) -> Menu:
        """The menu stored with an assistant (written by :meth:`to_json`, so valid)."""
        raw: Mapping[str, Any] = record.menu or {}
        return cls.parse(str(raw.get("prompt", "")), raw.get("options", []))

    def lines(self) -> list[str]:
        return [f"{key}={choice}" for key, choice in self.options]

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "options": self.lines()} if self.active else {}


class HasMenu(Protocol):
    @property
    def menu(self) -> dict[str, Any]: ...
