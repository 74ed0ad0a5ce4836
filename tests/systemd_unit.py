"""Reading a rendered systemd unit, and starting its ExecStart as systemd would.

No systemd runs on the test machines: the unit files are checked by
`systemd-analyze verify`, and what systemd would do with them is done here by hand
(the unit's account, environment, folder, no new privileges and capability bounds).
"""

from __future__ import annotations

import contextlib
import pwd
import shlex
from pathlib import Path

# systemd's PATH for services.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``{key: [values]}`` of a unit file (keys repeat: Environment=)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def as_systemd_starts_it(service: dict[str, list[str]]) -> tuple[list[str], dict[str, str], Path]:
    """(argv, environment, working folder) of the service's ExecStart, started the way
    systemd starts it: setpriv applies NoNewPrivileges and CapabilityBoundingSet."""
    assert service["User"] == ["root"], "only a root unit can be started here as systemd would"
    account = pwd.getpwnam("root")
    env = {"PATH": SERVICE_PATH, "HOME": account.pw_dir, "USER": "root", "LOGNAME": "root",
           "SHELL": account.pw_shell}
    for item in service.get("Environment", []):
        key, _, value = shlex.split(item)[0].partition("=")
        env[key] = value
    wrapper = ["setpriv"]
    if service.get("NoNewPrivileges") == ["yes"]:
        wrapper.append("--no-new-privs")
    caps = service.get("CapabilityBoundingSet", [""])[0].split()
    wrapper.append("--bounding-set=" + ",".join(
        ["-all", *(f"+{cap.removeprefix('CAP_').lower()}" for cap in caps)]))
    argv = [*wrapper, *shlex.split(service["ExecStart"][0])]
    return argv, env, Path(service["WorkingDirectory"][0])


def processes_reading(daemon: str, config: str) -> list[int]:
    """The ``daemon`` processes (a main process and its children) started with this
    configuration file: what a unit's stop must leave none of."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if proc.name.isdigit() and args[0].endswith(daemon.encode()) \
                    and config.encode() in args:
                found.append(int(proc.name))
    return found
