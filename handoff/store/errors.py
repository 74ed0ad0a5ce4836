"""What the store refuses, in the controller's terms."""

from __future__ import annotations

from handoff.handoffs import HandoffState


class StoreError(Exception):
    pass


def lock_not_available(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL giving up on a row lock (its lock_timeout)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"


class NotFound(StoreError):
    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"no {kind} {key!r}")
        self.kind = kind
        self.key = key


class AlreadyTaken(StoreError):
    """Another agent won the accept: the loser's dashboard shows who took the caller."""

    def __init__(self, handoff_id: int, taken_by: int, state: HandoffState) -> None:
        super().__init__(f"handoff {handoff_id} already taken by agent {taken_by}")
        self.handoff_id = handoff_id
        self.taken_by = taken_by
        self.state = state


class NotOfferable(StoreError):
    """Nobody accepted it, and it cannot be accepted now (withdrawn, timed out, targeted
    at another agent)."""

    def __init__(self, handoff_id: int, state: HandoffState, detail: str = "") -> None:
        why = f": {detail}" if detail else ""
        super().__init__(f"handoff {handoff_id} is {state.value}, not offered to you{why}")
        self.handoff_id = handoff_id
        self.state = state


class OffDuty(StoreError):
    """The agent is off duty: an Accept from a tab that has not heard of it yet loses."""

    def __init__(self, handoff_id: int, agent_id: int) -> None:
        super().__init__(f"agent {agent_id} is off duty and cannot accept handoff {handoff_id}")
        self.handoff_id = handoff_id
        self.agent_id = agent_id


class AgentBusy(StoreError):
    """The agent is on a call, has one being set up, or is in wrap-up: a second call
    would ring their phone's second line while they talk to the first caller."""

    def __init__(self, handoff_id: int, agent_id: int, why: str) -> None:
        super().__init__(f"agent {agent_id} is {why} and cannot accept handoff {handoff_id}")
        self.handoff_id = handoff_id
        self.agent_id = agent_id
        self.why = why


class ConcurrentUpdate(StoreError):
    """The row kept changing under us; the event should be re-evaluated by its caller."""

    def __init__(self, kind: str, key: object) -> None:
        super().__init__(f"{kind} {key!r} changed concurrently too many times")
        self.kind = kind
        self.key = key


class LastAdmin(StoreError):
    """Disabling, removing or demoting the last enabled admin would leave nobody able to
    manage the installation (the CLI could still add one, but only from the server)."""

    def __init__(self, agent_id: int) -> None:
        super().__init__(f"agent {agent_id} is the last enabled admin: add another admin first")
        self.agent_id = agent_id


class Removed(StoreError):
    """The person (or assistant) was removed: the row is kept for the history, nothing
    else."""

    def __init__(self, key: int, kind: str = "agent") -> None:
        super().__init__(f"{kind} {key} was removed")
        self.agent_id = key
        self.kind = kind
