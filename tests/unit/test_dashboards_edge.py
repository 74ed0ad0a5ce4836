"""The agents' dashboards behind the cluster's edge: HAProxy's file rendered from the
[cluster] settings and checked by HAProxy itself (`haproxy -c`, the real binary, no
network), the nodes' origin and trusted proxy, and `switchboard doctor`. The edge's
units: test_systemd_units; HAProxy in front of real nodes: test_cluster_nodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from handoff.settings import SettingsError, load
from pbx import dashboards_edge
from tests.certificates import Certificates, private_ca
from web import doctor
from web.cli import main
from web.doctor import Report

CLUSTER = """
data_dir = "{folder}/data"

[server]
host = "{host}"
{server}

[cluster]
node = "{node}"
edge_address = "192.0.2.1"
edge_port = 5070
edge_https_port = 443
edge_wss_host = "desk.example.com"
edge_config_dir = "{folder}/edge"
edge_run_dir = "{folder}/run"
carriers = ["198.51.100.7"]
{cluster}

[[cluster.nodes]]
name = "node-a"
sip_host = "192.0.2.11"
dashboard_port = 8443

[[cluster.nodes]]
name = "node-b"
sip_host = "192.0.2.12"
dashboard_host = "{node_b}"
"""


def settings_file(tmp_path: Path, *, node: str = "node-a", host: str = "192.0.2.11",
                  server: str = "", cluster: str = "", node_b: str = "10.0.0.12") -> Path:
    file = tmp_path / "switchboard.toml"
    file.write_text(CLUSTER.format(folder=tmp_path, node=node, host=host, server=server,
                                   cluster=cluster, node_b=node_b))
    return file


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return private_ca(tmp_path_factory.mktemp("ca"), "desk.example.com")


def with_certificate(certificates: Certificates) -> str:
    return f'edge_tls_cert = "{certificates.cert}"\nedge_tls_key = "{certificates.key}"'


def test_every_node_s_dashboard_is_a_health_checked_sticky_server_haproxy_accepts(
    tmp_path: Path, certificates: Certificates,
) -> None:
    settings = load(settings_file(tmp_path, cluster=with_certificate(certificates)),
                    environ={})
    spec = settings.dashboards()
    text = dashboards_edge.write_files(spec, tmp_path / "edge")
    dashboards_edge.check_syntax(tmp_path / "edge" / dashboards_edge.CONFIG_FILE)

    pem = f"{tmp_path}/edge/{dashboards_edge.PEM_FILE}"
    assert f"bind 192.0.2.1:443 ssl crt {pem} alpn http/1.1" in text
    # Each node's dashboard where its settings say, named by its cookie, checked on the
    # product's own health endpoint; a dead one's desks are closed and moved.
    assert "server node-a 192.0.2.11:8443 check cookie node-a" in text
    assert "server node-b 10.0.0.12:8080 check cookie node-b" in text
    assert "option httpchk GET /status" in text
    assert "on-marked-down shutdown-sessions" in text
    assert "cookie sb_node insert indirect nocache" in text and "option redispatch" in text
    # The agent's address and scheme for the nodes, and a WebSocket held all shift.
    assert "option forwardfor" in text and "X-Forwarded-Proto https" in text
    assert "timeout tunnel 1h" in text
    assert f"stats socket {tmp_path}/run/dashboards.sock" in text
    # One PEM, the certificate and its key, its owner's alone.
    written = (tmp_path / "edge" / dashboards_edge.PEM_FILE)
    assert written.read_bytes().startswith(certificates.cert.read_bytes())
    assert b"PRIVATE KEY" in written.read_bytes()
    assert written.stat().st_mode & 0o077 == 0


def test_a_node_behind_the_edge_has_the_edge_s_origin_and_trusts_its_address(
    tmp_path: Path,
) -> None:
    node = load(settings_file(tmp_path, server='trusted_proxies = ["10.9.0.0/16"]'),
                environ={})
    # Its WebSocket, forms and secure cookies are the edge's address's, where agents
    # open their desks; requests come from the edge, whose forwarded address is believed.
    assert node.origin == "https://desk.example.com:443"
    assert node.trusted_proxies == ("10.9.0.0/16", "192.0.2.1")
    # Listening on every address needs no public_origin then: the edge's is the origin.
    everywhere = load(settings_file(tmp_path, host="0.0.0.0"), environ={})
    assert everywhere.origin == "https://desk.example.com:443"
    # Not a node (the edge's own machine, a single box): its own listener.
    edge = load(settings_file(tmp_path, node=""), environ={})
    assert edge.origin == "http://192.0.2.11:8080" and edge.trusted_proxies == ()
    # An origin set by hand stays; `switchboard doctor` says it is not the edge's.
    elsewhere = load(settings_file(tmp_path, server='public_origin = "https://old.example.com"'),
                     environ={})
    assert elsewhere.origin == "https://old.example.com"


async def test_doctor_says_when_a_node_s_origin_is_not_the_edge_s(tmp_path: Path) -> None:
    report = Report()
    found = await doctor._dashboards(load(settings_file(
        tmp_path, server='public_origin = "https://old.example.com"'), environ={}), report)
    assert found == {"origin": "https://desk.example.com:443", "serving": None}
    [problem] = report.problems
    assert "edge serves the dashboards at https://desk.example.com:443" in problem
    assert "this node's origin is https://old.example.com" in problem
    report = Report()
    await doctor._dashboards(load(settings_file(tmp_path), environ={}), report)
    assert report.problems == []


@pytest.mark.parametrize(("cluster", "node_b", "named"), [
    ("edge_wss_port = 443", "10.0.0.12", "cluster.edge_https_port: 443 is the edge's "
     "edge_wss_port too"),
    ("", "bad host!", "cluster.nodes[1].dashboard_host"),
])
def test_a_wrong_dashboards_value_is_named_by_its_setting(
    tmp_path: Path, cluster: str, node_b: str, named: str,
) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        load(settings_file(tmp_path, cluster=cluster, node_b=node_b), environ={})


def test_edge_dashboards_refused_exits_2_and_starts_nothing(
    tmp_path: Path, certificates: Certificates, capsys: pytest.CaptureFixture[str],
) -> None:
    # No certificate for the edge's HTTPS (nor the dashboard's).
    assert main(["--config", str(settings_file(tmp_path, node="")), "edge",
                 "dashboards"]) == 2
    assert "cluster.edge_tls_cert" in capsys.readouterr().err
    assert not (tmp_path / "run" / dashboards_edge.STATS_SOCKET).exists()
    # HAProxy's own check refuses it (a node's dashboard at a name that does not
    # resolve): nothing started either.
    config = settings_file(tmp_path, node="", node_b="nowhere.invalid",
                           cluster=with_certificate(certificates))
    assert main(["--config", str(config), "edge", "dashboards"]) == 2
    err = capsys.readouterr().err
    assert "haproxy refuses" in err and "nowhere.invalid" in err
    assert not (tmp_path / "run" / dashboards_edge.STATS_SOCKET).exists()


def findings(capsys: pytest.CaptureFixture[str], config: Path) -> list[tuple[str, str]]:
    assert main(["--config", str(config), "config", "check", "--json"]) in (0, 1)
    return [(f["severity"], f["message"]) for f in json.loads(capsys.readouterr().out)[
        "findings"] if f["check"] == "cluster_dashboards"]


def test_config_check_has_haproxy_check_the_edge_s_file_and_a_node_s_origin(
    tmp_path: Path, certificates: Certificates, capsys: pytest.CaptureFixture[str],
) -> None:
    # The edge's machine: HAProxy accepts what `edge dashboards` would write.
    assert findings(capsys, settings_file(tmp_path, node="",
                                          cluster=with_certificate(certificates))) == []
    # Without a certificate for it, it would not start.
    [(severity, message)] = findings(capsys, settings_file(tmp_path, node=""))
    assert severity == "error" and "cluster.edge_tls_cert" in message
    # A node whose origin is set to another address than the edge's.
    [(severity, message)] = findings(capsys, settings_file(
        tmp_path, server='public_origin = "https://old.example.com"'))
    assert severity == "warning" and "this node's origin is https://old.example.com" in message
    assert findings(capsys, settings_file(tmp_path)) == []
