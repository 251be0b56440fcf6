"""`deploy/compose.yaml` and its reverse proxy (`deploy/proxy/haproxy.cfg`), for one server.

Every gateway service runs from the one image, publishes no host port (so `--scale` works)
and is reached through the proxy: HTTP by path, other TCP listeners (SMTP) as streams. The
secrets come from `deploy/.env` by `${VAR}` interpolation; nothing secret is in the file.
"""

from __future__ import annotations

from typing import Any

from .catalog import CONFIG_MOUNT, DATA_MOUNT, GRACE_S, IMAGE, ServiceSpec, ticket_core_port

RABBITMQ_IMAGE = "rabbitmq:3.13.7-management-alpine"
POSTGRES_IMAGE = "postgres:16.6-alpine"
PROXY_IMAGE = "haproxy:3.0.7-alpine"
PROXY_HTTP_PORT = 8080  # inside the proxy container (it runs unprivileged)
# Replicas of one scaled service the proxy can address (`server-template`).
PROXY_SLOTS = 10

AMQP_URL = ("amqp://${RABBITMQ_USER:?set in deploy/.env}:"
            "${RABBITMQ_PASSWORD:?set in deploy/.env}@rabbitmq:5672/")
DATABASE_URL = ("postgresql://${POSTGRES_USER:?set in deploy/.env}:"
                "${POSTGRES_PASSWORD:?set in deploy/.env}@postgres:5432/${POSTGRES_DB:-intake}")


def _gateway(command: list[str], spec: ServiceSpec | None) -> dict[str, Any]:
    environment: dict[str, str] = {
        "INTAKE_AMQP_URL": AMQP_URL,
        "INTAKE_CONFIG": CONFIG_MOUNT,
        "INTAKE_DATA_DIR": DATA_MOUNT,
        "INTAKE_HOST": "0.0.0.0",
        "INTAKE_LOG_LEVEL": "${INTAKE_LOG_LEVEL:-info}",
        "INTAKE_TICKET_CORE_URL": f"http://ticket-core:{ticket_core_port()}",
    }
    if spec is None or spec.database:
        environment["INTAKE_DATABASE_URL"] = DATABASE_URL
    if spec is not None and spec.name == "ticket-core":
        environment["INTAKE_API_TOKEN"] = "${INTAKE_API_TOKEN:?set in deploy/.env}"
        environment["INTAKE_TICKET_CORE_MIGRATE_ON_START"] = "false"  # the migrate service
    service: dict[str, Any] = {
        "image": "${INTAKE_IMAGE:-" + IMAGE + ":latest}",
        "build": {"context": "..", "dockerfile": "deploy/Dockerfile"},
        "command": command,
        "environment": environment,
        # The deployment's own secrets (account keys the config names as ${ENV}).
        "env_file": [{"path": ".env", "required": False}],
        "volumes": ["${INTAKE_CONFIG_FILE:-./intake.example.yaml}:" + CONFIG_MOUNT + ":ro",
                    "intake-data:" + DATA_MOUNT],
        "depends_on": {"rabbitmq": {"condition": "service_healthy"}},
    }
    if spec is None:
        service["depends_on"]["postgres"] = {"condition": "service_healthy"}
        service["restart"] = "on-failure"
        return service
    if spec.database:
        service["depends_on"]["postgres"] = {"condition": "service_healthy"}
        service["depends_on"]["migrate"] = {"condition": "service_completed_successfully"}
    service["restart"] = "unless-stopped"
    service["stop_grace_period"] = f"{GRACE_S}s"
    service["expose"] = [str(spec.port), *(str(port) for _, port in spec.tcp_ports)]
    service["healthcheck"] = {"test": ["CMD", "intake", "health", spec.name],
                              "interval": "10s", "timeout": "5s", "retries": 3,
                              "start_period": "30s"}
    return service


