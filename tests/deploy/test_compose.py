"""docker-compose.yml, checked without a Docker engine: the compose schema, pinned images, no secrets, and
environment variables and ports that the code's settings classes really accept.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from deploy_checks import DEPLOY, PLACEHOLDER, PROMETHEUS_DIR, ROOT, VARIABLE

from pipeline.api.settings import ApiSettings
from pipeline.settings import Settings

#: The compose specification's JSON schema, vendored (no network here): the copy the dclint 3.1.0 npm
#: package ships (schemas/compose.schema.json), which is the compose-spec project's schema (Apache-2.0).
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
#: Services that run once and exit; every other service runs for good.
ONE_SHOT = {"migrate", "db-roles", "api-token-key", "broker-users", "simulator"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CURSOR_KEY|JWT_KEY$|_DSN$")


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def roomlogs_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services(compose).items() if s["image"].startswith("roomlogs:")}


def settings_of(service: dict[str, Any]) -> Settings:
    env = environment(service)
    return Settings.from_env({k: v for k, v in env.items() if not k.startswith("ROOMLOGS_API_")})


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration))


# --- the file as a whole -----------------------------------------------------------------------------------
def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_catches_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["healthcheck"]["intervall"] = "15s"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert any("intervall" in e.message for e in validator.iter_errors(broken))


# --- images ------------------------------------------------------------------------------------------------
def test_every_image_is_pinned_to_a_release(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service["image"]
        assert "@sha256:" in image or re.search(r":v?\d+\.\d+(\.\d+)?(-[\w.]+)?$", image), (
            f"{name}: image {image!r} is not pinned to a release (no `latest`, no bare major)"
        )


def test_the_roomlogs_image_tag_is_the_project_version(compose: dict[str, Any]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    for name, service in roomlogs_services(compose).items():
        assert service["image"] == f"roomlogs:{version}", name
        assert service["build"]["context"] == "." and (ROOT / service["build"]["dockerfile"]).is_file()
    assert set(roomlogs_services(compose)) == {
        "migrate",
        "worker",
        "retention",
        "api",
        "api-token-key",
        "simulator",
    }


# --- variables and secrets ---------------------------------------------------------------------------------
def required_variables(text: str) -> set[str]:
    return {m.group("name") for m in VARIABLE.finditer(text) if (m.group("op") or "").endswith("?")}


def test_every_variable_has_a_default_or_says_how_to_set_it(compose_text: str) -> None:
    for m in VARIABLE.finditer(compose_text):
        op, arg = m.group("op") or "", m.group("arg") or ""
        assert op in (":-", ":?"), f"{m.group(0)}: give a default (:-) or a required-with-message (:?)"
        if op == ":?":
            assert arg.strip(), f"{m.group(0)}: say how to set it"
    assert "$" not in re.sub(r"\$\$|" + VARIABLE.pattern, "", compose_text), "a bare $NAME reference"


def test_the_env_example_lists_every_variable(compose_text: str) -> None:
    example = (DEPLOY / "env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    used = {m.group("name") for m in VARIABLE.finditer(compose_text)}
    assert used - listed == set(), f"add to deploy/env.example: {sorted(used - listed)}"
    required = set(re.findall(r"^([A-Z][A-Z0-9_]*)=$", example, re.MULTILINE))
    assert required == required_variables(compose_text)


def test_no_secret_is_written_in_the_file(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key) and value:
                assert PLACEHOLDER in value, f"{name}: {key} must come from a ${{VAR:?}} reference"
        for key, value in environment(service).items():
            if key.endswith("_FILE") and "JWT" in key:
                assert value.startswith("/run/secrets/"), f"{name}: {key} should be a compose secret"
    for name, secret in compose.get("secrets", {}).items():
        assert secret["file"] == PLACEHOLDER, f"secret {name} must point at a file named in .env"


def test_every_roomlogs_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = set(Settings.env_names()) | set(ApiSettings.env_names())
    for name, service in services(compose).items():
        unknown = sorted(k for k in environment(service) if k.startswith("ROOMLOGS_") and k not in known)
        assert not unknown, f"{name}: not settings of the code: {unknown}"


def test_each_roomlogs_service_environment_parses_as_settings(compose: dict[str, Any]) -> None:
    """What the container would do first: read its environment into the settings objects."""
    for service in roomlogs_services(compose).values():
        settings_of(service)
    api_env = environment(services(compose)["api"])
    ApiSettings.from_env(api_env)


def test_every_roomlogs_process_logs_json(compose: dict[str, Any]) -> None:
    """deploy/README.md promises one JSON object per line from every roomlogs container."""
    for name, service in roomlogs_services(compose).items():
        assert settings_of(service).log_format == "json", f"{name}: set ROOMLOGS_LOG_FORMAT=json"


def test_workers_talk_to_the_replicated_cluster_idempotently(compose: dict[str, Any]) -> None:
    brokers = {name: s for name, s in services(compose).items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    envs = [environment(s) for s in brokers.values()]
    assert sorted(e["KAFKA_NODE_ID"] for e in envs) == ["1", "2", "3"]
    voters = {v.split("@")[1].split(":")[0] for v in envs[0]["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")}
    assert voters == set(brokers)
    for env in envs:
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
    worker = settings_of(services(compose)["worker"])
    assert worker.kafka_idempotent_producer is True
    assert worker.kafka_replication_factor == 3
    assert {h.split(":")[0] for h in worker.kafka_bootstrap.split(",")} == set(brokers)
    dsn = worker.postgres_dsn.get()
    assert dsn.startswith("postgresql://") and "@postgres:5432/" in dsn


def test_clients_reach_kafka_over_sasl_ssl_and_postgres_over_verified_tls(compose: dict[str, Any]) -> None:
    for name in ("migrate", "worker", "simulator"):
        settings = settings_of(services(compose)[name])
        assert settings.kafka_security_protocol == "SASL_SSL", name
        assert settings.kafka_ssl_ca_file.startswith("/run/secrets/"), name
    for name in ("migrate", "worker"):
        assert "sslmode=verify-full" in settings_of(services(compose)[name]).postgres_dsn.get(), name
    api = ApiSettings.from_env(environment(services(compose)["api"]))
    assert "sslmode=verify-full" in api.postgres_dsn.get()
    broker = environment(services(compose)["kafka-1"])
    protocols = dict(p.split(":") for p in broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols["CLIENT"] == protocols["EXTERNAL"] == "SASL_SSL"
    assert broker["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert "ssl=on" in services(compose)["postgres"]["command"]


def test_the_api_role_the_migrations_make_is_the_one_the_api_uses(compose: dict[str, Any]) -> None:
    schema = settings_of(services(compose)["api"]).postgres_schema
    api = ApiSettings.from_env(environment(services(compose)["api"]))
    assert api.postgres_dsn.get().startswith(f"postgresql://{schema}_api:")
    assert f"ALTER ROLE {schema}_api " in services(compose)["db-roles"]["command"][0]


def test_workers_connect_as_their_own_role_and_retention_as_the_owner(compose: dict[str, Any]) -> None:
    """Least privilege (migration 0008): workers append logs as <schema>_worker, which cannot edit, delete
    or drop them; dropping expired days needs the tables' owner, so a retention service does it."""
    worker = settings_of(services(compose)["worker"])
    assert worker.postgres_dsn.get().startswith(f"postgresql://{worker.postgres_schema}_worker:")
    assert f"ALTER ROLE {worker.postgres_schema}_worker " in services(compose)["db-roles"]["command"][0]
    assert (
        services(compose)["worker"]["depends_on"]["db-roles"]["condition"] == "service_completed_successfully"
    )
    owner = settings_of(services(compose)["migrate"]).postgres_dsn.get().split("@")[0]
    retention = services(compose)["retention"]
    assert retention["command"] == ["retention", "enforce", "--apply", "--loop"]
    assert settings_of(retention).postgres_dsn.get().split("@")[0] == owner
    assert "sslmode=verify-full" in settings_of(retention).postgres_dsn.get()
    assert retention["healthcheck"]["test"] == ["CMD", "roomlogs", "retention", "check"]


