"""`switchboard assistant`: add (the token printed once), edit, token, disable, enable,
remove, list, each audited as "cli"; bad input refused with its reason, nothing written."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from handoff.assistants import EngineKind, FallbackKind, HandoffLevel
from handoff.store import Store, create_store_engine
from handoff.store.models import Assistant
from web.ai_api import hash_control_token
from web.cli import main


def _read(url: str) -> tuple[dict[str, Assistant], dict[str, list[str]], list[tuple[str, str]]]:
    """Every assistant by name, their numbers by name, and the audit lines (actor, action)."""

    async def read() -> tuple[dict[str, Assistant], dict[str, list[str]],
                              list[tuple[str, str]]]:
        engine = create_store_engine(url)
        try:
            async with Store(engine).transaction() as tx:
                everyone = {a.name: a for a in await tx.assistants.all()}
                numbers = await tx.assistants.numbers()
                audit = [(e.actor, e.action) for e in await tx.audit.recent(100)]
            return everyone, {n: numbers.get(a.id, []) for n, a in everyone.items()}, audit
        finally:
            await engine.dispose()

    return asyncio.run(read())


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # A real installation's database: no demo seeded.
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SWITCHBOARD_DEMO__ENABLED", "false")
    return f"sqlite:///{tmp_path / 'switchboard.db'}"


def _token(out: str) -> str:
    return next(line for line in out.splitlines() if "token" in line).rsplit(" ", 1)[1]


def test_an_assistant_is_added_with_its_numbers_engine_and_a_token_shown_once(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--number", "_21XX",
                 "--engine", "127.0.0.1:9092", "--handoff-level", "quick",
                 "--fallback-number", "+33 1 23 45 67 89"]) == 0
    token = _token(capsys.readouterr().out)
    assistants, numbers, audit = _read(url)
    sales = assistants["sales"]
    assert numbers["sales"] == ["2100", "_21XX"]
    assert (sales.engine, sales.engine_address) == (EngineKind.AUDIOSOCKET, "127.0.0.1:9092")
    assert sales.control_token_hash == hash_control_token(token)
    assert sales.handoff_level is HandoffLevel.QUICK
    assert (sales.fallback_kind, sales.fallback_number) == (FallbackKind.NUMBER, "+33123456789")
    assert ("cli", "assistant_created") in audit
    assert main(["assistant", "add", "desk", "--engine", "builtin"]) == 0
    assert "held by the built-in receptionist" in capsys.readouterr().out
    assert main(["assistant", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "sales\t2100 _21XX\t127.0.0.1:9092\tenabled\tquick\t30s\tnumber\t+33123456789\t-",
        "desk\t-\tbuiltin\tenabled\tbalanced\t30s\tai_callback\t-\t-",
    ]


def test_a_voicemail_fallback_is_chosen_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin",
                 "--fallback", "voicemail"]) == 0
    assert _read(url)[0]["sales"].fallback_kind is FallbackKind.VOICEMAIL
    # A number fallback still needs its number, and nothing changes without it.
    assert main(["assistant", "edit", "sales", "--fallback", "number"]) == 2
    assert "a number fallback needs fallback_number" in capsys.readouterr().err
    assert _read(url)[0]["sales"].fallback_kind is FallbackKind.VOICEMAIL
    assert main(["assistant", "edit", "sales", "--fallback-number", "0123456789"]) == 0
    assert _read(url)[0]["sales"].fallback_kind is FallbackKind.NUMBER
    assert main(["assistant", "edit", "sales", "--fallback", "voicemail"]) == 0
    capsys.readouterr()
    assert main(["assistant", "list"]) == 0
    assert "\tvoicemail\t0123456789\t" in capsys.readouterr().out


def test_restricted_topics_are_set_replaced_and_cleared_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin",
                 "--topic", "billing=billing dispute, refund",
                 "--topic", "plainte=réclamation"]) == 0
    out = capsys.readouterr().out
    assert "restricted topic billing: billing dispute, refund" in out
    sales = _read(url)[0]["sales"]
    assert sales.restricted_topics == [
        {"name": "billing", "phrases": ["billing dispute", "refund"]},
        {"name": "plainte", "phrases": ["réclamation"]}]
    # The topics given replace the list, as --number does the numbers.
    assert main(["assistant", "edit", "sales", "--topic", "medical=doctor"]) == 0
    assert _read(url)[0]["sales"].restricted_topics == [
        {"name": "medical", "phrases": ["doctor"]}]
    assert main(["assistant", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("\tmedical")
    # Bad input says why and changes nothing.
    for bad, why in ((["--topic", "Billing Dispute=bill"], "a topic's name is"),
                     (["--topic", "billing"], "a topic is NAME=phrase,phrase"),
                     (["--topic", "billing=,"], "needs 1 to 50 phrases"),
                     (["--topic", "billing=!!"], "is not a phrase"),
                     (["--topic", "a=x", "--topic", "a=y"], "given twice")):
        assert main(["assistant", "edit", "sales", *bad]) == 2
        assert why in capsys.readouterr().err
    assert _read(url)[0]["sales"].restricted_topics == [
        {"name": "medical", "phrases": ["doctor"]}]
    assert main(["assistant", "edit", "sales", "--no-topics"]) == 0
    assistants, _, audit = _read(url)
    assert assistants["sales"].restricted_topics == []
    assert audit.count(("cli", "assistant_changed")) == 2


def test_edit_token_disable_enable_remove(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100",
                 "--engine", "127.0.0.1:9092"]) == 0
    first = _token(capsys.readouterr().out)
    assert main(["assistant", "edit", "sales", "--number", "2101",
                 "--engine", "127.0.0.1:9093", "--accept-timeout", "20"]) == 0
    assert "token" not in capsys.readouterr().out  # same kind of engine: same token
    assert main(["assistant", "token", "sales"]) == 0
    second = _token(capsys.readouterr().out)
    assistants, numbers, _ = _read(url)
    assert numbers["sales"] == ["2101"] and assistants["sales"].accept_timeout_s == 20
    assert assistants["sales"].engine_address == "127.0.0.1:9093"
    assert assistants["sales"].control_token_hash == hash_control_token(second) != (
        hash_control_token(first))
    assert main(["assistant", "disable", "sales"]) == 0
    assert not _read(url)[0]["sales"].enabled
    assert main(["assistant", "enable", "sales"]) == 0
    assert main(["assistant", "remove", "sales"]) == 0
    capsys.readouterr()
    assistants, numbers, audit = _read(url)
    assert assistants["sales"].removed_at is not None and numbers["sales"] == []
    assert [a for _, a in audit if a.startswith("assistant_")] == [
        "assistant_removed", "assistant_enabled", "assistant_disabled",
        "assistant_token_rotated", "assistant_changed", "assistant_created"]
    assert all(actor == "cli" for actor, _ in audit)
    assert main(["assistant", "list"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["assistant", "token", "sales"]) == 2
    assert "no assistant 'sales'" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "reason"), [
    (["add", "sales", "--number", "_X.", "--engine", "builtin"], "not a strict number pattern"),
    (["add", "sales", "--engine", "nowhere"], "host:port"),
    (["add", "bad name", "--engine", "builtin"], "starts with a letter"),
    (["add", "sales", "--engine", "builtin", "--accept-timeout", "1"], "5 to 600"),
    (["add", "taken", "--engine", "builtin"], "already an assistant 'taken'"),
    (["add", "sales", "--number", "2100", "--engine", "builtin"], "already answered by"),
    (["token", "taken"], "built-in receptionist"),
    (["edit", "nobody", "--number", "2200"], "no assistant 'nobody'"),
])
def test_bad_input_is_refused_with_its_reason_and_writes_nothing(
    url: str, capsys: pytest.CaptureFixture[str], argv: list[str], reason: str,
) -> None:
    assert main(["assistant", "add", "taken", "--number", "2100", "--engine", "builtin"]) == 0
    capsys.readouterr()
    assert main(["assistant", *argv]) == 2
    assert reason in capsys.readouterr().err
    assistants, numbers, _ = _read(url)
    assert list(assistants) == ["taken"] and numbers["taken"] == ["2100"]


def test_business_hours_are_set_replaced_and_cleared_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin",
                 "--hours", "Mon-Fri 9:00-17:00", "--holiday", "2026-12-25"]) == 0
    assert "open mon-fri 09:00-17:00; closed 2026-12-25" in capsys.readouterr().out
    sales = _read(url)[0]["sales"]
    assert (sales.hours, sales.holidays) == (["mon-fri 09:00-17:00"], ["2026-12-25"])
    # The spans given replace the list; the holidays not given stay.
    assert main(["assistant", "edit", "sales", "--hours", "sat 10:00-12:00"]) == 0
    sales = _read(url)[0]["sales"]
    assert (sales.hours, sales.holidays) == (["sat 10:00-12:00"], ["2026-12-25"])
    # Bad input says why and changes nothing.
    for bad, why in ((["--hours", "fri 22:00-06:00"], "two spans"),
                     (["--holiday", "25/12/2026"], "YYYY-MM-DD"),
                     (["--hours", "mon 09:00-10:00", "--always-open"], "not both")):
        assert main(["assistant", "edit", "sales", *bad]) == 2
        assert why in capsys.readouterr().err
    assert _read(url)[0]["sales"].hours == ["sat 10:00-12:00"]
    assert main(["assistant", "edit", "sales", "--always-open"]) == 0
    assistants, _, audit = _read(url)
    assert (assistants["sales"].hours, assistants["sales"].holidays) == ([], [])
    assert audit.count(("cli", "assistant_changed")) == 2


def test_a_dtmf_menu_is_set_checked_and_removed_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin"]) == 0
    assert main(["assistant", "add", "front", "--number", "2000", "--engine", "builtin",
                 "--menu-prompt", "Press 1 for sales.", "--menu", "1=assistant:sales"]) == 0
    assert 'menu "Press 1 for sales.": 1=assistant:sales' in capsys.readouterr().out
    assert _read(url)[0]["front"].menu == {"prompt": "Press 1 for sales.",
                                           "options": ["1=assistant:sales"]}
    # Bad input says why and changes nothing.
    for bad, why in ((["--menu", "1=sales"], "KEY=assistant:NAME"),
                     (["--menu", "2=queue:billing"], "there is no queue 'billing'"),
                     (["--menu", "1=assistant:front"], "leads back to this menu"),
                     (["--menu", "1=assistant:sales", "--no-menu"], "not both")):
        assert main(["assistant", "edit", "front", *bad]) == 2
        assert why in capsys.readouterr().err
    assert _read(url)[0]["front"].menu["options"] == ["1=assistant:sales"]
    assert main(["assistant", "edit", "front", "--no-menu"]) == 0
    assistants, _, audit = _read(url)
    assert assistants["front"].menu == {}
    assert audit.count(("cli", "assistant_changed")) == 1


def test_announcements_are_set_replaced_and_silenced_from_the_command_line(
    url: str, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["assistant", "add", "sales", "--number", "2100", "--engine", "builtin",
                 "--announce", "handover=You are now speaking with a person."]) == 0
    assert 'at handover: "You are now speaking with a person."' in capsys.readouterr().out
    assert main(["assistant", "edit", "sales", "--announce", "transfer=One moment."]) == 0
    assert _read(url)[0]["sales"].announcements == {"transfer": "One moment."}
    for bad, why in ((["--announce", "hold=music"], "one of handover, takeover, transfer"),
                     (["--announce", "handover"], "MOMENT=words"),
                     (["--announce", "handover=x", "--no-announcements"], "not both")):
        assert main(["assistant", "edit", "sales", *bad]) == 2
        assert why in capsys.readouterr().err
    assert main(["assistant", "edit", "sales", "--no-announcements"]) == 0
    assistants, _, audit = _read(url)
    assert assistants["sales"].announcements == {}
    assert audit.count(("cli", "assistant_changed")) == 2
