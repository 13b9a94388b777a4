"""The docker-compose stack and the image (Docker itself is not needed: the files are checked)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_stack_is_complete_and_keeps_secrets_out() -> None:
    stack = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = stack["services"]
    assert set(services) == {"minio", "create-bucket", "shoal"}
    assert services["create-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert (
        services["shoal"]["depends_on"]["create-bucket"]["condition"]
        == "service_completed_successfully"
    )
    for name in ("minio", "shoal"):
        assert services[name]["healthcheck"]["test"], name
    env = services["shoal"]["environment"]
    assert env["SHOAL_LAKE"].startswith("s3://") and env["SHOAL_S3_ENDPOINT"] == "http://minio:9000"
    # every secret comes from the environment, with no default value
    for service in services.values():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ROOT_USER|ACCESS_KEY", key):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", str(value)), (key, value)
    assert services["shoal"]["build"] == "."


def test_image_runs_the_server() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["shoal", "serve"]' in dockerfile and "HEALTHCHECK" in dockerfile
    assert "USER shoal" in dockerfile  # not root
    for package in ("lake", "api", "sdk"):
        assert f"COPY {package} ./{package}" in dockerfile