def test_the_database_checks_deletions_with_the_apis_token_key(compose: dict[str, Any]) -> None:
    """`roomlogs api trust-key` (as the owner) installs the key the API verifies tokens with, before the API
    starts: the deletion functions verify the caller's token themselves (migration 0010)."""
    trust, api = services(compose)["api-token-key"], services(compose)["api"]
    assert trust["command"] == ["api", "trust-key"]
    assert api["depends_on"]["api-token-key"]["condition"] == "service_completed_successfully"
    owner = settings_of(services(compose)["migrate"]).postgres_dsn.get().split("@")[0]
    assert settings_of(trust).postgres_dsn.get().split("@")[0] == owner
    same = [f"ROOMLOGS_API_JWT_{k}" for k in ("ALGORITHM", "KEY_FILE", "ISSUER", "AUDIENCE")]
    oidc = ("ISSUER", "CLIENT_ID", "REDIRECT_URL", "STAFF_CLAIM", "STAFF_VALUE")
    same += [f"ROOMLOGS_API_OIDC_{k}" for k in oidc]
    assert {k: environment(trust)[k] for k in same} == {k: environment(api)[k] for k in same}
    assert "api_jwt_key" in trust["secrets"]


# --- ports ------------------------------------------------------------------------------------------------
def scrape_port(job: str) -> int:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    (scrape,) = [j for j in config["scrape_configs"] if j["job_name"] == job]
    (sd,) = scrape["dns_sd_configs"]
    port: int = sd["port"]
    return port


