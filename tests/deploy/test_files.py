"""deploy/: generated from the code and current; compose, Dockerfile, systemd unit, alerts
and dashboard checked with the tools ops use (or their schemas), offline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml
from prometheus_client import REGISTRY

import intake.metrics  # noqa: F401  (registers every metric the services export)
from intake.deploy.catalog import service_names, services
from intake.deploy.render import stale

from .support import DEPLOY, HERE, tool

ENGINES_AND_HELPERS = {"rabbitmq", "postgres", "migrate", "proxy"}


def compose_file() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_the_generated_files_are_current() -> None:
    # Stale? `intake deploy render --write` (after adding a connector, say).
    assert stale() == []


def test_the_services_are_those_intake_lists() -> None:
    listed = subprocess.run([sys.executable, "-m", "intake.cli", "connectors", "list"],
                            check=True, capture_output=True, text=True).stdout
    connectors = [line.split()[0] for line in listed.splitlines() if line.strip()]
    expected = ["ticket-core", "router", *sorted(connectors)]
    assert service_names() == expected
    assert set(compose_file()["services"]) == ENGINES_AND_HELPERS | set(expected)
    k8s = {path.stem for path in (DEPLOY / "k8s" / "base" / "services").glob("*.yaml")}
    assert k8s == set(expected)
    systemd = (DEPLOY / "systemd" / "README.md").read_text(encoding="utf-8")
    units = re.search(r"systemctl enable --now (.+)", systemd)
    assert units is not None
    assert units.group(1).split() == [f"intake@{name}" for name in expected]


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads((HERE / "schemas" / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(compose_file())


def test_compose_services_run_one_image_healthy_scalable_and_without_secrets() -> None:
    document = compose_file()
    for spec in services():
        service = document["services"][spec.name]
        assert service["command"] == ["run", spec.name]
        assert service["healthcheck"]["test"] == ["CMD", "intake", "health", spec.name]
        assert int(service["stop_grace_period"].removesuffix("s")) > 30
        assert "ports" not in service  # scaled replicas publish no fixed host port
        environment = service["environment"]
        assert environment["INTAKE_HOST"] == "0.0.0.0"
        assert "@rabbitmq:5672/" in environment["INTAKE_AMQP_URL"]
        assert any(v.endswith(f":{environment['INTAKE_CONFIG']}:ro") for v in service["volumes"])
        assert any(v.endswith(f":{environment['INTAKE_DATA_DIR']}") for v in service["volumes"])
        for name, value in environment.items():
            if any(word in name for word in ("PASSWORD", "TOKEN", "DATABASE_URL", "AMQP_URL")):
                assert "${" in value, name  # from deploy/.env, never written here
    core = document["services"]["ticket-core"]
    assert core["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert core["environment"]["INTAKE_DATABASE_URL"].startswith("postgresql://${")
    assert document["services"]["migrate"]["command"] == ["migrate"]
    assert "INTAKE_DATABASE_URL" not in document["services"]["router"]["environment"]
    for engine in ("rabbitmq", "postgres"):
        assert "healthcheck" in document["services"][engine]
        assert re.search(r":\d+\.\d+", document["services"][engine]["image"])  # pinned


def test_the_proxy_fronts_every_http_edge_and_tcp_listener() -> None:
    config = (DEPLOY / "proxy" / "haproxy.cfg").read_text(encoding="utf-8")
    for spec in services():
        for prefix in [*spec.public_paths, *spec.api_paths]:
            assert re.search(rf"acl \S+ path_beg .*{re.escape(prefix)}", config), prefix
        if spec.http_edge:
            assert f"server-template {spec.name} " in config
        for _listener, port in spec.tcp_ports:
            assert f"bind :{port}" in config


def test_env_example_sets_every_variable_compose_requires() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{(\w+):\?", text))
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    assigned = set(re.findall(r"^(\w+)=", example, re.MULTILINE))
    assert required <= assigned, required - assigned


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run([hadolint, str(DEPLOY / "Dockerfile")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "USER 10001" in dockerfile and "INTAKE_HOST=0.0.0.0" in dockerfile
    assert 'ENTRYPOINT ["intake"]' in dockerfile and 'CMD ["run", "all"]' in dockerfile
    ignored = (DEPLOY.parent / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"var", ".venv", "tests"} <= set(ignored)


def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    unit = (DEPLOY / "systemd" / "intake@.service").read_text(encoding="utf-8")
    assert "Restart=on-failure" in unit and "User=intake" in unit
    stop = re.search(r"TimeoutStopSec=(\d+)s", unit)
    assert stop is not None and int(stop.group(1)) > 30
    # The unit names the install path; verify it against this checkout's `intake`.
    local = unit.replace("/opt/intake/.venv/bin/intake", str(Path(sys.executable).parent
                                                               / "intake"))
    (tmp_path / "intake@.service").write_text(local, encoding="utf-8")
    result = subprocess.run([analyze, "verify", str(tmp_path / "intake@router.service")],
                            capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "intake@" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


SUFFIXES = {"counter": ("_total",), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count")}


def intake_collectors() -> list:  # type: ignore[type-arg]
    return [collector for collector in list(REGISTRY._collector_to_names)
            if getattr(collector, "_name", "").startswith("intake_")]


def exported_metrics() -> set[str]:
    """Every series name the services' metrics give (a labelled metric with no children yet
    has no samples to list, so the names come from each metric's type)."""
    import intake.sending  # noqa: F401  (the senders' delivery results)

    names = set()
    for collector in intake_collectors():
        base = collector._name.removesuffix("_total")
        names |= {base + suffix for suffix in SUFFIXES[collector._type]}
    return names


def test_every_metric_an_alert_or_panel_names_is_exported() -> None:
    exported = exported_metrics()
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text(encoding="utf-8"))
    expressions = [rule["expr"] for group in alerts["groups"] for rule in group["rules"]]
    dashboard = json.loads((DEPLOY / "grafana" / "intake.json").read_text(encoding="utf-8"))
    expressions += [target["expr"] for panel in dashboard["panels"]
                    for target in panel["targets"]]
    expressions += [dashboard["templating"]["list"][1]["query"]["query"]]
    named = {name for expression in expressions
             for name in re.findall(r"\bintake_[a-z_]+\b", expression)}
    assert named and named <= exported, named - exported
    for wanted in ("intake_outbox_depth", "intake_dead_lettered_total",
                   "intake_broker_connected", "intake_component_up",
                   "intake_end_to_end_seconds_bucket"):
        assert wanted in named
    assert any(item["name"] == "service" for item in dashboard["templating"]["list"])


def test_every_metric_carries_a_service_label() -> None:
    import intake.sending  # noqa: F401

    collectors = intake_collectors()
    assert len(collectors) >= 10
    for collector in collectors:
        assert "service" in collector._labelnames, collector._name
