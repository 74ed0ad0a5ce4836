"""What a command on a live call can be refused with."""

from __future__ import annotations

from handoff.calls import CallState


class CallStateConflict(Exception):
    """The call is not in a state that allows the command (ended, with a person...)."""

    def __init__(self, call_id: str, state: CallState, what: str) -> None:
        super().__init__(f"call {call_id} is {state.value}: {what}")
        self.call_id = call_id
        self.state = state
        self.what = what


class OutOfHours(Exception):
    """The call's assistant is out of its business hours: nobody is there to take a card,
    so none is opened; the assistant's fallback applies instead."""

    def __init__(self, call_id: str, assistant: str) -> None:
        super().__init__(f"call {call_id}: assistant {assistant} is out of its business "
                         "hours; its fallback applies")
        self.call_id = call_id
        self.assistant = assistant


class AgentUnreachable(Exception):
    """The winner's phone could not be dialled; the accept was rolled back."""

    def __init__(self, agent_id: int, why: str) -> None:
        super().__init__(f"agent {agent_id} could not be reached: {why}")
        self.agent_id = agent_id
        self.why = why


class AgentNotAvailable(Exception):
    """A transfer names an agent who is off duty, away or on another call."""

    def __init__(self, agent_id: int) -> None:
        super().__init__(f"agent {agent_id} is not available")
        self.agent_id = agent_id


class QueueNotAvailable(Exception):
    """A transfer names a queue that is removed, or none of whose members can take a
    call now or soon (all off duty or away)."""

    def __init__(self, queue: str, why: str) -> None:
        super().__init__(f"queue {queue}: {why}")
        self.queue = queue
        self.why = why


class NodeUnanswered(Exception):
    """Another node of the cluster holds what the command is about (the call, the open
    line) and did not answer in time, or could not carry it out."""

    def __init__(self, node: str, why: str) -> None:
        super().__init__(f"node {node} {why}")
        self.node = node
        self.why = why
