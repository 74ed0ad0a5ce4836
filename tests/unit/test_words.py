"""People's words: every code a page shows has a word in the one map, the audit log reads
as sentences, and times come in one format in the site's zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from handoff.agents import AgentRole, AgentState, Presence, PresenceEvent, agent_state
from handoff.calls import CallOutcome, CallState, Speaker
from handoff.handoffs import PRIORITIES, HandoffState
from handoff.store.models import AuditEvent
from handoff.supervision import Mode
from web.dashboard.audit import SENTENCES, Names, sentence
from web.dashboard.words import (
    ACTIONS,
    AGENT_STATES,
    CALL_STATES,
    HANDOFF_STATES,
    MODES,
    OUTCOMES,
    PRESENCES,
    REASONS,
    ROLES,
    SPEAKERS,
    URGENCIES,
    Site,
    why,
    word,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("table", "codes"), [
    (OUTCOMES, CallOutcome), (CALL_STATES, CallState), (HANDOFF_STATES, HandoffState),
    (AGENT_STATES, AgentState), (PRESENCES, Presence), (ROLES, AgentRole),
    (SPEAKERS, Speaker), (MODES, Mode), (URGENCIES, PRIORITIES),
])
def test_every_code_of_the_domain_has_its_word(table: dict[str, str], codes: object) -> None:
    assert {str(code) for code in codes} <= set(table)  # type: ignore[attr-defined]


def test_the_ai_control_apis_reasons_have_words() -> None:
    contract = (ROOT / "web" / "openapi" / "ai_control.json").read_text()
    enum = re.search(r'"reason":\s*\{[^}]*"enum":\s*\[([^\]]*)\]', contract)
    assert enum is not None
    assert set(re.findall(r'"([a-z_]+)"', enum[1])) <= set(REASONS)


def test_a_card_says_why_in_words_not_codes() -> None:
    assert why("caller_asked", "billing") == "Asked for a person · Billing"
    assert why("caller_asked", None) == "Asked for a person"
    assert why("restricted_topic", "lost_card") == "Restricted topic · Lost card"
    # A reason a newer engine sends is spelled out, never shown as an identifier.
    assert word(REASONS, "caller_is_angry") == "Caller is angry"


def test_an_agent_on_a_call_is_on_a_call_whatever_their_presence() -> None:
    for presence in Presence:
        assert agent_state(presence, on_call=True) is AgentState.ON_CALL
    assert agent_state(Presence.AVAILABLE, on_call=False) is AgentState.AVAILABLE
    assert agent_state(Presence.OFFLINE, on_call=False) is AgentState.OFF_DUTY


def test_times_have_one_format_in_the_sites_zone_summer_and_winter() -> None:
    paris = Site.of("Europe/Paris", "fr")
    assert paris.when(datetime(2026, 1, 12, 15, 44, 59, tzinfo=UTC)) == "2026-01-12 16:44"
    assert paris.when(datetime(2026, 7, 12, 15, 44, tzinfo=UTC)) == "2026-07-12 17:44"
    # SQLite gives UTC back without its zone; an ISO string is what payloads carry.
    assert paris.when(datetime(2026, 1, 12, 15, 44)) == "2026-01-12 16:44"
    assert paris.when("2026-01-12T15:44:00+00:00") == "2026-01-12 16:44"
    assert paris.when(None) == ""


def test_a_date_filter_means_the_sites_day() -> None:
    kolkata = Site.of("Asia/Kolkata", "us")
    since, until = kolkata.day_range("2026-01-12", "2026-01-12")
    assert since == datetime(2026, 1, 11, 18, 30, tzinfo=UTC)
    assert until == datetime(2026, 1, 12, 18, 30, tzinfo=UTC)
    assert kolkata.day_start(date(2026, 1, 12)) == since
    with pytest.raises(ValueError):
        kolkata.day_range("12/01/2026", None)


@pytest.mark.parametrize(("country", "number", "start", "patterns"), [
    ("fr", "+33123456789", "+33…", "_0[1-7]XXXXXXXX _+33[1-7]XXXXXXXX"),
    ("us", "+12025550123", "+1…", "_NXXNXXXXXX _1NXXNXXXXXX"),
    ("gb", "+442079460123", "+44…", "_0[1-3]XXXXXXXXX _+44[1-3]XXXXXXXXX"),
])
def test_phone_examples_follow_the_country(
    country: str, number: str, start: str, patterns: str,
) -> None:
    assert Site.of("UTC", country).placeholders() == {
        "number": number, "number_start": start, "patterns": patterns}


NAMES = Names({"ada": "Ada Lovelace", "sam": "Sam"}, {3: "Grace Hopper", 4: "Sam"})


def line(actor: str, action: str, subject: str, **detail: object) -> AuditEvent:
    return AuditEvent(id=1, at=datetime(2026, 1, 12, tzinfo=UTC), actor=actor, action=action,
                      subject=subject, detail=detail)


@pytest.mark.parametrize(("event", "said"), [
    (line("ada", "login", "agent:1", address="10.0.0.7"),
     "Ada Lovelace signed in from 10.0.0.7"),
    (line("mallory", "login_failed", "dashboard", address="203.0.113.9"),
     "A sign-in as mallory failed from 203.0.113.9"),
    (line("ada", "role_change", "agent:3", **{"from": "agent", "to": "supervisor"}),
     "Ada Lovelace made Grace Hopper supervisor (was agent)"),
    (line("sam", "duty_change", "agent:4", on_duty=True, presence="available"),
     "Sam went on duty"),
    (line("sam", "duty_change", "agent:4", on_duty=False, why="signed out"),
     "Sam went off duty (signed out)"),
    (line("controller", "presence_change", "agent:3", event=PresenceEvent.WRAP_UP_BEGINS,
          presence="wrap_up"), "Grace Hopper began wrap-up after a call"),
    (line("controller", "presence_change", "agent:3", event=PresenceEvent.PHONE_LOST,
          presence="away"), "Grace Hopper was set away: their phone stopped answering"),
    (line("sam", "whisper", "call:abc", caller="+33123456789", agent_id=3),
     "Sam: whispering on the call of +33123456789 with Grace Hopper"),
    (line("ada", "transfer", "call:abc", to_agent=4), "Ada Lovelace transferred a call to Sam"),
    (line("sip-guard", "sip_address_blocked", "198.51.100.4", failures=20),
     "198.51.100.4 was blocked after 20 failed SIP sign-ins"),
    (line("ada", "assistant_changed", "assistant:2",
          hours=[[], ["mon-fri 09:00-17:00"]], holidays=[[], ["2026-12-25"]]),
     "Ada Lovelace changed an assistant: hours, holidays"),
    # An action this version has no sentence for (a newer version wrote it): words still.
    (line("policy", "queue_overflowed", "queue:sales"), "Policy: queue overflowed (sales)"),
])
def test_the_audit_log_reads_as_sentences(event: AuditEvent, said: str) -> None:
    assert sentence(event, NAMES) == said


def test_every_audit_action_the_code_writes_has_a_sentence_and_a_filter_entry() -> None:
    written: set[str] = set()
    for source in [*ROOT.glob("handoff/**/*.py"), *ROOT.glob("web/**/*.py")]:
        text = source.read_text()
        written |= set(re.findall(r'audit\.record\(\s*[^,]+,\s*"([a-z_]+)"', text))
        written |= set(re.findall(r'_audit\(\s*dashboard,\s*viewer,\s*"([a-z_]+)"', text))
        written |= set(re.findall(r'_call_command\([^)]*?"([a-z_]+)",\s*"[a-z]+"\)', text, re.S))
    written |= {"duty_change", "presence_change", *(m.value for m in Mode)}
    assert len(written) > 25
    assert written <= set(ACTIONS), written - set(ACTIONS)
    assert written <= set(SENTENCES), written - set(SENTENCES)
