"""``infra/docker-compose.yml`` checked by a real Compose implementation and the Compose spec, no engine.

``docker-compose config`` (Debian's package, installed by ``scripts/setup-system.sh``) loads the file
as ``docker compose up`` would: it resolves ``.env`` interpolation (so a missing secret must stop it,
with our message), merges the YAML anchors and validates every service against its schema.  The raw
file is also validated against the current Compose specification's JSON schema (the copy
``check-jsonschema`` ships).  Then the resolved configuration is checked for the "no one gets in by
default" rules: published ports on loopback only, MLflow/Prefect/Ray authentication on, no secret
that is not ours.  Every check is shown to fail on a broken copy.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.common.processes import BIN, REPO

pytestmark = pytest.mark.integration

INFRA = REPO / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
MESSAGE = "in infra/.env, see infra/README.md"
SETUP_HINT = "run `bash scripts/setup-system.sh` (what `make test` runs) to install Debian's docker-compose"


def required_vars(text: str) -> set[str]:
    """Variables the compose file refuses to start without (``${VAR:?...}``)."""
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))


def example_env() -> dict[str, str]:
    """``infra/.env.example`` as a mapping (comments and blank lines skipped)."""
    pairs = [line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {key.strip(): value.strip() for key, value in pairs}


def filled_env_file(path: Path) -> dict[str, str]:
    """``.env.example`` with every empty value replaced by a fresh secret; written to ``path``."""
    values = {k: v or ("madapter:" if k == "PREFECT_API_AUTH_STRING" else "") + secrets.token_hex(16)
              for k, v in example_env().items()}
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return values


def compose_config(compose_file: Path, env_file: Path) -> subprocess.CompletedProcess:
    """``docker-compose config`` with ONLY ``env_file`` as the source of variables (never a real
    ``infra/.env`` or the caller's environment)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(f"docker-compose not found; {SETUP_HINT}")
    names = required_vars(COMPOSE_FILE.read_text()) | set(example_env())
    env = {k: v for k, v in os.environ.items() if k not in names and not k.startswith(("COMPOSE_", "DOCKER_"))}
    cmd = [exe, "--env-file", str(env_file), "--project-directory", str(INFRA), "-f", str(compose_file), "config"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def schema_check(compose_file: Path) -> subprocess.CompletedProcess:
    """The raw file against the Compose specification's schema (check-jsonschema's vendored copy)."""
    cmd = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(compose_file)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _ports(service: dict[str, Any]) -> list[tuple[str | None, str]]:
    """(host ip, published port) of a resolved service, from the short or the long port syntax."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.append((port.get("host_ip"), str(port.get("published"))))
        else:
            parts = str(port).split(":")
            found.append((parts[0] if len(parts) == 3 else None, parts[-2] if len(parts) > 1 else parts[0]))
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def exposure_problems(config: dict[str, Any], secrets_in: dict[str, str]) -> list[str]:
    """Breaches of "no one gets in by default" in a resolved compose configuration."""
    problems = []
    services = config["services"]
    for name, service in services.items():
        for host_ip, published in _ports(service):
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {published} is published on {host_ip or 'every interface'}")
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"]) if isinstance(mlflow["command"], list) else mlflow["command"]
    if "mlflow-server.sh" not in command and "basic-auth" not in command:
        problems.append("mlflow: runs without its basic-auth app")
    if _env(mlflow).get("MLFLOW_AUTH_ADMIN_PASSWORD") != secrets_in["MLFLOW_TRACKING_PASSWORD"]:
        problems.append("mlflow: the admin password is not the one from infra/.env")
    prefect = _env(services["prefect-server"])
    if prefect.get("PREFECT_SERVER_API_AUTH_STRING") != secrets_in["PREFECT_API_AUTH_STRING"]:
        problems.append("prefect-server: no API auth string from infra/.env")
    for name in ("ray-head", "ray-worker", "prefect-worker"):
        env = _env(services[name])
        if env.get("RAY_AUTH_MODE") != "token" or env.get("RAY_AUTH_TOKEN") != secrets_in["RAY_AUTH_TOKEN"]:
            problems.append(f"{name}: Ray token authentication is off")
    for name in ("prefect-worker", "ray-worker"):
        env = _env(services[name])
        if env.get("MLFLOW_TRACKING_PASSWORD") != secrets_in["MLFLOW_TRACKING_PASSWORD"]:
            problems.append(f"{name}: cannot log in to MLflow")
        if env.get("PREFECT_API_AUTH_STRING") != secrets_in["PREFECT_API_AUTH_STRING"]:
            problems.append(f"{name}: cannot log in to Prefect")
    return problems


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose file as ``docker-compose config`` resolves it with a filled-in ``.env``."""
    env_file = tmp_path_factory.mktemp("compose") / ".env"
    values = filled_env_file(env_file)
    done = compose_config(COMPOSE_FILE, env_file)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout), values


def test_env_example_names_every_required_variable() -> None:
    required = required_vars(COMPOSE_FILE.read_text())
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING",
            "RAY_AUTH_TOKEN", "MLFLOW_FLASK_SERVER_SECRET_KEY"} <= required
    assert required <= set(example_env()), f"missing from infra/.env.example: {required - set(example_env())}"
    # no fallback values at all: every ${VAR...} in the file is the required form
    assert re.findall(r"\$\{[A-Z0-9_]+:-", COMPOSE_FILE.read_text()) == []
    secret_keys = {k for k in example_env() if k.endswith(("PASSWORD", "TOKEN", "KEY", "AUTH_STRING"))}
    assert {k: v for k, v in example_env().items() if k in secret_keys and v} == {}, ".env.example holds a secret"


