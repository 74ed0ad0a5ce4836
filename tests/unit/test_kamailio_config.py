"""Kamailio's files for the cluster's SIP edge, rendered from the [cluster] settings and
checked by Kamailio itself (`kamailio -c`: the real binary, no network)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest

from handoff.agents import EndpointKind
from handoff.settings import SettingsError, load
from handoff.store import Store, create_store_engine, upgrade_to_head
from pbx import edge, kamailio_config
from pbx.edge import NodeState, parse_dispatcher_list
from pbx.kamailio_config import EdgeNode, EdgePhone, EdgeSpec
from tests.certificates import private_ca
from web.cli import main
from web.doctor import Report, render_text

CLUSTER = """
data_dir = "{folder}-data"

[cluster]
edge_address = "192.0.2.1"
edge_port = 5070
edge_config_dir = "{folder}"
edge_run_dir = "{folder}/run"
probe_interval_s = 1
carriers = ["198.51.100.7", "203.0.113.0/24"]

[[cluster.nodes]]
name = "node-a"
sip_host = "192.0.2.11"

[[cluster.nodes]]
name = "node-b"
sip_host = "192.0.2.12"
sip_port = 5062
"""


def settings_file(tmp_path: Path, text: str = CLUSTER) -> Path:
    file = tmp_path / "switchboard.toml"
    file.write_text(text.replace("{folder}", str(tmp_path / "edge")))
    return file


def test_the_edge_is_rendered_from_the_cluster_settings(tmp_path: Path) -> None:
    settings = load(settings_file(tmp_path), environ={})
    files = kamailio_config.render(settings.cluster.edge())

    config, nodes = files["kamailio.cfg"], files["dispatcher.list"]
    assert "listen=udp:192.0.2.1:5070\nlisten=tcp:192.0.2.1:5070\n" in config
    assert f'modparam("dispatcher", "list_file", "{tmp_path}/edge/dispatcher.list")' in config
    assert 'modparam("dispatcher", "ds_ping_interval", 1)' in config
    assert f'"binrpc", "unix:{tmp_path}/edge/run/kamailio_ctl"' in config
    assert 'ds_select_dst("1", "4")' in config  # round robin over the answering nodes
    assert ('if (!(is_in_subnet("$si", "198.51.100.7/32") || '
            'is_in_subnet("$si", "203.0.113.0/24"))) {') in config
    assert [line for line in nodes.splitlines() if not line.startswith("#")] == [
        "1 sip:192.0.2.11:5060 0 0 duid=node-a",
        "1 sip:192.0.2.12:5062 0 0 duid=node-b",
    ]


def test_the_rendered_edge_is_accepted_by_kamailio(tmp_path: Path) -> None:
    spec = EdgeSpec("127.0.0.1", 5070, (EdgeNode("node-a", "127.0.0.1", 5071),
                                        EdgeNode("node-b", "127.0.0.1", 5072)),
                    carriers=("127.0.0.1", "192.0.2.0/24"), config_dir=str(tmp_path),
                    run_dir=str(tmp_path))
    kamailio_config.write_files(spec, tmp_path)
    kamailio_config.check_syntax(tmp_path / "kamailio.cfg")

    # The check is Kamailio's, not a formality: a function no loaded module has is
    # refused, with Kamailio's words.
    broken = tmp_path / "broken.cfg"
    broken.write_text((tmp_path / "kamailio.cfg").read_text()
                      .replace("ds_select_dst(", "ds_select_dest("))
    with pytest.raises(ValueError, match=r"kamailio refuses .*find command ds_select_dest"):
        kamailio_config.check_syntax(broken)


@pytest.mark.parametrize(("text", "message"), [
    ("[cluster]\nedge_adress = '127.0.0.1'\n", r"cluster\.edge_adress: unknown setting"),
    ("[[cluster.nodes]]\nname = 'a'\nsip_hots = 'x'\n",
     r"cluster\.nodes\[0\]\.sip_hots: unknown setting"),
    ("[cluster]\nedge_address = 'edge.example.com'\n[[cluster.nodes]]\nname = 'a'\n",
     r"cluster\.edge_address: 'edge.example.com' is not an IP address"),
    ("[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n[[cluster.nodes]]\nname = 'a'\n"
     "sip_port = 5062\n", r"cluster\.nodes\[1\]\.name: 'a' is used twice"),
    ("[[cluster.nodes]]\nname = 'a'\n",
     r"cluster\.nodes\[0\]\.sip_port: 127\.0\.0\.1:5060 is the edge's own listener"),
    ("[[cluster.nodes]]\nname = 'a b'\nsip_port = 5061\n", r"cluster\.nodes\[0\]\.name"),
    ("[cluster]\nedge_config_dir = 'etc'\n[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n",
     r"cluster\.edge_config_dir: 'etc': an absolute path"),
    ("[cluster]\nprobe_interval_s = 0\n[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n",
     r"cluster\.probe_interval_s: 0: 1 to 60 seconds"),
    ("[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n", r"cluster\.carriers: none"),
    ("[cluster]\ncarriers = ['198.51.100.7', 'carrier.example.com']\n[[cluster.nodes]]\n"
     "name = 'a'\nsip_port = 5061\n",
     r"cluster\.carriers\[1\]: 'carrier.example.com' is not an address or a network"),
    # Browsers' WebSocket at the edge: a certificate (its own or the dashboard's), a port
    # of its own, a name browsers can dial.
    ("[cluster]\nedge_wss_port = 5060\nedge_tls_cert = '/c.pem'\nedge_tls_key = '/c.key'\n"
     "[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n",
     r"cluster\.edge_wss_port: 5060 is the edge's SIP port"),
    ("[cluster]\nedge_wss_port = 70000\n[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n",
     r"cluster\.edge_wss_port: 70000 is not a port number"),
    ("[cluster]\nedge_tls_cert = '/c.pem'\n", r"cluster\.edge_tls_key: edge_tls_cert and "
     "edge_tls_key go together"),
    ("[cluster]\nedge_wss_port = 5070\nedge_tls_cert = 'c.pem'\nedge_tls_key = '/c.key'\n"
     "[[cluster.nodes]]\nname = 'a'\nsip_port = 5061\n",
     r"cluster\.edge_tls_cert: 'c.pem': an absolute path"),
    ("[cluster]\nedge_wss_host = 'edge example'\n", r"cluster\.edge_wss_host: 'edge example'"),
])
def test_wrong_cluster_settings_stop_start_up_by_name(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load(settings_file(tmp_path, text), environ={})


def test_nodes_come_from_the_environment_too(tmp_path: Path) -> None:
    settings = load(settings_file(tmp_path), environ={
        "SWITCHBOARD_CLUSTER__NODES__2__NAME": "node-c",
        "SWITCHBOARD_CLUSTER__NODES__2__SIP_HOST": "192.0.2.13",
    })
    assert [n.name for n in settings.cluster.edge().nodes] == ["node-a", "node-b", "node-c"]


def test_config_edge_writes_checked_files_and_refuses_without_nodes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    asyncio.run(_agents(f"sqlite:///{tmp_path}/edge-data/switchboard.db"))
    assert main(["--config", str(settings_file(tmp_path)), "config", "edge",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(1 phones' accounts)" in printed and "kamailio -c accepts it" in printed
    assert sorted(p.name for p in out.iterdir()) == ["dispatcher.list", "kamailio.cfg"]
    # The enabled desk phone's account, not the browser's (it registers to a node).
    config = (out / "kamailio.cfg").read_text()
    assert '$sht(phones=>desk-bea) = "bea-sip-secret";' in config
    assert "web-ada" not in config

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert main(["--config", str(empty), "config", "edge", "--out", str(tmp_path / "no")]) == 2
    assert "cluster.nodes: no nodes" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()


def test_browsers_register_to_the_edge_over_wss_with_the_dashboards_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certificates = private_ca(tmp_path / "ca", "edge.example.com")
    text = CLUSTER.replace("[cluster]\n", "[cluster]\nedge_wss_port = 8443\n"
                           "edge_wss_host = 'edge.example.com'\nnode = 'node-a'\n") + (
        f"\n[server]\ntls_cert = '{certificates.cert}'\ntls_key = '{certificates.key}'\n")
    settings = load(settings_file(tmp_path, text), environ={})
    # Where a node's desk tells the browser to register: the edge, by the name its
    # certificate names.
    assert settings.cluster.browsers_edge == "wss://edge.example.com:8443"
    asyncio.run(_agents(f"sqlite:///{tmp_path}/edge-data/switchboard.db"))
    out = tmp_path / "out"
    assert main(["--config", str(settings_file(tmp_path, text)), "config", "edge",
                 "--out", str(out)]) == 0
    assert "kamailio -c accepts it" in capsys.readouterr().out
    # Both phones' accounts: the browser registers here too. The certificate and key are
    # copied beside kamailio.cfg, for Kamailio's own account to read.
    config = (out / "kamailio.cfg").read_text()
    assert '$sht(phones=>web-ada) = "ada-sip-secret";' in config
    assert "listen=tls:192.0.2.1:8443\n" in config
    assert f'modparam("tls", "private_key", "{tmp_path}/edge/edge-tls.key")' in config
    assert (out / "edge-tls.key").read_bytes() == certificates.key.read_bytes()
    assert (out / "edge-tls.key").stat().st_mode & 0o077 == 0
    # A key that is not the certificate's stops `config edge` by the setting's name.
    other = private_ca(tmp_path / "other", "edge.example.com")
    wrong = text.replace("[cluster]\n", f"[cluster]\nedge_tls_cert = '{certificates.cert}'\n"
                         f"edge_tls_key = '{other.key}'\n")
    assert main(["--config", str(settings_file(tmp_path, wrong)), "config", "edge",
                 "--out", str(tmp_path / "wrong")]) == 2
    assert "cluster.edge_tls_key: " in capsys.readouterr().err
    # None at all: a node needs none (its browsers only dial the edge), the edge does.
    bare = CLUSTER.replace("[cluster]\n", "[cluster]\nedge_wss_port = 8443\n")
    assert load(settings_file(tmp_path, bare), environ={}).cluster.edge_wss_port == 8443
    assert main(["--config", str(settings_file(tmp_path, bare)), "config", "edge",
                 "--out", str(tmp_path / "bare")]) == 2
    assert re.search(r"cluster\.edge_tls_cert: browsers' WebSocket at the edge .* needs a "
                     "certificate", capsys.readouterr().err)


async def _agents(url: str) -> None:
    """Bea on a desk phone, Ada on a browser, in the installation's database."""
    Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True)
    engine = create_store_engine(url)
    try:
        await upgrade_to_head(engine)
        async with Store(engine).transaction() as tx:
            for login, user, kind in (("bea", "desk-bea", EndpointKind.DESKPHONE),
                                      ("ada", "web-ada", EndpointKind.WEBRTC)):
                await tx.agents.create(login=login, display_name=login.title(),
                                       sip_user=user, sip_password=f"{login}-sip-secret",
                                       endpoint_kind=kind, password_hash="x")
    finally:
        await engine.dispose()


