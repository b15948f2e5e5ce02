"""docker/*.yaml as Docker Compose reads them. There is no Docker engine here, but `docker compose
config` needs none: the real Compose CLI (scripts/compose.sh builds it from source) loads each
deployment variant of docs/deploy.md with a filled-in .env.example, exactly as `up` would before
starting anything: schema validation, interpolation (${VAR:?message} included), overlay merge,
extends, env_file and the consistency checks. No database or broker is used."""

import json
import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from .support import ROOT

# The first run on a machine builds the CLI (about two minutes, more on a busy machine); every
# Compose run after that takes well under a second.
pytestmark = pytest.mark.timeout(900)

DOCKER = ROOT / "docker"
COMPOSE_TEXT = "\n".join(path.read_text() for path in sorted(DOCKER.glob("*.yaml")))
# ${NAME:?message}: variables Compose refuses to run without, and what it says then.
REQUIRED = dict(re.findall(r"\$\{(\w+):\?([^}]*)\}", COMPOSE_TEXT))
REFERENCED = set(re.findall(r"\$\{(\w+)", COMPOSE_TEXT))

ALWAYS = {"timescaledb", "redis", "mosquitto", "migrate", "web", "worker", "beat"}
KAFKA_PATH = {"kafka", "bridge", "ingest"}
MQTT_INGEST = {"ingest-mqtt-1", "ingest-mqtt-2"}
INFRASTRUCTURE = {"timescaledb", "redis", "mosquitto", "kafka"}  # the rest are app processes
# The variants of docs/deploy.md and compose.mqtt.yaml: (-f files in docker/, other options, services that run).
VARIANTS = {
    "kafka": (["compose.yaml"], [], ALWAYS | KAFKA_PATH),
    "mqtt": (["compose.yaml", "compose.mqtt.yaml"], [], ALWAYS | MQTT_INGEST),
    "mqtt+kafka-profile": (["compose.yaml", "compose.mqtt.yaml"], ["--profile", "kafka"], ALWAYS | MQTT_INGEST | KAFKA_PATH),
}


class Deployment(NamedTuple):
    directory: Path  # laid out like the repository: docker/ and the .env that compose.yaml reads
    env: dict[str, str]  # the settings in that .env


def example_settings():
    """KEY=value lines of .env.example, in order (commented-out keys are not settings)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if re.match(r"\w+=", line))


def write_env(path, env):
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """docker/ copied next to a .env filled in from .env.example as docs/deploy.md says: every
    change-me and every required variable gets a distinct URL-safe secret. A copy, because
    compose.yaml reads ../.env, which in the repository would be a developer's own .env (or none)."""
    directory = tmp_path_factory.mktemp("deployment")
    shutil.copytree(DOCKER, directory / "docker")
    env = example_settings()
    for key, value in env.items():
        if value == "change-me" or key in REQUIRED:
            env[key] = f"{key.lower().replace('_', '-')}-{secrets.token_hex(8)}"
    # Not compose.yaml's defaults, so that the tests see these values come from .env.
    env.update(
        APP_IMAGE_TAG="test",
        WEB_BIND_ADDRESS="127.0.0.2",
        WEB_PORT="18000",
        MQTT_BIND_ADDRESS="127.0.0.3",
        MQTTS_PORT="18883",
        MQTT_INGEST_USER="test-ingest",
    )
    write_env(directory / ".env", env)
    return Deployment(directory, env)


