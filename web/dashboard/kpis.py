"""The KPI page and its CSV export, for supervisors and admins (the route table's rule;
an agent gets 403): the key figures (handoff.kpis) over a range of the site's days, per
assistant, queue and agent, with their charts drawn as SVG by the server.

The page and the CSV take the same query and read the same figures
(KpisRepo.figures); the CSV's rows are the page's numbers, seconds and percentages
written the same way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from handoff.kpis import KpiFilter, Kpis
from handoff.store.transitions import utc_now
from web.dashboard.charts import bar_chart, column_chart
from web.dashboard.guard import json_error
from web.dashboard.typedefs import DASHBOARD
from web.dashboard.views import render
from web.dashboard.words import REASONS, Site, word

# A range longer than this is refused: a year of calls is what a page can still count
# in one request without holding the database for long.
MAX_DAYS = 366


class BadFilter(ValueError):
    pass


def parse_filter(query: Mapping[str, str], site: Site, now: datetime) -> KpiFilter:
    """The range (the site's days, both included; today when not given) and the
    filters from a query string; BadFilter says which one is wrong."""
    today = site.local(now).date().isoformat()
    first, last = query.get("from") or today, query.get("to") or today
    try:
        since, until = site.day_range(first, last)
    except ValueError:
        raise BadFilter("from and to are dates (YYYY-MM-DD)") from None
    assert since is not None and until is not None
    if until <= since:
        raise BadFilter("to is a day on or after from")
    if date.fromisoformat(last) - date.fromisoformat(first) >= timedelta(days=MAX_DAYS):
        raise BadFilter(f"a range is at most {MAX_DAYS} days")
    ids: dict[str, int | None] = {}
    for name in ("assistant", "queue", "agent"):
        value = query.get(name, "")
        if value and not value.isdigit():
            raise BadFilter(f"{name} is an id from its list")
        ids[name] = int(value) if value else None
    return KpiFilter(since, until, assistant_id=ids["assistant"], queue_id=ids["queue"],
                     agent_id=ids["agent"])


def percent(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def clock(value: float) -> str:
    """A duration as people read it on a board: 1:05:00, 4:10."""
    whole = round(value)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def figure_rows(kpis: Kpis, chosen: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(figure, subject, value): the CSV, one figure a line; `chosen` names the range
    and the filters as the page shows them."""
    rows = [(name, "", value) for name, value in chosen.items()]
    rows += [
        ("calls", "", str(kpis.calls)),
        ("resolved by the AI alone", "", str(kpis.contained)),
        ("AI containment (%)", "", percent(kpis.containment)),
        ("requests for a person", "", str(kpis.requests)),
    ]
    rows += [("requests for a person", word(REASONS, reason), str(n))
             for reason, n in kpis.reasons]
    rows += [
        ("time to accept p50 (s)", "", seconds(kpis.accept_p50_s)),
        ("time to accept p90 (s)", "", seconds(kpis.accept_p90_s)),
    ]
    # The charts' figures too: the picture's bars are numbers a spreadsheet can redraw.
    rows += [("taken", f"{label} after the offer", str(n))
             for label, n in kpis.accept_distribution()]
    rows += [("requests for a person by hour", f"{hour:02d}:00", str(n))
             for hour, n in enumerate(kpis.requests_per_hour)]
    rows += [
        ("abandoned while waiting", "", str(kpis.abandoned)),
        ("abandoned while waiting (%)", "", percent(kpis.abandoned_share)),
        ("service level (%)", "", percent(kpis.service_level)),
    ]
    for queue in kpis.queues:
        rows += [("service level (%)", queue.name, percent(queue.service_level)),
                 ("answered", queue.name, str(queue.answered)),
                 (f"answered within {queue.threshold_s} s", queue.name, str(queue.within)),
                 ("not answered", queue.name, str(queue.not_answered))]
    for agent in kpis.agents:
        rows += [("handled", agent.name, str(agent.handled)),
                 ("talk (s)", agent.name, seconds(agent.talk_s)),
                 ("wrap-up (s)", agent.name, seconds(agent.wrap_up_s)),
                 ("pause (s)", agent.name, seconds(agent.pause_s))]
        rows += [(f"pause (s): {reason or 'no reason'}", agent.name, seconds(spent))
                 for reason, spent in sorted(agent.pauses_s.items())]
    return rows


def _cell(value: str) -> str:
    """A name typed by an admin ("=HYPERLINK(...)") is text in a spreadsheet, never a
    formula it would run."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value


async def _figures(request: web.Request) -> tuple[KpiFilter | None, Kpis | None,
                                                  dict[str, Any], str]:
    """The filter, the figures, the lists the filters choose from, and what was wrong
    with the query ("" when nothing)."""
    dashboard = request.app[DASHBOARD]
    site = dashboard.options.site
    async with dashboard.store.transaction() as tx:
        lists = {
            "assistants": [(a.id, a.name) for a in await tx.assistants.all()],
            "queues": [(q.id, q.name) for q in await tx.queues.listed()],
            "agents": [(a.id, a.display_name) for a in await tx.agents.all()
                       if a.takes_calls],
        }
        try:
            where = parse_filter(request.query, site, utc_now())
        except BadFilter as exc:
            return None, None, lists, str(exc)
        return where, await tx.kpis.figures(where, site.zone), lists, ""


def _chosen(lists: Mapping[str, list[tuple[int, str]]], where: KpiFilter,
            site: Site) -> dict[str, str]:
    def name(kind: str, chosen: int | None) -> str:
        return "all" if chosen is None else dict(lists[kind]).get(chosen, f"#{chosen}")

    return {
        "from": site.local(where.since).date().isoformat(),
        "to": (site.local(where.until).date() - timedelta(days=1)).isoformat(),
        "assistant": name("assistants", where.assistant_id),
        "queue": name("queues", where.queue_id),
        "agent": name("agents", where.agent_id),
    }


async def kpis_page(request: web.Request) -> web.Response:
    site = request.app[DASHBOARD].options.site
    where, kpis, lists, error = await _figures(request)
    context: dict[str, Any] = {"error": error, "query": dict(request.query), **lists}
    if where is None or kpis is None:
        return render(request, "kpis.html", status=400, kpis=None, **context)
    chosen = _chosen(lists, where, site)
    charts = {
        "per_hour": column_chart(
            [(f"{hour:02d}", n) for hour, n in enumerate(kpis.requests_per_hour)],
            title="Requests for a person by hour of the day", label_every=3),
        "accept": column_chart(kpis.accept_distribution(), title="Time to accept"),
        "reasons": bar_chart([(word(REASONS, r), n) for r, n in kpis.reasons],
                             title="Why a person was asked for"),
    }
    return render(request, "kpis.html", kpis=kpis, chosen=chosen, charts=charts,
                  percent=percent, seconds=seconds, clock=clock,
                  reasons=[(word(REASONS, r), n) for r, n in kpis.reasons], **context)


async def kpis_csv(request: web.Request) -> web.StreamResponse:
    site = request.app[DASHBOARD].options.site
    where, kpis, lists, error = await _figures(request)
    if where is None or kpis is None:
        return json_error(400, "bad_filter", error)
    chosen = _chosen(lists, where, site)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("figure", "subject", "value"))
    writer.writerows([tuple(_cell(value) for value in row)
                      for row in figure_rows(kpis, chosen)])
    filename = f"switchboard-kpis-{chosen['from']}-to-{chosen['to']}.csv"
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
