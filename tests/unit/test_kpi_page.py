"""The KPI page's side of the figures: the CSV's rows for the scripted day (on SQLite
and PostgreSQL), the range and filters read from a query, and the page and its CSV
served to supervisors and admins only."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from handoff.store import Store
from tests.dashboard_fixtures import Browsers, Served, signed_in
from tests.kpi_day import DAY, Day, script_day
from tests.unit.test_kpis import SITE, day, figures
from web.dashboard.kpis import BadFilter, figure_rows, parse_filter
from web.dashboard.typedefs import DASHBOARD

__all__ = ["day"]


async def test_the_csv_has_every_figure_of_the_page(store: Store, day: Day) -> None:
    kpis = await figures(store)
    chosen = {"from": "2026-03-10", "to": "2026-03-10", "assistant": "all",
              "queue": "all", "agent": "all"}
    assert figure_rows(kpis, chosen) == [
        ("from", "", "2026-03-10"), ("to", "", "2026-03-10"), ("assistant", "", "all"),
        ("queue", "", "all"), ("agent", "", "all"),
        ("calls", "", "10"),
        ("resolved by the AI alone", "", "4"),
        ("AI containment (%)", "", "40.0"),
        ("requests for a person", "", "6"),
        ("requests for a person", "Asked for a person", "4"),
        ("requests for a person", "The AI could not help", "1"),
        ("requests for a person", "Restricted topic", "1"),
        ("time to accept p50 (s)", "", "12"),
        ("time to accept p90 (s)", "", "30"),
        ("taken", "≤ 5 s after the offer", "1"), ("taken", "≤ 10 s after the offer", "1"),
        ("taken", "≤ 20 s after the offer", "2"), ("taken", "≤ 30 s after the offer", "1"),
        ("taken", "≤ 60 s after the offer", "0"), ("taken", "> 60 s after the offer", "0"),
        *[("requests for a person by hour", f"{hour:02d}:00", str(n)) for hour, n in
          enumerate([0] * 9 + [1, 2, 1, 0, 0, 1, 0, 1] + [0] * 7)],
        ("abandoned while waiting", "", "1"),
        ("abandoned while waiting (%)", "", "16.7"),
        ("service level (%)", "", "57.1"),
        ("service level (%)", "billing", "75.0"),
        ("answered", "billing", "4"),
        ("answered within 20 s", "billing", "3"),
        ("not answered", "billing", "0"),
        ("service level (%)", "general", "33.3"),
        ("answered", "general", "1"),
        ("answered within 30 s", "general", "1"),
        ("not answered", "general", "2"),
        ("handled", "Alice", "3"), ("talk (s)", "Alice", "660"),
        ("wrap-up (s)", "Alice", "150"), ("pause (s)", "Alice", "3600"),
        ("pause (s): Lunch", "Alice", "3600"),
        ("handled", "Bob", "1"), ("talk (s)", "Bob", "120"),
        ("wrap-up (s)", "Bob", "30"), ("pause (s)", "Bob", "2400"),
        ("pause (s): no reason", "Bob", "600"), ("pause (s): Lunch", "Bob", "600"),
        ("pause (s): Training", "Bob", "1200"),
        ("handled", "Carol", "0"), ("talk (s)", "Carol", "0"),
        ("wrap-up (s)", "Carol", "0"), ("pause (s)", "Carol", "0"),
    ]


def test_a_bad_range_or_filter_is_refused_saying_which() -> None:
    now = datetime(2026, 3, 10, 12, tzinfo=UTC)
    where = parse_filter({}, SITE, now)
    assert (where.since, where.until) == (datetime(2026, 3, 9, 23, tzinfo=UTC),
                                          datetime(2026, 3, 10, 23, tzinfo=UTC))
    for query, said in (({"from": "10/03/2026"}, "dates"),
                        ({"from": "2026-03-10", "to": "2026-03-09"}, "on or after"),
                        ({"from": "2024-01-01", "to": "2026-03-09"}, "at most"),
                        ({"queue": "billing"}, "queue is an id")):
        with pytest.raises(BadFilter, match=said):
            parse_filter(query, SITE, now)


async def test_supervisors_and_admins_get_the_page_and_its_csv_agents_get_403(
    served: Served, browsers: Browsers,
) -> None:
    zone = served.app[DASHBOARD].options.site.zone
    await script_day(served.store, zone, alice=served.people["alice"].id,
                     bob=served.people["bob"].id)
    query = f"?from={DAY}&to={DAY}"
    for login in ("sam", "ada"):
        viewer = await signed_in(browsers, login)
        async with viewer.http.get("/kpis" + query) as page:
            html = await page.text()
        assert page.status == 200
        assert "4 of 10 calls resolved by the AI alone" in html
        assert html.count("<svg") == 3
        async with viewer.http.get("/kpis.csv" + query + "&queue=999999") as answer:
            rows = list(csv.reader(io.StringIO(await answer.text())))
        assert answer.status == 200 and answer.content_type == "text/csv"
        assert answer.headers["Content-Disposition"] == (
            f'attachment; filename="switchboard-kpis-{DAY}-to-{DAY}.csv"')
        # A queue that does not exist is a filter that matches nothing, not an error.
        assert rows[:8] == [["figure", "subject", "value"], ["from", "", str(DAY)],
                            ["to", "", str(DAY)], ["assistant", "", "all"],
                            ["queue", "", "#999999"], ["agent", "", "all"],
                            ["calls", "", "10"], ["resolved by the AI alone", "", "4"]]
    agent = await signed_in(browsers, "alice")
    for path in ("/kpis", "/kpis.csv"):
        async with agent.http.get(path + query, allow_redirects=False) as refused:
            assert refused.status == 403, path


async def test_a_bad_filter_gets_the_page_saying_why_and_the_csv_a_400(
    served: Served, browsers: Browsers,
) -> None:
    viewer = await signed_in(browsers, "sam")
    async with viewer.http.get("/kpis?from=yesterday") as page:
        assert page.status == 400
        assert "from and to are dates (YYYY-MM-DD)" in await page.text()
    async with viewer.http.get("/kpis.csv?agent=bob") as answer:
        assert answer.status == 400
        assert (await answer.json())["reason"] == "agent is an id from its list"