def test_missing_secrets_stop_compose(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    for env_file in (empty, ENV_EXAMPLE):  # nothing at all / the example copied without filling it in
        done = compose_config(COMPOSE_FILE, env_file)
        assert done.returncode != 0, f"{env_file.name}: compose started without secrets"
        assert re.search(r"set [A-Z_]+ " + re.escape(MESSAGE), done.stderr), done.stderr


def test_compose_file_resolves_and_matches_the_spec(resolved) -> None:
    config, _ = resolved
    assert {"postgres", "minio", "mlflow", "prefect-server", "prefect-worker", "ray-head", "ray-worker"} <= set(
        config["services"])
    done = schema_check(COMPOSE_FILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_exposes_nothing_and_turns_auth_on(resolved) -> None:
    config, values = resolved
    assert exposure_problems(config, values) == []
    text = yaml.safe_dump(config)
    assert "madapter-secret" not in text  # the old built-in MinIO password


_BROKEN = [
    ("depends_on condition", "postgres: {condition: service_healthy}", "postgres: {condition: service_healty}"),
    ("misspelt key", "    image: postgres:16", "    imagee: postgres:16"),
    ("ports type", '      - "127.0.0.1:9001:9001"', "      - {published: [9001]}"),
]


@pytest.mark.parametrize("what, old, new", _BROKEN, ids=[b[0] for b in _BROKEN])
def test_broken_compose_file_fails(what: str, old: str, new: str, tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text()
    assert old in text, f"{what}: the test's anchor text is gone from the compose file"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new, 1))
    env_file = tmp_path / ".env"
    filled_env_file(env_file)
    assert compose_config(broken, env_file).returncode != 0, f"docker-compose accepted a broken file ({what})"
    assert schema_check(broken).returncode != 0, f"the compose-spec schema accepted a broken file ({what})"


@pytest.mark.parametrize("service, edit, expected", [
    ("minio", lambda s: s.update(ports=["9001:9001"]), "published on every interface"),
    ("mlflow", lambda s: s.update(command="mlflow server --host 0.0.0.0"), "without its basic-auth app"),
    ("prefect-server", lambda s: s["environment"].pop("PREFECT_SERVER_API_AUTH_STRING"), "no API auth string"),
    ("ray-head", lambda s: s["environment"].pop("RAY_AUTH_MODE"), "ray-head: Ray token authentication is off"),
])
def test_exposed_compose_is_caught(resolved, service: str, edit, expected: str) -> None:
    config, values = resolved
    broken = yaml.safe_load(yaml.safe_dump(config))
    edit(broken["services"][service])
    problems = exposure_problems(broken, values)
    assert any(expected in p for p in problems), problems