def test_the_edges_answer_about_its_nodes_is_read() -> None:
    # kamcmd dispatcher.list, as Kamailio 5.6 answers it (attributes trimmed).
    answer = """{
	NRSETS: 1
	RECORDS: {
		SET: {
			ID: 1
			TARGETS: {
				DEST: {
					URI: sip:127.0.0.1:5072
					FLAGS: IP
					PRIORITY: 0
					ATTRS: {
						BODY: duid=node-b
						DUID: node-b
					}
				}
				DEST: {
					URI: sip:127.0.0.1:5071
					FLAGS: AP
					PRIORITY: 0
					ATTRS: {
						BODY: duid=node-a
						DUID: node-a
					}
				}
			}
		}
	}
}"""
    assert parse_dispatcher_list(answer) == [
        NodeState("sip:127.0.0.1:5072", "node-b", active=False),
        NodeState("sip:127.0.0.1:5071", "node-a", active=True),
    ]


def test_doctor_says_per_node_whether_it_answers_and_takes_calls() -> None:
    report = Report(asterisk={"state": "running", "version": "22.1.0"},
                    database={"kind": "postgresql", "url": "postgresql://…"},
                    dashboard={"state": "running"}, browser={"chromium": None}, tools={})
    report.cluster = {
        "edge": {"state": "running", "version": "kamailio 5.6.3 (x86_64/linux)",
                 "listen": "192.0.2.1:5060", "registered_phones": ["desk-bea", "desk-cid"]},
        "nodes": [
            {"name": "node-a", "sip": "sip:192.0.2.11:5060", "reachable": True,
             "sip_status": 200, "version": "22.1.0", "in_dispatch": True,
             "lease": {"state": "held", "expires_in_s": 8.2}},
            {"name": "node-b", "sip": "sip:192.0.2.12:5060", "reachable": False,
             "sip_status": None, "version": None, "in_dispatch": False,
             "lease": {"state": "lost", "taken_over_by": "node-a"}},
        ],
    }
    lines = render_text(report).splitlines()
    assert "Edge       running: kamailio 5.6.3 (x86_64/linux) on 192.0.2.1:5060" in lines
    assert ("Phones     2 phones (desk and browser) registered to the edge: desk-bea, "
            "desk-cid") in lines
    assert ("Node       node-a sip:192.0.2.11:5060: answers SIP (200), in the dispatch, "
            "version 22.1.0, lease held") in lines
    assert ("Node       node-b sip:192.0.2.12:5060: silent, out of the dispatch, "
            "version unknown, lease lost") in lines


