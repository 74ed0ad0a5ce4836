from tests.ai_api_fixtures import api
from tests.dashboard_fixtures import browsers, dashboard, dashboard_options, served
from tests.store_fixtures import clock, engine, store, store_url
from tests.tools_fixtures import site

__all__ = [
    "api", "browsers", "clock", "dashboard", "dashboard_options", "engine", "served", "site",
    "store", "store_url",
]
