"""Waiting for what happens elsewhere: see web.bench.waiting (the benchmarks wait the same
way, and product code never imports tests)."""

from web.bench.waiting import until

__all__ = ["until"]