def test_worker_metrics_port_is_the_settings_default_everywhere(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    settings = settings_of(worker)
    assert settings.metrics_port == Settings().metrics_port == 9308
    assert settings.metrics_host == "0.0.0.0", "metrics must listen beyond the container's loopback"
    assert worker["expose"] == [str(settings.metrics_port)]
    assert f"127.0.0.1:{settings.metrics_port}/health" in worker["healthcheck"]["test"][-1]
    assert scrape_port("roomlogs-worker") == settings.metrics_port


def test_api_port_is_the_settings_default_everywhere(compose: dict[str, Any]) -> None:
    api = services(compose)["api"]
    settings = ApiSettings.from_env(environment(api))
    assert settings.port == ApiSettings().port == 8080
    assert settings.host == "0.0.0.0"
    assert [p.rsplit(":", 1)[1] for p in api["ports"]] == [str(settings.port)]
    assert f"127.0.0.1:{settings.port}/healthz" in api["healthcheck"]["test"][-1]
    assert settings.metrics_path == "/metrics"
    assert scrape_port("roomlogs-api") == settings.port


def test_the_console_is_served_over_https_by_the_proxy(compose: dict[str, Any]) -> None:
    """Owners reach the console through Caddy (deploy/caddy/Caddyfile, run for real in
    tests/api/test_https_proxy.py); the API's session cookie is Secure."""
    proxy, api = services(compose)["proxy"], services(compose)["api"]
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"]
    assert (DEPLOY / "caddy" / "Caddyfile").is_file()
    assert [p.rsplit(":", 2)[-2:] for p in proxy["ports"]] == [["80", "80"], ["443", "443"]]
    assert environment(proxy)["API_UPSTREAM"] == f"api:{ApiSettings.from_env(environment(api)).port}"
    assert ApiSettings.from_env(environment(api)).session_cookie_secure
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"


def test_published_ports_bind_to_loopback_by_default(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        for mapping in service.get("ports", []):
            assert mapping.startswith("127.0.0.1:"), f"{name}: {mapping} is reachable from the network"


# --- lifecycle --------------------------------------------------------------------------------------------
def test_services_have_health_checks_and_restart_policies(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        if name in ONE_SHOT:
            assert service["restart"] == "no", name
            continue
        assert service["restart"] == "unless-stopped", name
        assert service["healthcheck"]["test"], name
    for name, service in services(compose).items():
        for dependency, how in service.get("depends_on", {}).items():
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services(compose)[dependency], f"{name} waits on {dependency}"
            if how["condition"] == "service_completed_successfully":
                assert dependency in ONE_SHOT


def test_workers_and_the_api_start_after_migrations(compose: dict[str, Any]) -> None:
    for name in ("worker", "api"):
        migrate = services(compose)[name]["depends_on"]["migrate"]
        assert migrate["condition"] == "service_completed_successfully"


def test_a_stopping_worker_has_time_to_drain(compose: dict[str, Any]) -> None:
    worker = services(compose)["worker"]
    assert seconds(worker["stop_grace_period"]) > settings_of(worker).shutdown_drain_seconds + 5


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name in ("kafka-1", "kafka-2", "kafka-3", "postgres", "prometheus", "grafana"):
        named = {v.split(":")[0] for v in services(compose)[name]["volumes"] if not v.startswith("./")}
        assert named and named <= declared, name
    assert "/var/lib/kafka/data" in services(compose)["kafka-1"]["volumes"][0]
    assert environment(services(compose)["kafka-1"])["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"


def test_prometheus_gets_the_rules_and_grafana_the_dashboards(compose: dict[str, Any]) -> None:
    prometheus = services(compose)["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    simulator = services(compose)["simulator"]
    assert simulator["profiles"] == ["simulator"]
