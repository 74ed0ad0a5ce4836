"""Which engine takes a call's AI part, and which assistant a new call goes to.

Both are read from the store for every call, never from a mapping built at start: an
assistant created, re-pointed at another engine, disabled or given new numbers while
Switchboard runs takes its next call that way, and the calls already up keep the AI
leg they have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import tzinfo

from handoff.assistants import EngineKind
from handoff.hours import Clock, HasHours, Hours, server_zone, utc_clock
from handoff.live.flow import AiEngine
from handoff.store import Store
from handoff.store.models import Assistant
from pbx.ari import AriError

log = logging.getLogger(__name__)

# routing.unknown_numbers: a call to a number no enabled assistant answers is refused.
REJECT = "reject"


@dataclass(frozen=True)
class ExternalEngine:
    """An engine of the installation's own: Asterisk connects to its AudioSocket
    address, and it learns of calls from the control API's events socket, so there is
    nothing to tell it here."""

    address: str

    def expect_call(self, call_id: str) -> None:
        return None


class NoEngine(AriError):
    """The call's assistant has no engine now (the built-in receptionist is not
    running): to the call flow, an AI leg that cannot be set up."""

    def __init__(self, assistant: str) -> None:
        super().__init__(0, "POST", "/channels/externalMedia",
                         f"assistant {assistant} has no engine")


class Engines:
    def __init__(self, store: Store, builtin: AiEngine | None,
                 unknown_numbers: str = REJECT, *, zone: tzinfo | None = None,
                 clock: Clock = utc_clock) -> None:
        self.store = store
        # The reference receptionist: one instance for every assistant that uses it.
        self.builtin = builtin
        self.unknown_numbers = unknown_numbers
        # Business hours are read in the site's zone (desk.time_zone, else the server's).
        self.zone = zone or server_zone()
        self.clock = clock

    def open_now(self, record: HasHours) -> bool:
        """Whether an assistant's or a queue's hours have it staffed at this moment."""
        return Hours.of(record).is_open(self.clock(), self.zone)

    def engine_of(self, assistant: Assistant) -> AiEngine | None:
        if assistant.engine is EngineKind.BUILTIN:
            return self.builtin
        return ExternalEngine(assistant.engine_address) if assistant.engine_address else None

    async def of(self, name: str) -> AiEngine | None:
        """The engine of a call already up: its assistant's engine now, even if the
        assistant was disabled since (the call goes on)."""
        async with self.store.transaction() as tx:
            assistant = await tx.assistants.by_name(name)
        return None if assistant is None else self.engine_of(assistant)

    async def required(self, name: str) -> AiEngine:
        engine = await self.of(name)
        if engine is None:
            raise NoEngine(name)
        return engine

    async def answering(self, name: str | None, number: str) -> Assistant | None:
        """The assistant a new call to ``number`` goes to: the one the dialplan named if
        it is still enabled, else routing.unknown_numbers' default assistant; None: the
        call is refused. Logs why a call did not reach the assistant it dialled."""
        async with self.store.transaction() as tx:
            assistant = await tx.assistants.answering(name) if name else None
            if assistant is not None:
                return assistant
            default = (None if self.unknown_numbers == REJECT
                       else await tx.assistants.answering(self.unknown_numbers))
        why = f"assistant {name} is disabled or removed" if name else "no assistant answers it"
        if default is not None:
            log.info("call to %s (%s): routing.unknown_numbers sends it to %s",
                     number, why, default.name)
        elif self.unknown_numbers != REJECT:
            log.warning("call to %s refused (%s, and the default assistant %r is not "
                        "enabled)", number, why, self.unknown_numbers)
        else:
            log.warning("call to %s refused (%s; routing.unknown_numbers = reject)",
                        number, why)
        return default
