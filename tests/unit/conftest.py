from tests.ai_api_fixtures import api
from tests.dashboard_fixtures import browsers, served
from tests.store_fixtures import clock, engine, store, store_url

__all__ = ["api", "browsers", "clock", "engine", "served", "store", "store_url"]
