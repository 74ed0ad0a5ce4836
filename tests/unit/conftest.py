from tests.store_fixtures import clock, engine, store, store_url

__all__ = ["clock", "engine", "store", "store_url"]
