"""A private PostgreSQL server for the test session and the cluster benchmark, from
Debian's packages.

Started in a temporary folder on a free loopback port and stopped afterwards, so the
tests never depend on (or disturb) a cluster the machine may already run. `make test`
installs the `postgresql` package; an explicit SWITCHBOARD_TEST_POSTGRES_URL wins.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (`apt-get install postgresql`; `make test` does it)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_postgres(port: int | None = None, *, also_on: str = "",
                     network: str = "") -> Iterator[str]:
    """Yield the URL of a fresh database on a server that lives for this block (on
    ``port``, when a test must know it before the server runs). With ``also_on`` it
    listens on that address too, and trusts ``network`` (CIDR) there: the cluster's
    nodes, each in a namespace of its own, reach it over their link."""
    bin_dir = _bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
    # The server refuses to run as root; it runs as Debian's `postgres` user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", port or _free_port()

    def run(*argv: str) -> None:
        proc = subprocess.run([*as_user, *argv], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PostgresUnavailable(f"{argv[0]} failed: {proc.stderr.strip()[-400:]}")

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "switchboard",
        "--no-sync")
    listen = "127.0.0.1"
    if also_on:
        listen += f",{also_on}"
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network} trust\n")
    run(
        str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "server.log"),
        "-o", f"-p {port} -k {folder} -c listen_addresses={listen} -c fsync=off",
        "start",
    )
    try:
        run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "switchboard",
            "switchboard_test")
        yield f"postgresql://switchboard@127.0.0.1:{port}/switchboard_test"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True, check=False,
        )
        shutil.rmtree(folder, ignore_errors=True)
