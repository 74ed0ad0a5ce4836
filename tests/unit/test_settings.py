"""Settings layers and the errors a wrong value produces."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from handoff.settings import SettingsError, _build, apply_layers, load


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchboard.toml"
    path.write_text(text)
    return path


def test_defaults_bind_loopback_and_use_sqlite() -> None:
    settings = load(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.asterisk.bind_address == "127.0.0.1"
    assert settings.database_url.startswith("sqlite:///")


def test_file_then_environment_then_command_line(tmp_path: Path) -> None:
    file = write(tmp_path, "[server]\nport = 9000\nhost = '127.0.0.2'\n")
    settings = load(
        file,
        environ={"SWITCHBOARD_SERVER__PORT": "9001", "SWITCHBOARD_SERVER__HOST": "127.0.0.3"},
        overrides={"server.port": "9002"},
    )
    assert settings.server.port == 9002
    assert settings.server.host == "127.0.0.3"


def test_short_environment_names_for_asterisk() -> None:
    settings = load(
        environ={"SWITCHBOARD_ASTERISK": "/usr/sbin/asterisk", "SWITCHBOARD_CACHE": "/c"}
    )
    assert settings.asterisk.source == "/usr/sbin/asterisk"
    assert settings.asterisk.cache_dir == "/c"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    file = write(tmp_path, "[asterisk]\nsip_prot = 5070\n")
    with pytest.raises(SettingsError, match=r"asterisk\.sip_prot: unknown setting"):
        load(file, environ={})


def test_unknown_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^serverr: unknown setting"):
        load(write(tmp_path, "[serverr]\nport = 1\n"), environ={})


def test_unknown_environment_key_is_named() -> None:
    with pytest.raises(SettingsError, match=r"server\.prot: unknown setting"):
        load(environ={"SWITCHBOARD_SERVER__PROT": "1"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[asterisk]\nsip_port = 'abc'\n", r"asterisk\.sip_port: 'abc' is not an integer"),
        ("[asterisk]\nsip_port = 70000\n", r"asterisk\.sip_port: 70000 is not a port"),
        ("[server]\nport = 0\n", r"server\.port: 0 is not a port"),
        ("[demo]\nenabled = 'maybe'\n", r"demo\.enabled: 'maybe' is not true or false"),
        ("[asterisk]\ntls_cert = '/c.pem'\n", r"asterisk\.tls_key"),
        ("[[trunks]]\nname = 'bad name'\n", r"trunks\[0\]\.name"),
        ("[[trunks]]\nname = 'itsp'\nport = 'x'\n", r"trunks\[0\]\.port: 'x' is not an integer"),
        ("[[trunks]]\nauth = 'token'\n", r"trunks\[0\]\.auth: 'token': ip or register"),
        ("[[trunks]]\nauth = 'register'\nusername = 'u'\n",
         r"trunks\[0\]\.username: a registering trunk needs a username and a password"),
        ("[[trunks]]\npatterns = ['_X!']\n", r"trunks\[0\]\.patterns\[0\]"),
        ("[[trunks]]\npatterns = '_X.'\n", r"trunks\[0\]\.patterns: expected a list"),
        ("[[trunks]]\ncaller_id = '+15550100'\nfrom_user = 'acme'\n",
         r"trunks\[0\]\.from_user: from_user is the older name of caller_id"),
        ("[[trunks]]\n[[trunks]]\n", r"trunks\[1\]\.name: 'carrier' is used twice"),
        ("[database]\nurl = 'mysql://x'\n", r"database\.url: 'mysql'"),
        ("log_level = 'loud'\n", r"log_level: 'loud'"),
        ("[desk]\nwrap_up_s = -1\n", r"desk\.wrap_up_s: -1: 0 to 600 seconds"),
        ("[desk]\ntime_zone = 'Mars/Olympus'\n",
         r"desk\.time_zone: 'Mars/Olympus' is not a time zone"),
        ("[recordings]\nkeep_days = -5\n", r"recordings\.keep_days: -5: 0 \(keep them all\)"),
        ("[desk]\nwrap_up = 10\n", r"desk\.wrap_up"),
        ("[routing]\nunknown_numbers = 'no body'\n",
         r"routing\.unknown_numbers: 'no body': 'reject' or"),
        ("[cluster]\nnode = 'node-c'\ncarriers = ['192.0.2.9']\n[[cluster.nodes]]\n"
         "name = 'node-a'\nsip_port = 5070\n",
         r"cluster\.node: 'node-c' is none of cluster\.nodes' names"),
        ("[cluster]\nnode = 'node-a'\nlease_s = 1\n", r"cluster\.lease_s: 1: 3 to 300"),
        ("server = 3\n", r"server: expected a table"),
        ("[server\n", r"switchboard\.toml"),
    ],
)
def test_wrong_values_stop_start_up_with_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load(write(tmp_path, text), environ={})


def test_missing_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load(tmp_path / "nope.toml", environ={})


def test_trunks_are_read_as_a_list(tmp_path: Path) -> None:
    file = write(tmp_path, "[[trunks]]\nname = 'itsp'\nhost = '192.0.2.10'\nport = 5080\n")
    settings = load(file, environ={})
    assert settings.trunks[0].name == "itsp" and settings.trunks[0].port == 5080


def test_a_registering_trunk_with_its_rules_comes_from_the_file(tmp_path: Path) -> None:
    file = write(tmp_path, "[[trunks]]\nname = 'acme'\nhost = 'sip.acme.example'\n"
                 "auth = 'register'\nusername = '4420'\npassword = 's3cret-pass'\n"
                 "caller_id = '+442071234567'\ncodecs = ['alaw']\n"
                 "patterns = ['_0[1-7]XXXXXXXXX']\nallow_international = true\n")
    trunk = load(file, environ={}).trunks[0].trunk()
    assert (trunk.name, trunk.auth.value, trunk.caller_id, trunk.codecs, trunk.source) == (
        "acme", "register", "+442071234567", ("alaw",), "settings")
    assert trunk.allow_international and not trunk.allow_premium
    assert "s3cret" not in repr(load(file, environ={}))


def test_the_call_limit_defaults_to_what_the_machine_can_carry() -> None:
    settings = load(environ={})
    assert settings.asterisk.max_calls == 0
    assert settings.asterisk.call_limit == 50 * (os.cpu_count() or 1)
    assert load(environ={"SWITCHBOARD_ASTERISK__MAX_CALLS": "120"}).asterisk.call_limit == 120


@pytest.mark.parametrize("section", ["asterisk", "demo"])
def test_an_rtp_range_narrower_than_the_call_limit_stops_start_up_by_name(section: str) -> None:
    # 100 ports were the old default: 16 calls at 6 ports each, not the 200 asked for.
    with pytest.raises(SettingsError, match=rf"^{section}\.rtp_end: RTP ports 20000-20099 "
                       r"carry 16 calls .* asterisk\.max_calls is 200: end the range at 21199"):
        load(environ={"SWITCHBOARD_ASTERISK__MAX_CALLS": "200",
                      f"SWITCHBOARD_{section.upper()}__RTP_START": "20000",
                      f"SWITCHBOARD_{section.upper()}__RTP_END": "20099"})


def test_the_demo_carriers_rtp_range_is_settable_and_kept_apart_from_the_pbxs() -> None:
    env = {"SWITCHBOARD_ASTERISK__MAX_CALLS": "100",
           "SWITCHBOARD_ASTERISK__RTP_START": "20000", "SWITCHBOARD_ASTERISK__RTP_END": "20599",
           "SWITCHBOARD_DEMO__RTP_START": "30000", "SWITCHBOARD_DEMO__RTP_END": "30599"}
    demo = load(environ=env).demo
    assert (demo.rtp_start, demo.rtp_end) == (30000, 30599)
    with pytest.raises(SettingsError, match=r"^demo\.rtp_start: .* overlap"):
        load(environ={**env, "SWITCHBOARD_DEMO__RTP_START": "20400",
                      "SWITCHBOARD_DEMO__RTP_END": "20999"})


def test_the_controllers_call_limit_stays_within_what_asterisk_lets_in() -> None:
    cores = os.cpu_count() or 1
    assert load(environ={}).active_call_limit == 20 * cores
    # Asterisk's ceiling lowered: the default follows it...
    assert load(environ={"SWITCHBOARD_ASTERISK__MAX_CALLS": "10"}).active_call_limit == 10
    assert load(environ={"SWITCHBOARD_ROUTING__MAX_ACTIVE_CALLS": "7"}).active_call_limit == 7
    # ...and a limit set above it is named: Asterisk would refuse first, unseen.
    with pytest.raises(SettingsError, match=r"^routing\.max_active_calls: 11 calls is more "
                       r"than asterisk\.max_calls lets in \(10\)"):
        load(environ={"SWITCHBOARD_ASTERISK__MAX_CALLS": "10",
                      "SWITCHBOARD_ROUTING__MAX_ACTIVE_CALLS": "11"})


def test_a_call_limit_out_of_range_is_named() -> None:
    with pytest.raises(SettingsError, match=r"^asterisk\.max_calls: 999999"):
        load(environ={"SWITCHBOARD_ASTERISK__MAX_CALLS": "999999"})


def test_the_sip_realm_names_no_software_unless_the_site_names_its_own() -> None:
    assert load(environ={}).asterisk.sip_realm == "pbx"
    site = load(environ={"SWITCHBOARD_ASTERISK__SIP_REALM": "sip.example.com"})
    assert site.asterisk.sip_realm == "sip.example.com"
    with pytest.raises(SettingsError, match=r"^asterisk\.sip_realm: "):
        load(environ={"SWITCHBOARD_ASTERISK__SIP_REALM": "my site"})


def test_trunks_come_from_the_environment_as_numbered_tables() -> None:
    # Listed out of order, as an environment may be: entry 10 still comes last.
    env = {f"SWITCHBOARD_TRUNKS__{i}__NAME": f"itsp{i}" for i in (10, 2, 0, 1, 9, 3, 4, 5, 6, 7, 8)}
    env["SWITCHBOARD_TRUNKS__1__HOST"] = "192.0.2.11"
    env["SWITCHBOARD_TRUNKS__1__PORT"] = "5080"
    trunks = load(environ=env).trunks
    assert [t.name for t in trunks] == [f"itsp{i}" for i in range(11)]
    assert (trunks[1].host, trunks[1].port) == ("192.0.2.11", 5080)


def test_the_environment_changes_the_files_trunk_and_adds_the_next(tmp_path: Path) -> None:
    file = write(tmp_path, "[[trunks]]\nname = 'itsp'\nhost = '192.0.2.10'\nport = 5080\n")
    trunks = load(file, environ={"SWITCHBOARD_TRUNKS__0__HOST": "192.0.2.20",
                                 "SWITCHBOARD_TRUNKS__1__NAME": "backup"},
                  overrides={"trunks.1.host": "192.0.2.30"}).trunks
    assert [(t.name, t.host, t.port) for t in trunks] == [
        ("itsp", "192.0.2.20", 5080), ("backup", "192.0.2.30", 5060)]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SWITCHBOARD_TRUNKS__1__HOST", "192.0.2.1",
         r"^trunks\[1\]\.host: number the entries from 0 without gaps"),
        ("SWITCHBOARD_TRUNKS__HOST", "192.0.2.1", r"^trunks: a list of tables: give the "
         r"entry's index first \(SWITCHBOARD_TRUNKS__0__NAME"),
        ("SWITCHBOARD_TRUNKS", '[{"name": "itsp"}]', r"^trunks: a list of tables: set each"),
        ("SWITCHBOARD_TRUNKS__0__HOTS", "192.0.2.1", r"^trunks\[0\]\.hots: unknown setting"),
        ("SWITCHBOARD_TRUNKS__0__PORT", "x", r"^trunks\[0\]\.port: 'x' is not an integer"),
        ("SWITCHBOARD_TRUNKS__0__NAME", "bad name", r"^trunks\[0\]\.name: 'bad name'"),
        ("SWITCHBOARD_SERVER__PORT__HTTP", "1", r"^server\.port: a single setting"),
        ("SWITCHBOARD_SERVER", "8080", r"^server: a section: set its keys one by one"),
        ("SWITCHBOARD_SERVER__PORT", "0", r"^server\.port: 0 is not a port"),
        ("SWITCHBOARD_DEMO__ENABLED", "maybe", r"^demo\.enabled: 'maybe' is not true or false"),
    ],
)
def test_a_wrong_environment_variable_stops_start_up_naming_it(
    variable: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        load(environ={variable: value})
    assert str(caught.value).endswith(f"(from {variable})")


def test_a_wrong_command_line_setting_names_its_set() -> None:
    with pytest.raises(SettingsError, match=r"\(from --set trunks\.0\.port\)$"):
        load(environ={}, overrides={"trunks.0.port": "x"})


def test_other_tools_variables_are_left_alone() -> None:
    # Secrets for `config render`, the tests' and the build's own knobs: no `__`, no setting.
    assert load(environ={"SWITCHBOARD_ARI_PASSWORD": "x", "SWITCHBOARD_NPM_CACHE": "/n"})


@dataclass(frozen=True)
class _Carrier:
    name: str = ""
    codecs: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Site:
    trunks: tuple[_Carrier, ...] = ()


def test_a_list_of_values_is_comma_separated_in_the_environment_and_a_list_in_the_file(
) -> None:
    # Settings are one tree, and no setting is a list of values yet (trunk codecs will
    # be): the same loading code on a tree of the same shapes.
    raw: dict[str, Any] = tomllib.loads("[[trunks]]\nname = 'a'\ncodecs = ['g722']\n"
                                        "[[trunks]]\nname = 'b'\ncodecs = ['g722']\n")
    apply_layers(_Site, raw, {"SWITCHBOARD_TRUNKS__0__CODECS": " ulaw, alaw,",
                              "SWITCHBOARD_TRUNKS__0__PORTS": "5060,5080",
                              "SWITCHBOARD_TRUNKS__1__CODECS": ""}, {})
    site = _build(_Site, raw, "")
    assert site.trunks == (_Carrier("a", ("ulaw", "alaw"), (5060, 5080)), _Carrier("b", ()))
    with pytest.raises(SettingsError, match=r"^trunks\[0\]\.ports\[1\]: 'x' is not an integer "
                       r"\(from SWITCHBOARD_TRUNKS__0__PORTS\)$"):
        apply_layers(_Site, {}, {"SWITCHBOARD_TRUNKS__0__PORTS": "1,x"}, {})
    # In the file a list is a TOML array, not a string to split.
    with pytest.raises(SettingsError, match=r"^trunks\[0\]\.codecs: expected a list"):
        _build(_Site, tomllib.loads("[[trunks]]\ncodecs = 'ulaw,alaw'\n"), "")


@pytest.mark.parametrize(("overrides", "message"), [
    # Every address: no origin to derive; browsers would be refused with nothing said.
    ({"server.host": "0.0.0.0"},
     r"server\.public_origin: required when server\.host is '0\.0\.0\.0'"),
    ({"server.host": "::"}, r"server\.public_origin: required"),
    ({"server.public_origin": "desk.example.com"}, r"server\.public_origin: 'desk\.example\.com'"),
    ({"server.public_origin": "https://desk.example.com/switchboard"},
     r"a scheme, a host and perhaps a port"),
])
def test_an_origin_browsers_cannot_match_stops_start_up(
    overrides: dict[str, str], message: str,
) -> None:
    with pytest.raises(SettingsError, match=message):
        load(environ={}, overrides=overrides)


def test_every_address_with_its_public_origin_is_fine() -> None:
    settings = load(environ={}, overrides={
        "server.host": "0.0.0.0", "server.public_origin": "https://desk.example.com:8443"})
    assert settings.origin == "https://desk.example.com:8443"
    # What a browser sends as Origin has no slash at the end, however it was written.
    trailing = load(environ={}, overrides={"server.public_origin": "https://desk.example.com/"})
    assert trailing.origin == "https://desk.example.com"
    assert settings.local_url.startswith("http://127.0.0.1:")


def test_a_cluster_node_peers_with_every_other_node(tmp_path: Path) -> None:
    text = ("[cluster]\nnode = 'node-a'\ncarriers = ['192.0.2.9']\n"
            + "".join(f"[[cluster.nodes]]\nname = 'node-{n}'\nsip_host = '192.0.2.1{i}'\n"
                      for i, n in enumerate("abc")))
    settings = load(write(tmp_path, text), environ={})
    assert [(p.name, p.host, p.port) for p in settings.cluster.peers()] == [
        ("node-b", "192.0.2.11", 5060), ("node-c", "192.0.2.12", 5060)]
    # Not a node (one box, or the edge's own machine): no trunk to any.
    alone = load(write(tmp_path, text.replace("node = 'node-a'\n", "")), environ={})
    assert alone.cluster.peers() == ()
