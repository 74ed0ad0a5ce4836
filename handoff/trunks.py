"""Trunks to carriers, and which numbers may go out through which.

A call out (the assistant's fallback number, an agent's call-back) goes through the
first enabled trunk whose rules allow the number, in this order: the trunks of the
settings file as listed there, then those the admin page or the CLI added, oldest first.
A trunk allows a number when both hold:

- one of its ``patterns`` matches the number as dialled (Asterisk's strict pattern
  syntax: digits, X, Z, N, [ranges], an optional leading +, and ``.`` only at the end);
- its class is allowed: international and premium-rate numbers are refused unless an
  admin ticked ``allow_international`` / ``allow_premium`` on that trunk. Toll fraud is
  the classic PBX loss (a hijacked account dialling premium lines abroad all night), so
  a pattern that happens to match such a number is not enough.

A number no trunk allows is refused with the reasons and an audit line; nothing is
dialled.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from pbx.config_values import ConfigValueError, check_pattern
from pbx.trunk_config import SipTrunk

log = logging.getLogger(__name__)


class TrunkAuth(enum.StrEnum):
    IP = "ip"  # the carrier is recognised by its address and port
    REGISTER = "register"  # we register to the carrier with a digest account


class NumberClass(enum.StrEnum):
    NATIONAL = "national"
    INTERNATIONAL = "international"
    PREMIUM = "premium"


# Per asterisk.country: the country code, how an international call is dialled there,
# and the premium-rate ranges (national significant number prefixes, i.e. after the
# country code, and short numbers as dialled).
@dataclass(frozen=True)
class CountryPlan:
    code: str
    international_prefix: str
    premium: tuple[str, ...]
    premium_short: tuple[str, ...] = ()
    # Numbers in the country code that are abroad all the same (NANP islands).
    abroad: tuple[str, ...] = ()
    # What the pages show as an example where a number or a pattern is typed: a fictional
    # number as this country writes it, and the patterns allowing its landlines out.
    example: str = ""
    pattern_example: str = ""

    @property
    def example_number(self) -> str:
        return f"+{self.code}{self.example}"


COUNTRIES: dict[str, CountryPlan] = {
    # NANP: 1-900 and 1-976 are pay-per-call. The Caribbean islands share +1 but bill as
    # international, and are the classic destination of "one ring" and PBX fraud.
    "us": CountryPlan("1", "011", premium=("900", "976"), abroad=(
        "242", "246", "264", "268", "284", "345", "441", "473", "649", "658", "664",
        "721", "758", "767", "784", "809", "829", "849", "868", "869", "876"),
        example="2025550123", pattern_example="_NXXNXXXXXX _1NXXNXXXXXX"),
    # 09: premium rate; 087x: revenue sharing; 070: "personal" numbers that forward
    # anywhere at the caller's cost; 118xxx (dialled as is): directory enquiries. (0118
    # is Reading, a town.)
    "gb": CountryPlan("44", "00", premium=("9", "871", "872", "873", "70"),
                      premium_short=("118",), example="2079460123",
                      pattern_example="_0[1-3]XXXXXXXXX _+44[1-3]XXXXXXXXX"),
    # 0900: premium rate; 0137: mass calling (televoting); 118xy: directory enquiries.
    "de": CountryPlan("49", "00", premium=("900", "137"), premium_short=("118",),
                      example="30901820", pattern_example="_0[2-9]XXXXXX. _+49[2-9]XXXXXX."),
    # 089x: "numéros surtaxés"; 118xyz: directory enquiries.
    "fr": CountryPlan("33", "00", premium=("89",), premium_short=("118",),
                      example="123456789", pattern_example="_0[1-7]XXXXXXXX _+33[1-7]XXXXXXXX"),
}


def classify(number: str, country: str) -> NumberClass:
    """The class of ``number`` (digits, an optional leading +) dialled from ``country``."""
    plan = COUNTRIES[country]
    if number.startswith("+"):
        full = number[1:]
    elif number.startswith(plan.international_prefix):
        full = number[len(plan.international_prefix):]
    elif country == "us" and len(number) == 11 and number.startswith("1"):
        full = number
    elif country == "us" and len(number) == 10:
        full = "1" + number
    elif country != "us" and number.startswith("0"):
        full = plan.code + number[1:]
    else:
        # A short number (a service, an internal line): only its own list can make it
        # premium; there is no country code to compare.
        short_premium = number.startswith(plan.premium_short)
        return NumberClass.PREMIUM if short_premium else NumberClass.NATIONAL
    if not full.startswith(plan.code):
        return NumberClass.INTERNATIONAL
    national = full[len(plan.code):]
    if national.startswith(plan.abroad):
        return NumberClass.INTERNATIONAL
    return NumberClass.PREMIUM if national.startswith(plan.premium) else NumberClass.NATIONAL


# ---- allowed patterns ------------------------------------------------------------------

_PATTERN_PART = re.compile(r"\[[0-9\-]+\]|[0-9XZNxzn+.]")
_CLASS = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}


def check_outbound_pattern(key: str, value: str) -> str:
    """A pattern of numbers allowed out: the inbound rules (no '!', no '.' inside), plus
    a '.' at the end for "one or more digits more". It is matched here, in Python, never
    put into the dialplan, and the number it is matched against is digits only
    (handoff.callback.check_number), so an open tail cannot smuggle a dial string."""
    body = value[:-1] if value.startswith("_") and value.endswith(".") else value
    if body == "_":
        raise ConfigValueError(key, f"{value!r} allows every number: name the numbers, "
                               "e.g. _0[1-9]XXXXXXXX or _NXXNXXXXXX")
    try:
        check_pattern(key, body)
    except ConfigValueError:
        raise ConfigValueError(key, f"{value!r} is not a strict number pattern: digits (e.g. "
                               "0800123456) or _ with X, Z, N and [ranges], and '.' only at "
                               "the end (e.g. _0[1-7]XXXXXXXX, _00331.)") from None
    return value


def pattern_matches(pattern: str, number: str) -> bool:
    if not pattern.startswith("_"):
        return pattern == number
    regex = ""
    for part in _PATTERN_PART.findall(pattern[1:]):
        if part == ".":
            regex += "[0-9]+"
        elif part.upper() in _CLASS:
            regex += _CLASS[part.upper()]
        elif part == "+":
            regex += r"\+"
        else:
            regex += part
    return re.fullmatch(regex, number) is not None


# ---- trunks ------------------------------------------------------------------------------

# How often the PBX sends OPTIONS to a carrier: the status page's "unreachable".
QUALIFY_S = 30


@dataclass(frozen=True)
class Trunk:
    """A trunk as the product knows it, from the settings file or the store."""

    name: str
    host: str
    port: int = 5060
    auth: TrunkAuth = TrunkAuth.IP
    username: str = ""
    password: str = field(default="", repr=False)
    # The number the carrier shows for our calls out (the From user of our INVITEs).
    caller_id: str = ""
    codecs: tuple[str, ...] = ("ulaw", "alaw")
    patterns: tuple[str, ...] = ()
    allow_international: bool = False
    allow_premium: bool = False
    enabled: bool = True
    # "settings": read-only on the admin page; "store": managed there and by the CLI.
    source: str = "store"
    qualify_s: int = QUALIFY_S

    def sip(self) -> SipTrunk:
        """What Asterisk's configuration needs of it."""
        return SipTrunk(self.name, self.host, self.port, from_user=self.caller_id,
                        auth="register" if self.auth is TrunkAuth.REGISTER else "ip",
                        username=self.username, password=self.password,
                        codecs=self.codecs, qualify_s=self.qualify_s)

    def check(self, key: str = "trunk") -> None:
        """Raises ConfigValueError naming the field that is wrong."""
        self.sip().check(key)
        for i, pattern in enumerate(self.patterns):
            check_outbound_pattern(f"{key}.patterns[{i}]", pattern)

    def refusal(self, number: str, country: str) -> str | None:
        """Why ``number`` may not go out through this trunk; None if it may."""
        if not self.enabled:
            return "disabled"
        kind = classify(number, country)
        if kind is NumberClass.INTERNATIONAL and not self.allow_international:
            return "an international number, and international calls are not allowed"
        if kind is NumberClass.PREMIUM and not self.allow_premium:
            return "a premium-rate number, and premium-rate calls are not allowed"
        if not any(pattern_matches(p, number) for p in self.patterns):
            return ("no allowed pattern matches it" if self.patterns
                    else "it has no allowed patterns")
        return None


class OutboundRefused(Exception):
    """No trunk may carry the number; the message says why, trunk by trunk."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def choose(trunks: Sequence[Trunk], number: str, country: str) -> Trunk:
    """The first trunk that allows ``number``; OutboundRefused with every trunk's reason."""
    reasons = []
    for trunk in trunks:
        why = trunk.refusal(number, country)
        if why is None:
            return trunk
        reasons.append(f"{trunk.name}: {why}")
    if not reasons:
        raise OutboundRefused(f"{number} cannot be dialled: no trunk is configured")
    raise OutboundRefused(f"{number} cannot be dialled out ({'; '.join(reasons)})")
