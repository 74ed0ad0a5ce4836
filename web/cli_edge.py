"""`switchboard config edge`, `switchboard edge run` and `switchboard edge dashboards`:
the cluster's edge on its own machine (Kamailio for SIP, HAProxy for the dashboards)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from handoff.settings import Settings, SettingsError
from handoff.store import Store
from pbx import dashboards_edge, kamailio_config
from pbx.edge import take_phones
from web import edge_run
from web.telephony import edge_phones

SettingsOf = Callable[[argparse.Namespace], Settings]
OnStore = Callable[[Settings, Callable[[Store], Awaitable[int]]], Coroutine[Any, Any, int]]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                config_sub: argparse._SubParsersAction[argparse.ArgumentParser], *,
                settings: SettingsOf, on_store: OnStore) -> None:
    def config_edge(args: argparse.Namespace) -> int:
        return cmd_config_edge(args, settings(args), on_store)

    def run(args: argparse.Namespace) -> int:
        return edge_run.main(_edge_spec(settings(args), on_store))

    def dashboards(args: argparse.Namespace) -> int:
        return edge_run.dashboards_main(_dashboards_spec(settings(args)))

    edge_cmd = config_sub.add_parser(
        "edge", help="write Kamailio's files for the cluster's SIP edge ([cluster]), and "
        "HAProxy's when the edge serves the dashboards (edge_https_port)")
    edge_cmd.add_argument("--out", help="folder to write them to (default: "
                          "cluster.edge_config_dir)")
    edge_cmd.set_defaults(func=config_edge)
    edge = sub.add_parser("edge", help="the cluster's edge (Kamailio, HAProxy), on its "
                          "machine")
    edge_sub = edge.add_subparsers(dest="edge_command", required=True)
    edge_sub.add_parser(
        "run", help="render the edge's files and run Kamailio in the foreground, as its "
        "own account, until SIGTERM").set_defaults(func=run)
    edge_sub.add_parser(
        "dashboards", help="render HAProxy's file and run it in the foreground in front of "
        "every node's dashboard (cluster.edge_https_port) until SIGTERM").set_defaults(
            func=dashboards)


def cmd_config_edge(args: argparse.Namespace, settings: Settings, on_store: OnStore) -> int:
    """Write Kamailio's files for the SIP edge in front of the cluster's nodes (with the
    phones' accounts from the database: desk phones, and browsers when it has their
    WebSocket), ask Kamailio whether it would load them when it is installed here, and
    give a running edge here the accounts as they are. With edge_https_port, HAProxy's
    file too, checked by HAProxy when it is installed here."""
    spec = _edge_spec(settings, on_store)
    out = Path(args.out or spec.config_dir)
    kamailio_config.write_files(spec, out)
    print(f"wrote {kamailio_config.CONFIG_FILE} and {kamailio_config.LIST_FILE} to {out} "
          f"({len(spec.phones)} phones' accounts)")
    if settings.cluster.edge_https_port:
        dashboards_edge.write_files(settings.dashboards(), out)
        print(f"wrote {dashboards_edge.CONFIG_FILE} and {dashboards_edge.PEM_FILE} to {out}")
    try:
        kamailio_config.check_syntax(out / kamailio_config.CONFIG_FILE)
        print("kamailio -c accepts it")
        if settings.cluster.edge_https_port:
            dashboards_edge.check_syntax(out / dashboards_edge.CONFIG_FILE)
            print("haproxy -c accepts it")
    except (kamailio_config.KamailioUnavailable, dashboards_edge.HaproxyUnavailable) as exc:
        print(f"not checked: {exc}")
        return 0
    except ValueError as exc:
        print(f"switchboard: {exc}", file=sys.stderr)
        return 1
    if Path(spec.control_socket).exists():
        try:
            taken, removed = asyncio.run(take_phones(spec))
        except kamailio_config.KamailioUnavailable as exc:
            print(f"the running edge did not take the accounts: {exc}")
        else:
            print(f"the running edge took {taken} phones' accounts ({removed} removed)")
    return 0


def _edge_spec(settings: Settings, on_store: OnStore) -> kamailio_config.EdgeSpec:
    """The edge the settings describe, with the phones' accounts from the database (the
    browsers' too when it has their WebSocket)."""
    _need_nodes(settings)
    phones: list[kamailio_config.EdgePhone] = []

    async def from_store(store: Store) -> int:
        phones.extend(await edge_phones(store, browsers=bool(settings.cluster.edge_wss_port)))
        return 0

    asyncio.run(on_store(settings, from_store))
    return settings.edge(tuple(phones))


def _dashboards_spec(settings: Settings) -> dashboards_edge.DashboardsSpec:
    _need_nodes(settings)
    if not settings.cluster.edge_https_port:
        raise SettingsError("cluster.edge_https_port: 0, so the edge serves no dashboards "
                            "(set the HTTPS port agents open their desk at)")
    return settings.dashboards()


def _need_nodes(settings: Settings) -> None:
    if not settings.cluster.nodes:
        raise SettingsError("cluster.nodes: no nodes, so no edge to render "
                            "(add [[cluster.nodes]] tables)")
