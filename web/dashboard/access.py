"""Who may call which route: one table, enforced by one middleware, closed by default.

Every route of the application must be declared here with the access it needs; a
request that matches an undeclared route is refused (403) and logged, so a route added
later without a line in the policy fails safe instead of being open to anyone.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from aiohttp import hdrs
from aiohttp.web_urldispatcher import AbstractRoute

from handoff.agents import AgentRole

log = logging.getLogger(__name__)

# Methods that change state: each needs the session's CSRF token and a same-origin request.
MUTATING_METHODS = frozenset({hdrs.METH_POST, hdrs.METH_PUT, hdrs.METH_PATCH, hdrs.METH_DELETE})

# Higher rank includes the lower ones: a supervisor can do what an agent can.
ROLE_RANK = {AgentRole.AGENT: 0, AgentRole.SUPERVISOR: 1, AgentRole.ADMIN: 2}


class Access(enum.Enum):
    # Anyone: the login page and form, the static assets the login page needs.
    PUBLIC = "public"
    # A signed-in dashboard session holding at least the rule's role.
    SESSION = "session"
    # The handler authenticates the caller itself (AI control API bearer tokens,
    # /metrics behind its own token); the dashboard's session is not consulted.
    OWN_AUTH = "own_auth"


class Shape(enum.Enum):
    """How a refusal is answered: browsers navigating get pages, scripts get JSON."""

    PAGE = "page"
    API = "api"
    WEBSOCKET = "websocket"


@dataclass(frozen=True, slots=True)
class Rule:
    access: Access
    role: AgentRole | None = None
    shape: Shape = Shape.API

    def __post_init__(self) -> None:
        if (self.access is Access.SESSION) != (self.role is not None):
            raise ValueError("a session rule names the least role it needs; others name none")

    def allows(self, role: AgentRole) -> bool:
        return self.role is None or ROLE_RANK[role] >= ROLE_RANK[self.role]


def public(shape: Shape = Shape.PAGE) -> Rule:
    return Rule(Access.PUBLIC, shape=shape)


def signed_in(role: AgentRole, shape: Shape = Shape.API) -> Rule:
    return Rule(Access.SESSION, role, shape)


def own_auth() -> Rule:
    return Rule(Access.OWN_AUTH)


def _lookup_method(method: str) -> str:
    # aiohttp answers HEAD on every GET route (allow_head): same rule as the GET.
    return hdrs.METH_GET if method == hdrs.METH_HEAD else method


class RoutePolicy:
    """(method, path pattern) -> rule, plus path prefixes for mounted sub-applications."""

    def __init__(self) -> None:
        self._rules: dict[tuple[str, str], Rule] = {}
        self._prefixes: dict[str, Rule] = {}

    def declare(self, method: str, path: str, rule: Rule) -> None:
        key = (method.upper(), path)
        if key in self._rules and self._rules[key] != rule:
            raise ValueError(f"{method} {path} is already declared with another rule")
        self._rules[key] = rule

    def declare_prefix(self, prefix: str, rule: Rule) -> None:
        """For a sub-application mounted at `prefix` that authenticates its own callers."""
        if not prefix.startswith("/") or prefix == "/":
            raise ValueError(f"a sub-application prefix looks like /api/ai, not {prefix!r}")
        self._prefixes[prefix.rstrip("/")] = rule

    def rule_for(self, method: str, path_pattern: str) -> Rule | None:
        rule = self._rules.get((_lookup_method(method), path_pattern))
        if rule is not None:
            return rule
        for prefix, prefix_rule in self._prefixes.items():
            if path_pattern == prefix or path_pattern.startswith(prefix + "/"):
                return prefix_rule
        return None

    def rule_for_route(self, route: AbstractRoute) -> Rule | None:
        resource = route.resource
        if resource is None:
            return None
        return self.rule_for(route.method, resource.canonical)

    def rules(self) -> Iterator[tuple[str, str, Rule]]:
        for (method, path), rule in sorted(self._rules.items(), key=lambda item: item[0][1]):
            yield method, path, rule
