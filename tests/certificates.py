"""A private CA and a server certificate it signs, made with the openssl commands the
README gives an operator for a LAN, so the tests take the path the README describes."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the CA's certificate: what agents' browsers are told to trust
    cert: Path  # the server's certificate (server.tls_cert)
    key: Path  # its key (server.tls_key)


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl {args[0]} failed: {done.stderr.strip()}")


def private_ca(folder: Path, *names: str) -> Certificates:
    """A CA, and a certificate it signs for ``names`` (addresses or DNS names)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "3650",
             "-subj", "/CN=Switchboard test CA", cwd=folder)
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", "switchboard.key", "-out", "switchboard.csr",
             "-subj", f"/CN={names[0]}", cwd=folder)
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}"
                   for n in names)
    (folder / "switchboard.ext").write_text(
        f"subjectAltName = {alt}\nextendedKeyUsage = serverAuth\n")
    _openssl("x509", "-req", "-in", "switchboard.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "switchboard.pem", "-days", "365",
             "-extfile", "switchboard.ext", cwd=folder)
    return Certificates(folder / "ca.pem", folder / "switchboard.pem",
                        folder / "switchboard.key")
