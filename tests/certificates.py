"""A private CA and a server certificate it signs, made by running the README's own
openssl commands for a LAN (its "A private CA for a LAN" block), so the tests take the
path the README gives an operator, and the README cannot drift from it."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
# The address the README's example certificate is for.
README_ADDRESS = "192.168.1.10"


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate: what agents' browsers are told to trust
    cert: Path  # the server's certificate (server.tls_cert)
    key: Path  # its key (server.tls_key)


def readme_commands() -> str:
    """The shell block after the README's "A private CA for a LAN"."""
    text = README.read_text()
    found = re.search(r"\*\*A private CA for a LAN\*\*.*?```sh\n(.*?)```", text, re.DOTALL)
    assert found is not None, "README.md has no private CA block"
    return found[1]


def private_ca(folder: Path, *names: str) -> Certificates:
    """A CA, and a certificate it signs for ``names`` (addresses or DNS names): the
    README's commands, with its example address replaced by ``names``."""
    folder.mkdir(parents=True, exist_ok=True)
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}"
                   for n in names)
    script = readme_commands()
    assert f"IP:{README_ADDRESS}" in script and f"/CN={README_ADDRESS}" in script
    script = script.replace(f"IP:{README_ADDRESS}", alt).replace(
        f"/CN={README_ADDRESS}", f"/CN={names[0]}")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder,
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"the README's openssl commands failed: {done.stderr.strip()}")
    return Certificates(folder / "ca.pem", folder / "switchboard.pem",
                        folder / "switchboard.key")
