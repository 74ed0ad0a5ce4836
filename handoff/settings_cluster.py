"""The cluster's settings: the ``[cluster]`` section, its ``[[cluster.nodes]]`` tables,
and the start-up checks that concern only them.

Apart from the single box's sections (handoff.settings_sections) because they are a
flow of their own, left at their defaults on a single box: the SIP edge in front of the
nodes, which of them this machine is, and what a node derives from that (the edge its
agents' phones and browsers register to, its peers on the node trunk, the dashboards'
origin at the edge).
"""

from __future__ import annotations

from dataclasses import dataclass

from pbx.asterisk_config import NodePeer
from pbx.config_values import ConfigValueError, check_name
from pbx.dashboards_edge import DashboardsSpec
from pbx.kamailio_config import EdgeNode, EdgeSpec


@dataclass(frozen=True)
class ClusterNodeSettings:
    """A ``[[cluster.nodes]]`` table: one Asterisk node behind the edge."""

    name: str = "node"
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    # Its dashboard, as the edge reaches it (cluster.edge_https_port): its server.host
    # and server.port; empty host: sip_host.
    dashboard_host: str = ""
    dashboard_port: int = 8080


@dataclass(frozen=True)
class ClusterSettings:
    # Kamailio, the SIP edge carriers send their calls to: it dispatches each call to a
    # node that answers OPTIONS (pbx.kamailio_config). No nodes: no cluster, one box.
    edge_address: str = "127.0.0.1"
    edge_port: int = 5060
    # Where Kamailio reads its rendered files and keeps its control socket.
    edge_config_dir: str = "/etc/kamailio"
    edge_run_dir: str = "/run/kamailio"
    # Seconds between OPTIONS to each node: about how long a dead node still gets calls.
    probe_interval_s: int = 2
    # Where calls may come from (your carriers' SIP servers: addresses or networks);
    # the edge refuses anyone else's.
    carriers: tuple[str, ...] = ()
    nodes: tuple[ClusterNodeSettings, ...] = ()
    # The node `switchboard run` is on this machine (one of nodes' names): its
    # controller holds the node's lease in the shared database and names its calls
    # with it; empty: not a node of a cluster.
    node: str = ""
    # Seconds a node's calls are kept after its controller last renewed its lease
    # (renewed every third of it); past that a surviving node ends them as pbx_lost.
    lease_s: int = 10
    # Browser softphones register to the edge too, over secure WebSocket on this TCP
    # port of edge_address (0: none there; a browser registers to its node's Asterisk).
    # edge_wss_host: the name browsers dial, which the certificate names (empty:
    # edge_address). The certificate and key (PEM): empty, the dashboard's
    # (server.tls_cert and tls_key). Read on the edge's machine only (`config edge`).
    edge_wss_port: int = 0
    edge_wss_host: str = ""
    edge_tls_cert: str = ""
    edge_tls_key: str = ""
    # Agents' dashboards at the edge too: HTTPS on this TCP port of edge_address (0:
    # none; each agent opens a node's dashboard), with the WebSocket's certificate,
    # HAProxy in front of every node's dashboard (pbx.dashboards_edge). Agents open
    # https://edge_wss_host:edge_https_port, which is every node's origin then.
    edge_https_port: int = 0

    @property
    def phones_edge(self) -> str:
        """On a node of a cluster, the edge ("host:port") agents' desk phones register
        to and the node reaches them through; empty on a single box."""
        if not self.node:
            return ""
        host = f"[{self.edge_address}]" if ":" in self.edge_address else self.edge_address
        return f"{host}:{self.edge_port}"

    @property
    def browsers_edge(self) -> str:
        """On a node of a cluster whose edge has a WebSocket, where agents' browsers
        register (wss://host:port); empty otherwise (they register to this node)."""
        if not self.node or not self.edge_wss_port:
            return ""
        host = self.edge_wss_host or self.edge_address
        return f"wss://{f'[{host}]' if ':' in host else host}:{self.edge_wss_port}"

    @property
    def dashboards_origin(self) -> str:
        """The origin agents open their desk at when the edge serves the dashboards
        (https://host:port, the host the certificate names); empty otherwise."""
        if not self.edge_https_port:
            return ""
        host = self.edge_wss_host or self.edge_address
        return f"https://{f'[{host}]' if ':' in host else host}:{self.edge_https_port}"

    def edge(self) -> EdgeSpec:
        return EdgeSpec(
            listen_address=self.edge_address, port=self.edge_port,
            nodes=tuple(EdgeNode(n.name, n.sip_host, n.sip_port) for n in self.nodes),
            carriers=self.carriers, config_dir=self.edge_config_dir,
            run_dir=self.edge_run_dir, probe_interval_s=self.probe_interval_s,
            lease_s=self.lease_s, wss_port=self.edge_wss_port, tls_cert=self.edge_tls_cert,
            tls_key=self.edge_tls_key,
        )

    def peers(self) -> tuple[NodePeer, ...]:
        """The other nodes, which this node's Asterisk has a trunk to (a handoff whose
        agent is on another node than its caller): none off a cluster."""
        if not self.node:
            return ()
        return tuple(NodePeer(n.name, n.sip_host, n.sip_port) for n in self.nodes
                     if n.name != self.node)


def _check_node(cluster: ClusterSettings) -> None:
    if not cluster.node:
        return
    check_name("cluster.node", cluster.node)
    names = [node.name for node in cluster.nodes]
    if names and cluster.node not in names:
        raise ConfigValueError("cluster.node", f"{cluster.node!r} is none of cluster.nodes' "
                               f"names ({', '.join(names)})")
    if not 3 <= cluster.lease_s <= 300:
        raise ConfigValueError("cluster.lease_s", f"{cluster.lease_s}: 3 to 300 seconds")


def _check_dashboards(cluster: ClusterSettings, spec: DashboardsSpec) -> None:
    spec.validate()
    taken = {cluster.edge_port: "edge_port", cluster.edge_wss_port: "edge_wss_port"}
    if spec.port in taken:
        # On the edge's one address: one TCP port cannot be two listeners.
        raise ConfigValueError("cluster.edge_https_port", f"{spec.port} is the edge's "
                               f"{taken[spec.port]} too")
