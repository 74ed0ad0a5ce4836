"""Which numbers may go out through which trunk, and a trunk's fields checked."""

from __future__ import annotations

import dataclasses

import pytest

from handoff.trunks import (
    NumberClass,
    OutboundRefused,
    Trunk,
    TrunkAuth,
    choose,
    classify,
    pattern_matches,
)
from pbx.config_values import ConfigValueError
from web import trunks


@pytest.mark.parametrize("country, number, kind", [
    ("us", "2125551234", NumberClass.NATIONAL),
    ("us", "12125551234", NumberClass.NATIONAL),
    ("us", "+12125551234", NumberClass.NATIONAL),
    ("us", "19005551234", NumberClass.PREMIUM),
    ("us", "+19765551234", NumberClass.PREMIUM),
    ("us", "+18765551234", NumberClass.INTERNATIONAL),  # Jamaica shares +1
    ("us", "8095551234", NumberClass.INTERNATIONAL),  # the Dominican Republic too
    ("us", "011442071838750", NumberClass.INTERNATIONAL),
    ("us", "+442071838750", NumberClass.INTERNATIONAL),
    ("us", "5001", NumberClass.NATIONAL),  # a short line
    ("gb", "02071838750", NumberClass.NATIONAL),
    ("gb", "01189123456", NumberClass.NATIONAL),  # Reading, not directory enquiries
    ("gb", "09098790000", NumberClass.PREMIUM),
    ("gb", "08712345678", NumberClass.PREMIUM),
    ("gb", "07012345678", NumberClass.PREMIUM),
    ("gb", "118118", NumberClass.PREMIUM),
    ("gb", "0033123456789", NumberClass.INTERNATIONAL),
    ("de", "030123456", NumberClass.NATIONAL),
    ("de", "0900123456", NumberClass.PREMIUM),
    ("de", "01371234567", NumberClass.PREMIUM),
    ("de", "11833", NumberClass.PREMIUM),
    ("de", "+4930123456", NumberClass.NATIONAL),
    ("fr", "0123456789", NumberClass.NATIONAL),
    ("fr", "0899123456", NumberClass.PREMIUM),
    ("fr", "+33899123456", NumberClass.PREMIUM),
    ("fr", "118712", NumberClass.PREMIUM),
    ("fr", "0044207183875", NumberClass.INTERNATIONAL),
])
def test_numbers_are_classed_per_country(country: str, number: str, kind: NumberClass) -> None:
    assert classify(number, country) is kind


@pytest.mark.parametrize("pattern, number, matches", [
    ("_0[1-7]XXXXXXXX", "0123456789", True),
    ("_0[1-7]XXXXXXXX", "0823456789", False),
    ("_0[1-7]XXXXXXXX", "01234567890", False),  # one digit too many
    ("_NXXNXXXXXX", "2125551234", True),
    ("_NXXNXXXXXX", "1125551234", False),
    ("_+33Z.", "+33123", True),
    ("_+33Z.", "+33", False),
    ("5001", "5001", True),
    ("5001", "50011", False),
])
def test_patterns_match_whole_numbers(pattern: str, number: str, matches: bool) -> None:
    assert pattern_matches(pattern, number) is matches


NATIONAL = Trunk("a", "192.0.2.1", patterns=("_+X.", "_X."))


def test_the_first_trunk_that_allows_the_number_carries_it() -> None:
    abroad = Trunk("b", "192.0.2.2", patterns=("_+X.",), allow_international=True)
    assert choose([NATIONAL, abroad], "+12125551234", "us").name == "a"
    assert choose([NATIONAL, abroad], "+442071838750", "us").name == "b"
    assert choose([dataclasses.replace(NATIONAL, enabled=False), abroad],
                  "+12125551234", "us").name == "b"


def test_a_pattern_alone_does_not_let_a_premium_or_international_number_out() -> None:
    with pytest.raises(OutboundRefused) as refused:
        choose([NATIONAL], "19005551234", "us")
    assert refused.value.reason == ("19005551234 cannot be dialled out (a: a premium-rate "
                                    "number, and premium-rate calls are not allowed)")
    with pytest.raises(OutboundRefused, match="international calls are not allowed"):
        choose([NATIONAL], "+442071838750", "us")
    with pytest.raises(OutboundRefused, match="no trunk is configured"):
        choose([], "2125551234", "us")
    with pytest.raises(OutboundRefused, match="it has no allowed patterns"):
        choose([Trunk("c", "192.0.2.3")], "2125551234", "us")


@pytest.mark.parametrize("changes, reason", [
    ({"host": "sip.example"}, "name: required"),
    ({"name": "1st", "host": "h"}, "trunk.name: '1st' must start with a letter"),
    ({"name": "a", "host": "h", "port": 70000}, "trunk.port: 70000 is not a port"),
    ({"name": "a", "host": "h", "auth": "token"}, "auth: ip or register"),
    ({"name": "a", "host": "h", "auth": "register", "username": "u"},
     "trunk.username: a registering trunk needs a username and a password"),
    ({"name": "a", "host": "h", "auth": "register", "username": "u", "password": "two words"},
     "trunk.password: must be 6 to 128 characters"),
    ({"name": "a", "host": "h", "codecs": "ulaw g729"}, "trunk.codecs: g729: choose from"),
    ({"name": "a", "host": "h", "patterns": "_X!"}, "not a strict number pattern"),
    ({"name": "a", "host": "h", "patterns": "_."}, "allows every number"),
    ({"name": "a", "host": "h", "caller_id": "+1 555"}, "trunk.caller_id: '+1 555'"),
    ({"name": "a", "host": "h", "allow_premium": "yes"}, "allow_premium: true or false"),
    ({"name": "a", "host": "h", "secret": "x"}, "unknown field(s) secret"),
])
def test_a_bad_trunk_is_refused_naming_the_field(changes: dict[str, object],
                                                 reason: str) -> None:
    with pytest.raises(trunks.TrunkRefused) as refused:
        trunks.build(changes)
    assert reason in refused.value.reason
    assert "two words" not in refused.value.reason  # a password is never said back


def test_a_trunk_built_from_a_form_keeps_its_password_unless_a_new_one_is_given() -> None:
    trunk = trunks.build({"name": "acme", "host": "sip.acme.example", "auth": "register",
                          "username": "4420", "password": "s3cret-pass",
                          "patterns": "_0[1-7]XXXXXXXX, _+44[1-7]XXXXXXXXX"})
    assert trunk.auth is TrunkAuth.REGISTER
    assert trunk.patterns == ("_0[1-7]XXXXXXXX", "_+44[1-7]XXXXXXXXX")
    assert "s3cret" not in repr(trunk)
    kept = trunks.build({"caller_id": "+442071234567", "password": ""}, trunk)
    assert kept.password == "s3cret-pass"
    # Recognised by address from now on: the account goes.
    plain = trunks.build({"auth": "ip"}, trunk)
    assert (plain.username, plain.password) == ("", "")
    assert trunks.changed_fields(trunk, plain) == {
        "auth": ["register", "ip"], "username": ["4420", ""], "password": "removed"}
    assert "s3cret-pass" not in str(trunks.view(trunk))


def test_a_trunks_own_check_names_its_key() -> None:
    with pytest.raises(ConfigValueError, match=r"trunks\[2\]\.host"):
        Trunk("a", "bad host").check("trunks[2]")