def test_config_check_has_kamailio_check_the_edge_and_says_a_cluster_needs_postgresql(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    assert main(["--config", str(settings_file(tmp_path)), "config", "check", "--json"]) == 0
    # One finding only: the warning; Kamailio accepted the edge's files.
    [finding] = [f for f in json.loads(capsys.readouterr().out)["findings"]
                 if f["check"] == "cluster_edge"]
    assert finding["severity"] == "warning"
    assert "the store is SQLite" in finding["message"]


def test_desk_phones_register_to_the_edge_with_their_agents_sip_passwords(
    tmp_path: Path,
) -> None:
    spec = EdgeSpec("192.0.2.1", 5060, (EdgeNode("node-a", "192.0.2.11"),),
                    carriers=("198.51.100.7",), config_dir=str(tmp_path), realm="example",
                    phones=(EdgePhone("desk-bea", "bea-sip-secret"),), block_after=5,
                    never_block=("203.0.113.9",))
    files = kamailio_config.write_files(spec, tmp_path)
    config = files["kamailio.cfg"]
    assert '$sht(phones=>desk-bea) = "bea-sip-secret";' in config
    assert 'auth_challenge("example", "0")' in config
    # Only the nodes' requests to an agent are looked up in the registrations.
    assert 'if (ds_is_from_list("1") && uri == myself && $rU != $null) {' in config
    # A phone's call with a node that went silent is hung up after the node's lease.
    assert 'dlg_set_timeout_by_profile("node", "$var(node)", "10");' in config
    # A password guesser is counted and refused, but not from a network never blocked.
    assert 'if ($au != $null && !is_in_subnet("$si", "203.0.113.9/32")) {' in config
    assert "if ($sht(failed=>$si) >= 5) {" in config
    # The passwords are for the edge's account only (the owner here).
    assert (tmp_path / "kamailio.cfg").stat().st_mode & 0o077 == 0
    kamailio_config.check_syntax(tmp_path / "kamailio.cfg")
    for phone, key in ((EdgePhone("desk bea", "bea-sip-secret"), "phones[0].sip_user"),
                       (EdgePhone("desk-bea", 'sec"ret-quote'), "phones[0].sip_password")):
        with pytest.raises(ValueError, match=re.escape(key)):
            kamailio_config.render(EdgeSpec("192.0.2.1", 5060, spec.nodes,
                                            carriers=spec.carriers, phones=(phone,)))


def test_edge_run_says_why_it_cannot_start_kamailio_and_starts_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    edge_run = ["--config", str(settings_file(tmp_path)), "edge", "run"]
    # Files Kamailio refuses (a module it does not have): its own check says so, by
    # Kamailio's words, and it is not started (a configuration error: not retried).
    rendered = kamailio_config.render
    monkeypatch.setattr(kamailio_config, "render", lambda spec: {
        name: text.replace('loadmodule "tm.so"', 'loadmodule "tm.so"\nloadmodule "nosuch.so"')
        for name, text in rendered(spec).items()})
    assert main(edge_run) == 2
    err = capsys.readouterr().err
    assert "kamailio refuses" in err and "nosuch" in err
    assert not (tmp_path / "edge" / "run" / "kamailio_ctl").exists()

    # A run folder that cannot be made (here: under a file) is named, not a traceback.
    (tmp_path / "a-file").write_text("")
    assert main([*edge_run[:2], "--set", f"cluster.edge_run_dir={tmp_path}/a-file/run",
                 *edge_run[2:]]) == 1
    err = capsys.readouterr().err
    assert "the edge's files or run folder: [Errno 20] Not a directory" in err

    def missing() -> str:
        raise kamailio_config.KamailioUnavailable(
            "kamailio is not installed (Debian: apt install kamailio)")

    monkeypatch.setattr(edge, "find_binary", missing)
    assert main(edge_run) == 3
    assert "kamailio is not installed" in capsys.readouterr().err
