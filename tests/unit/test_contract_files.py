"""The checked-in contract files agree with the code: docker-compose.yml, Dockerfile, .env.example
and schemas/event.schema.json. Pure tests: no Kafka, no PostgreSQL, no Docker."""

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from consumer.cli import _parser, main
from consumer.settings import Settings
from handlers.events import EVENT_TYPE_NAMES, event_json_schema

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_FILE = ROOT / "schemas" / "event.schema.json"

APP_SERVICES = ("migrate", "consumer", "demo")
# Environment variables an app container may set that are not settings of consumer/settings.py.
NON_SETTING_ENV = frozenset({"PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONFAULTHANDLER", "TZ"})
SIX_EVENT_TYPES = frozenset(
    {"user.created", "user.updated", "user.deleted", "order.created", "order.updated", "order.cancelled"}
)
REGENERATE = "run `event-consumer schema > schemas/event.schema.json` and commit the result"

# `KEY=VALUE`, or a commented-out `# KEY=VALUE`; prose comments never look like this.
ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<key>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}.
COMPOSE_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def setting_env_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


@pytest.fixture
def no_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in these tests see only what the test passes (the session exports some variables)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def build_settings(env: dict[str, str]) -> Settings:
    """Settings from environment-style UPPER_CASE names, ignoring any .env file."""
    return Settings(_env_file=None, **{key.lower(): value for key, value in env.items()})  # type: ignore[call-arg]


# --- docker-compose.yml ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "docker-compose.yml has no services"
    return data