def compose(specs: list[ServiceSpec]) -> dict[str, Any]:
    services: dict[str, Any] = {
        "rabbitmq": {
            "image": RABBITMQ_IMAGE,
            "hostname": "rabbitmq",  # the node name, and so its data, survive a re-create
            "environment": {"RABBITMQ_DEFAULT_USER": "${RABBITMQ_USER:?set in deploy/.env}",
                            "RABBITMQ_DEFAULT_PASS": "${RABBITMQ_PASSWORD:?set in deploy/.env}"},
            "volumes": ["rabbitmq-data:/var/lib/rabbitmq"],
            "healthcheck": {"test": ["CMD", "rabbitmq-diagnostics", "-q", "ping"],
                            "interval": "10s", "timeout": "10s", "retries": 6,
                            "start_period": "30s"},
            "restart": "unless-stopped",
        },
        "postgres": {
            "image": POSTGRES_IMAGE,
            "environment": {"POSTGRES_USER": "${POSTGRES_USER:?set in deploy/.env}",
                            "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD:?set in deploy/.env}",
                            "POSTGRES_DB": "${POSTGRES_DB:-intake}"},
            "volumes": ["postgres-data:/var/lib/postgresql/data"],
            "healthcheck": {"test": ["CMD-SHELL", "pg_isready -U \"$$POSTGRES_USER\" -d "
                                     "\"$$POSTGRES_DB\""],
                            "interval": "5s", "timeout": "5s", "retries": 10},
            "restart": "unless-stopped",
        },
        "migrate": _gateway(["migrate"], None),
    }
    for spec in specs:
        services[spec.name] = _gateway(["run", spec.name], spec)
    edges = [spec for spec in specs if spec.http_edge or spec.tcp_ports]
    ports = ["${INTAKE_HTTP_PORT:-80}:" + str(PROXY_HTTP_PORT)]
    for spec in edges:
        for listener, port in spec.tcp_ports:
            variable = f"INTAKE_{spec.env_name}_{listener.upper()}_PUBLISHED_PORT"
            ports.append("${" + variable + ":-" + str(port) + "}:" + str(port))
    services["proxy"] = {
        "image": PROXY_IMAGE,
        "volumes": ["./proxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"],
        "ports": ports,
        "depends_on": {spec.name: {"condition": "service_started"} for spec in edges},
        "restart": "unless-stopped",
    }
    return {
        "name": "intake",
        "services": services,
        "volumes": {"rabbitmq-data": {}, "postgres-data": {}, "intake-data": {}},
    }


def haproxy(specs: list[ServiceSpec]) -> str:
    """HTTP by path prefix to the services' replicas (Docker's DNS, re-resolved, so scaled
    replicas join and leave), each checked on `/readyz`; TCP listeners as streams."""
    lines = [
        "# Generated by `intake deploy render --write` from the services in the code.",
        "global",
        "    log stdout format raw local0",
        "resolvers docker",
        "    nameserver dns 127.0.0.11:53",
        "    hold valid 5s",
        "defaults",
        "    log global",
        "    timeout connect 5s",
        "    timeout client 65s",
        "    timeout server 65s",
        "    timeout tunnel 1h  # the agent API's event stream (SSE)",
        "frontend http",
        "    mode http",
        f"    bind :{PROXY_HTTP_PORT}",
        "    option forwardfor",
    ]
    backends: list[str] = []
    for spec in specs:
        paths = [*spec.public_paths, *spec.api_paths]
        if not paths:
            continue
        acl = f"to_{spec.env_name.lower()}"
        lines.append(f"    acl {acl} path_beg {' '.join(paths)}")
        lines.append(f"    use_backend {spec.name} if {acl}")
        backends += [
            f"backend {spec.name}",
            "    mode http",
            "    balance leastconn",
            "    option httpchk GET /readyz",
            f"    server-template {spec.name} {PROXY_SLOTS} {spec.name}:{spec.port} check "
            "resolvers docker init-addr none",
        ]
    lines.append("    default_backend not_found")
    backends += ["backend not_found", "    mode http", "    http-request deny deny_status 404"]
    for spec in specs:
        for listener, port in spec.tcp_ports:
            name = f"{spec.name}_{listener}"
            backends += [
                f"frontend {name}", "    mode tcp", f"    bind :{port}",
                f"    default_backend {name}",
                f"backend {name}", "    mode tcp", "    balance leastconn",
                f"    server-template {name} {PROXY_SLOTS} {spec.name}:{port} check "
                "resolvers docker init-addr none",
            ]
    return "\n".join([*lines, *backends]) + "\n"
