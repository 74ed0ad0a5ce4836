"""A number's DTMF menu: what an admin may write, and the controller reading keys on the
fake ARI (tests/integration/test_menus.py presses real keys on a real trunk)."""

from __future__ import annotations

import hashlib

import pytest

from handoff.assistants import EngineKind
from handoff.calls import CallOutcome
from handoff.live import LiveCall, Timing
from handoff.menus import BadMenu, Choice, Menu
from tests.unit.test_live_calls import Engine, Floor, _outcome_is, floor  # noqa: F401
from tests.waiting import until


def test_a_menu_is_kept_in_one_spelling_in_key_order() -> None:
    menu = Menu.parse("  Press 1 for sales,\n 2 for billing. ",
                      ["2 = queue:billing", "", "1=assistant:sales"])
    assert menu.prompt == "Press 1 for sales, 2 for billing."
    assert menu.lines() == ["1=assistant:sales", "2=queue:billing"]
    assert menu.choice("2") == Choice("queue", "billing") and menu.choice("3") is None
    assert Menu.parse(menu.prompt, menu.lines()) == menu
    assert not Menu.parse("Press 1", []).active  # no keys: no menu, whatever the prompt


@pytest.mark.parametrize(("prompt", "lines", "says"), [
    ("Press 1", ["1=sales"], "KEY=assistant:NAME"),
    ("Press 1", ["10=assistant:sales"], "KEY=assistant:NAME"),
    ("Press 1", ["1=agent:ada"], "KEY=assistant:NAME"),
    ("Press 1", ["1=assistant:sales", "1=queue:billing"], "given twice"),
    ("", ["1=assistant:sales"], "needs the prompt"),
    ("x" * 501, ["1=assistant:sales"], "500 characters"),
])
def test_a_menu_that_cannot_be_used_is_refused_saying_why(
    prompt: str, lines: list[str], says: str,
) -> None:
    with pytest.raises(BadMenu, match=says):
        Menu.parse(prompt, lines)


async def _with_menu(floor: Floor) -> None:  # noqa: F811
    async with floor.store.transaction() as tx:
        await tx.assistants.create(name="sales", numbers=["2100"],
                                   engine=EngineKind.AUDIOSOCKET, engine_address=Engine().address,
                                   control_token_hash=hashlib.sha256(b"s").hexdigest())
        receptionist = await tx.assistants.by_name("receptionist")
        assert receptionist is not None
        await tx.assistants.set_menu(receptionist.id,
                                     Menu.parse("Press 1 for sales.", ["1=assistant:sales"]))
    # Short waits: a menu that hears nothing says its prompt twice, then gives up.
    floor.live.control.menus.timing = Timing(menu_wait_s=0.2)


async def _in_menu(floor: Floor, caller: str) -> LiveCall:  # noqa: F811
    async def waiting() -> bool:
        return floor.live.control.menus.in_menu(caller)

    await until(waiting)
    return next(c for c in floor.live.control.calls.values() if c.caller == caller)


async def test_a_key_that_leads_nowhere_is_ignored_and_the_next_one_is_taken(
    floor: Floor,  # noqa: F811
) -> None:
    await _with_menu(floor)
    floor.live.control.menus.timing = Timing(menu_wait_s=5)
    caller = await floor.ari.caller_dials()
    live = await _in_menu(floor, caller)
    assert live.ai is None  # no AI while the caller chooses
    await floor.ari.press(caller, "9")
    await floor.ari.press(caller, "1")

    async def with_sales() -> bool:
        return live.ai is not None and live.assistant == "sales"

    await until(with_sales)
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_no_key_in_time_lets_the_menus_own_assistant_answer(
    floor: Floor,  # noqa: F811
) -> None:
    await _with_menu(floor)
    caller = await floor.ari.caller_dials()
    live = await _in_menu(floor, caller)

    async def with_own_ai() -> bool:
        return live.ai is not None

    await until(with_own_ai)
    assert live.assistant == "receptionist"
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.COMPLETED_BY_AI))


async def test_a_caller_who_hangs_up_in_the_menu_abandoned_the_call(
    floor: Floor,  # noqa: F811
) -> None:
    await _with_menu(floor)
    floor.live.control.menus.timing = Timing(menu_wait_s=5)
    caller = await floor.ari.caller_dials()
    live = await _in_menu(floor, caller)
    await floor.ari.hang_up_phone(caller)
    await until(lambda: _outcome_is(floor, live.call_id, CallOutcome.ABANDONED))
    assert live.ai is None
