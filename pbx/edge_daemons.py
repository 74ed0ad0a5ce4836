"""What the edge's two daemons (Kamailio for SIP, HAProxy for the desks) are run and
checked with alike: found on the machine, their own config check, stopped with their
process group, and the tail of their log for an error."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from pbx.config_values import ConfigValueError, check_certificate, read_file


def find_sbin(name: str, unavailable: Callable[[str], Exception]) -> str:
    """The daemon's binary: on PATH, or in the sbin folders a root-less PATH lacks."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if Path(p).exists()),
        None)
    if found is None:
        raise unavailable(f"{name} is not installed (Debian: apt install {name})")
    return found


def check_config(binary: str, config: Path, *, marks: tuple[str, ...], timeout: float
                 ) -> None:
    """The daemon's own check (``-c -f config``); ValueError with its complaints (the
    lines carrying one of ``marks``) when it refuses the file."""
    done = subprocess.run([binary, "-c", "-f", str(config)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        complaints = [line.strip() for line in (done.stdout + done.stderr).splitlines()
                      if any(mark in line for mark in marks)]
        raise ValueError(f"{Path(binary).name} refuses {config}: "
                         + "; ".join(complaints[:6]))


async def stop_group(process: asyncio.subprocess.Process | None, timeout: float) -> None:
    """SIGTERM, killed if it has not exited in ``timeout``; then whatever of its group is
    left is killed (started with start_new_session): children of a main process that
    died by itself, or one that hung, must not keep its ports or its control socket."""
    if process is None:
        return
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def log_tail(log_file: Path | None, lines: int = 15) -> str:
    if log_file is None:
        return "its log above says why"
    try:
        return "\n" + "\n".join(log_file.read_text().splitlines()[-lines:])
    except OSError:
        return ""


def edge_certificate(cert: str, key: str, listener: str) -> tuple[bytes, bytes]:
    """The edge's certificate and key, read for ``listener`` (what needs them, named for
    the admin). Checked here, on the edge's machine, not with the settings: a node's
    settings name the edge's ports (its origin, where its browsers register) but need no
    certificate."""
    cert_key, key_key = "cluster.edge_tls_cert", "cluster.edge_tls_key"
    if not (cert and key):
        raise ConfigValueError(key_key if cert else cert_key,
                               f"{listener} a certificate and its key (edge_tls_cert and "
                               "edge_tls_key, or the dashboard's: server.tls_cert and "
                               "tls_key)")
    check_certificate(cert_key, cert, key_key, key)
    return read_file(cert_key, cert), read_file(key_key, key)