def service_env(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment") or {}
    if isinstance(env, list):  # the `- KEY=VALUE` form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def interpolate(value: str) -> str:
    """What compose substitutes with no .env and an empty shell environment: the defaults."""

    def substitute(match: re.Match[str]) -> str:
        op = match["op"] or ""
        assert op.endswith("-"), f"{match[0]} has no default, so `docker compose up` fails without a .env"
        return match["arg"]

    return COMPOSE_VAR.sub(substitute, value)


def test_compose_defines_the_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("kafka", "postgres", "migrate", "consumer", "demo"):
        assert name in services, f"docker-compose.yml lacks the {name!r} service"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("kafka", "postgres"):
        assert "test" in services[name].get("healthcheck", {}), f"{name} needs a healthcheck for depends_on"


def test_kafka_is_a_single_kraft_node(compose: dict[str, Any]) -> None:
    env = service_env(compose, "kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{node_id}@")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    internal = service_env(compose, "consumer")["KAFKA_BOOTSTRAP_SERVERS"]
    assert f"//{internal}" in env["KAFKA_ADVERTISED_LISTENERS"], "the app must bootstrap from an advertised listener"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_uses_setting_names(compose: dict[str, Any], service: str) -> None:
    env = service_env(compose, service)
    unknown = set(env) - setting_env_names() - NON_SETTING_ENV
    assert not unknown, f"{service}: {sorted(unknown)} are not fields of consumer.settings.Settings"
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"} <= set(env), f"{service} lacks the connection settings"


@pytest.mark.parametrize("service", APP_SERVICES)
@pytest.mark.usefixtures("no_settings_env")
def test_app_environment_is_valid_configuration(compose: dict[str, Any], service: str) -> None:
    env = {key: interpolate(value) for key, value in service_env(compose, service).items() if key not in NON_SETTING_ENV}
    settings = build_settings(env)
    assert settings.kafka_bootstrap_servers == env["KAFKA_BOOTSTRAP_SERVERS"]


def test_database_url_matches_the_postgres_service(compose: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    pg = service_env(compose, "postgres")
    for service in APP_SERVICES:
        raw = service_env(compose, service)["DATABASE_URL"]
        assert "${POSTGRES_PASSWORD" in raw, f"{service}: DATABASE_URL must take its password from POSTGRES_PASSWORD"
        url = make_url(interpolate(raw))
        assert url.host == "postgres", f"{service}: DATABASE_URL must point at the postgres service"
        assert url.username == pg["POSTGRES_USER"] and url.database == pg["POSTGRES_DB"]
        assert url.password == interpolate(pg["POSTGRES_PASSWORD"]), "the app and postgres default to different passwords"
    assert "${POSTGRES_PASSWORD" in pg["POSTGRES_PASSWORD"], "the postgres password must be configurable"


def test_start_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    consumer_deps = services["consumer"]["depends_on"]
    assert consumer_deps["migrate"]["condition"] == "service_completed_successfully"
    assert consumer_deps["kafka"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["demo"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["consumer"]["restart"] == "unless-stopped"
    assert services["migrate"].get("restart", "no") == "no", "migrate is one-shot"
    assert services["demo"]["profiles"] == ["demo"], "demo must not start with a plain `docker compose up`"


def dockerfile_instruction(name: str) -> str:
    lines = [line for line in DOCKERFILE.read_text(encoding="utf-8").splitlines() if line.startswith(f"{name} ")]
    assert lines, f"Dockerfile has no {name}"
    return lines[-1].removeprefix(f"{name} ").strip()


def test_dockerfile_runs_the_console_script_as_non_root() -> None:
    assert json.loads(dockerfile_instruction("ENTRYPOINT")) == ["event-consumer"]
    assert json.loads(dockerfile_instruction("CMD")) == ["run"]
    assert dockerfile_instruction("USER") not in {"root", "0"}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_commands_are_cli_subcommands(compose: dict[str, Any], service: str) -> None:
    svc = compose["services"][service]
    assert svc.get("build") == ".", f"{service} must run the image built from the repo's Dockerfile"
    assert "entrypoint" not in svc, "the Dockerfile's ENTRYPOINT is the console script"
    command = svc["command"]
    assert isinstance(command, list), f"{service}: use the exec (list) form of command"
    try:
        args = _parser().parse_args(command)  # the ENTRYPOINT is `event-consumer`, so this is its argv
    except SystemExit:
        pytest.fail(f"{service}: {command} is not valid `event-consumer` argv (the ENTRYPOINT already is the console script)")
    expected = {"migrate": "migrate", "consumer": "run", "demo": "publish"}[service]
    assert args.command == expected
    if service == "demo":
        assert args.generate == 10000


# --- .env.example -------------------------------------------------------------------------------


def parse_env_example() -> list[tuple[str, str, bool, int]]:
    """(KEY, VALUE, commented, line index) for each KEY=VALUE line."""
    entries = []
    for index, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()):
        match = ENV_LINE.match(line.strip())
        if match:
            entries.append((match["key"], match["value"], bool(match["commented"]), index))
    return entries


def test_env_example_documents_exactly_the_settings() -> None:
    keys = [key for key, _, _, _ in parse_env_example()]
    assert len(keys) == len(set(keys)), f"duplicated in .env.example: {sorted({k for k in keys if keys.count(k) > 1})}"
    assert Settings.model_config.get("env_prefix", "") == "", "the env names below assume no env_prefix"
    missing = setting_env_names() - set(keys)
    extra = set(keys) - setting_env_names()
    assert not missing, f"document these settings in .env.example: {sorted(missing)}"
    assert not extra, f".env.example names variables that are not settings: {sorted(extra)}"


def test_env_example_required_settings_are_uncommented() -> None:
    required = {name.upper() for name, field in Settings.model_fields.items() if field.is_required()}
    uncommented = {key for key, _, commented, _ in parse_env_example() if not commented}
    assert uncommented == required, "only required settings are uncommented; optional ones are `# KEY=default`"


def test_env_example_each_setting_has_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for key, _, _, index in parse_env_example():
        above = lines[index - 1].strip() if index else ""
        assert above.startswith("#") and not ENV_LINE.match(above) and len(above) > 2, f"{key} needs a comment line above it"


def default_of(key: str) -> Any:
    return Settings.model_fields[key.lower()].get_default(call_default_factory=True)


@pytest.mark.usefixtures("no_settings_env")
def test_env_example_values_are_valid_and_defaults_are_true() -> None:
    """A commented `# KEY=VALUE` shows the default, except for settings unset by default (None),
    where VALUE is an example: those are left out here (an example CA path need not exist)."""
    entries = parse_env_example()
    shown = {key: value for key, value, commented, _ in entries if not commented or default_of(key) is not None}
    settings = build_settings(shown)  # the required values and the shown defaults form a valid configuration
    checked = 0
    for key, value, commented, _ in entries:
        if commented and default_of(key) is not None:
            assert getattr(settings, key.lower()) == default_of(key), (
                f".env.example shows {key}={value}, but the default is {default_of(key)!r}"
            )
            checked += 1
    assert checked >= len(Settings.model_fields) // 2, "most optional settings have a real default to check"


# --- schemas/event.schema.json ----------------------------------------------------------------------


def rendered_schema() -> str:
    """Exactly what `event-consumer schema` prints."""
    return orjson.dumps(event_json_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def test_rendering_matches_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == rendered_schema()


def test_schema_file_is_current() -> None:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE.relative_to(ROOT)} is missing: {REGENERATE}"
    checked_in = SCHEMA_FILE.read_text(encoding="utf-8")
    assert checked_in == rendered_schema(), f"schemas/event.schema.json is stale: {REGENERATE}"


def test_schema_discriminates_all_six_event_types() -> None:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert EVENT_TYPE_NAMES == SIX_EVENT_TYPES
    discriminator = schema["discriminator"]
    assert discriminator["propertyName"] == "event_type"
    mapping = discriminator["mapping"]
    assert set(mapping) == SIX_EVENT_TYPES
    assert {branch["$ref"] for branch in schema["oneOf"]} == set(mapping.values())
    for event_type, ref in mapping.items():
        definition = schema["$defs"][ref.removeprefix("#/$defs/")]
        assert definition["properties"]["event_type"]["const"] == event_type
        assert {"event_id", "event_type", "occurred_at", "version", "data"} <= set(definition["required"])
