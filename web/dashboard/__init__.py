"""The agent dashboard: sign-in and roles, the agent desk, and its live WebSocket.

The composition root calls :func:`setup_dashboard` once with the store, the domain's
EventHub and the call controller (anything with ``accept(handoff_id, agent_id)``).
"""

from web.dashboard.access import Access, RoutePolicy, Rule, Shape, own_auth, public, signed_in
from web.dashboard.passwords import Passwords
from web.dashboard.routes import ROUTES, route_policy, setup_dashboard
from web.dashboard.typedefs import DASHBOARD, ROUTE_POLICY, Commands, Dashboard, DashboardOptions

__all__ = [
    "DASHBOARD",
    "ROUTES",
    "ROUTE_POLICY",
    "Access",
    "Commands",
    "Dashboard",
    "DashboardOptions",
    "Passwords",
    "RoutePolicy",
    "Rule",
    "Shape",
    "own_auth",
    "public",
    "route_policy",
    "setup_dashboard",
    "signed_in",
]
