"""Restricted topics: a name and the phrases that bring it up, and how a caller's words
are matched against them.

Matching is deterministic and forgiving of how a line was written, not of what was
said: case and accents are ignored (Unicode NFKD, combining marks dropped, case
folded), punctuation separates words, and a phrase matches whole words only, in order
("bill" does not match "billing"; list "bills" too if callers say it).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# An admin's bounds on topics: enough for a call centre's rules, small enough that
# matching every caller line against them stays trivial.
MAX_TOPICS = 50
MAX_PHRASES = 50
MAX_PHRASE_CHARS = 100
# A topic's name is what an engine reports in a handoff request's `topic`, so it
# follows that field's pattern in the control API's contract.
TOPIC_NAME = re.compile(r"^[a-z0-9_-]{1,100}$")


@dataclass(frozen=True)
class Topic:
    name: str
    phrases: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "phrases": list(self.phrases)}


@dataclass(frozen=True)
class Hit:
    """A restricted topic that fired, and the phrase that fired it (None: the engine
    reported the topic itself)."""

    topic: str
    phrase: str | None = None


class HasTopics(Protocol):
    @property
    def restricted_topics(self) -> list[dict[str, Any]]: ...


def topics_of(assistant: HasTopics) -> list[Topic]:
    """The assistant's restricted topics (as stored), in the order the admin gave them."""
    return [Topic(str(t["name"]), tuple(str(p) for p in t.get("phrases", [])))
            for t in assistant.restricted_topics or []]


def words(text: str) -> tuple[str, ...]:
    """The words of ``text`` as matching sees them: decomposed (NFKD), accents dropped,
    case folded, split on anything that is not a letter or digit. "Réclamation" and
    "RECLAMATION" are the same word; "billing" is not "bill"."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return tuple(re.findall(r"\w+", plain))


def find_topic(topics: Iterable[Topic], text: str) -> Hit | None:
    """The first topic (in the admin's order) one of whose phrases is in ``text`` as whole
    words, with the first of its phrases that is; None if none is."""
    said = words(text)
    for topic in topics:
        for phrase in topic.phrases:
            wanted = words(phrase)
            if wanted and _contains(said, wanted):
                return Hit(topic.name, phrase)
    return None


def _contains(said: Sequence[str], wanted: Sequence[str]) -> bool:
    n = len(wanted)
    return any(tuple(said[i:i + n]) == tuple(wanted) for i in range(len(said) - n + 1))


class BadTopics(ValueError):
    """Topics an admin gave that cannot be stored; the message says which and why."""


def check_topics(raw: object) -> list[Topic]:
    """An admin's topics (a list of ``{"name", "phrases"}``), checked: names follow the
    API's topic pattern and are unique, every phrase has a word in it."""
    if not isinstance(raw, list):
        raise BadTopics("restricted topics are a list of {name, phrases}")
    if len(raw) > MAX_TOPICS:
        raise BadTopics(f"at most {MAX_TOPICS} restricted topics")
    topics: list[Topic] = []
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) \
                or not isinstance(item.get("phrases", []), list):
            raise BadTopics("a restricted topic is {name, phrases: [...]}")
        name = item["name"].strip()
        if not TOPIC_NAME.match(name):
            raise BadTopics(f"{name!r}: a topic's name is 1 to 100 of a-z, 0-9, '_' and '-' "
                            "(what an engine sends as a handoff's topic)")
        if any(t.name == name for t in topics):
            raise BadTopics(f"topic {name!r} is given twice")
        phrases = [p.strip() if isinstance(p, str) else p for p in item.get("phrases", [])]
        if not phrases or len(phrases) > MAX_PHRASES:
            raise BadTopics(f"topic {name!r} needs 1 to {MAX_PHRASES} phrases")
        for phrase in phrases:
            if not isinstance(phrase, str) or not words(phrase) \
                    or len(phrase) > MAX_PHRASE_CHARS:
                raise BadTopics(f"topic {name!r}: {phrase!r} is not a phrase (words, "
                                f"{MAX_PHRASE_CHARS} characters at most)")
        topics.append(Topic(name, tuple(dict.fromkeys(phrases))))
    return topics
