"""docker-compose.yml as Debian's docker-compose reads it (`docker-compose config`): valid,
with its secrets from the environment or a .env file, and refused without them. No
Docker engine runs here; what the images run is the external-Asterisk test's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRETS = {"SWITCHBOARD_ARI_PASSWORD": "ari-secret-1234",
           "SWITCHBOARD_AMI_SECRET": "ami-secret-1234", "POSTGRES_PASSWORD": "pg-secret-1234"}


def compose_config(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is missing: `make setup-test` installs Debian's"
    shutil.copy2(REPO / "docker-compose.yml", folder / "docker-compose.yml")
    shutil.copy2(REPO / "Dockerfile", folder / "Dockerfile")
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([binary, "config"], cwd=folder, env=clean | env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_compose_file_is_valid_with_its_secrets_from_a_dot_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    done = compose_config(tmp_path, {})
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    services = resolved["services"]
    assert set(services) == {"postgres", "render", "asterisk", "switchboard"}
    product = services["switchboard"]
    assert product["environment"]["SWITCHBOARD_AMI_SECRET"] == "ami-secret-1234"
    assert "pip" not in str(product.get("command", ""))  # nothing installed at start
    # The product writes Asterisk's files where the Asterisk container reads them.
    volumes, product_volumes = mounts(services["asterisk"]), mounts(product)
    assert volumes["asterisk-config"] == "/etc/asterisk"
    assert (product_volumes["asterisk-config"]
            == product["environment"]["SWITCHBOARD_ASTERISK__CONFIG_DIR"])


def mounts(service: dict[str, object]) -> dict[str, str]:
    """Volume name -> where the container mounts it (short or long syntax)."""
    out = {}
    for volume in service["volumes"]:  # type: ignore[attr-defined]
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        out[source] = target
    return out


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_a_missing_secret_is_refused_by_name(tmp_path: Path, missing: str) -> None:
    done = compose_config(tmp_path, {k: v for k, v in SECRETS.items() if k != missing})
    assert done.returncode != 0
    assert missing in done.stderr