def compose(directory, *args):
    """scripts/compose.sh ARGS in `directory`, without the caller's settings of Compose variables."""
    environment = {
        key: value for key, value in os.environ.items() if key not in REFERENCED and not key.startswith(("COMPOSE_", "DOCKER_"))
    }
    return subprocess.run(
        [ROOT / "scripts" / "compose.sh", *map(str, args)],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def resolve(deployment, variant):
    """The project Compose would run for a variant, as `docker compose config` prints it."""
    files, options, _ = VARIANTS[variant]
    file_args = [arg for name in files for arg in ("-f", f"docker/{name}")]
    result = compose(deployment.directory, "--env-file", ".env", *file_args, *options, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warnings either, e.g. of a variable that is not set
    return json.loads(result.stdout)


def test_every_compose_file_in_docker_is_part_of_a_variant():
    in_variants = {name for files, _, _ in VARIANTS.values() for name in files}
    assert in_variants == {path.name for path in DOCKER.glob("*.yaml")}


def test_env_example_sets_every_required_variable():
    assert {"POSTGRES_PASSWORD", "MQTT_INGEST_PASSWORD"} <= set(REQUIRED)
    assert set(REQUIRED) <= set(example_settings())


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_resolves_with_the_settings_of_env(deployment, variant):
    services = resolve(deployment, variant)["services"]
    assert set(services) == VARIANTS[variant][2]
    env = deployment.env

    # Every app process runs the one image, with the service URLs made from .env's secrets and
    # the settings of ../.env (env_file) in its environment.
    apps = {name: service for name, service in services.items() if "build" in service}
    assert set(apps) == set(services) - INFRASTRUCTURE
    for name, service in apps.items():
        assert (service["image"], service["build"]["dockerfile"]) == (f"iothub:{env['APP_IMAGE_TAG']}", "docker/Dockerfile"), name
        environment = service["environment"]
        assert environment["DATABASE_URL"] == f"postgres://iothub:{env['POSTGRES_PASSWORD']}@timescaledb:5432/iothub", name
        assert environment["MQTT_URL"] == f"mqtt://{env['MQTT_INGEST_USER']}:{env['MQTT_INGEST_PASSWORD']}@mosquitto:1883", name
        assert environment["SECRET_KEY"] == env["SECRET_KEY"], name
    assert services["timescaledb"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]

    # Only the web UI/API and MQTT are published, where .env says.
    published = {
        name: [(port["host_ip"], port["published"], port["target"]) for port in service["ports"]]
        for name, service in services.items()
        if service.get("ports")
    }
    assert published == {
        "web": [(env["WEB_BIND_ADDRESS"], env["WEB_PORT"], 8000)],
        "mosquitto": [(env["MQTT_BIND_ADDRESS"], env["MQTTS_PORT"], 8883)],
    }
    # Only web provisions device credentials.
    assert [name for name, service in apps.items() if "MQTT_ADMIN_URL" in service["environment"]] == ["web"]


def test_kafka_variant_runs_two_ingest_replicas_on_kafka(deployment):
    services = resolve(deployment, "kafka")["services"]
    assert services["ingest"]["deploy"]["replicas"] == 2
    assert all(
        service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092" for service in services.values() if "build" in service
    )


def test_mqtt_variant_never_looks_for_kafka(deployment):
    services = resolve(deployment, "mqtt")["services"]
    assert all(service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == "" for service in services.values() if "build" in service)
    # Each member of the shared subscription has its own stable client id, and waits for the broker.
    for name in MQTT_INGEST:
        command = services[name]["command"]
        assert command[command.index("--client-id") + 1] == f"iothub-{name}"
        assert "mosquitto" in services[name]["depends_on"]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_compose_refuses_to_run_without_a_required_variable(deployment, name):
    env_file = deployment.directory / f"without-{name}.env"
    write_env(env_file, {key: value for key, value in deployment.env.items() if key != name})
    result = compose(deployment.directory, "--env-file", env_file, "-f", "docker/compose.yaml", "config")
    assert result.returncode != 0
    assert f"required variable {name} is missing a value: {REQUIRED[name]}" in result.stderr


@pytest.mark.parametrize(
    "overlay, error",
    [
        ("services:\n  web:\n    restart_policy: always\n", "services.web.restart_policy"),  # not in the schema
        ("services:\n  web:\n    depends_on: [nosuch]\n", 'service "web" depends on undefined service "nosuch"'),
    ],
    ids=["unknown-key", "undefined-service"],
)
def test_compose_rejects_an_invalid_overlay(deployment, tmp_path, overlay, error):
    (tmp_path / "overlay.yaml").write_text(overlay)
    result = compose(
        deployment.directory, "--env-file", ".env", "-f", "docker/compose.yaml", "-f", tmp_path / "overlay.yaml", "config"
    )
    assert result.returncode != 0
    assert error in result.stderr
