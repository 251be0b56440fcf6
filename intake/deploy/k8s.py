"""`deploy/k8s/base/`: one file per service (workload, Service, PodDisruptionBudget,
autoscaler), the ingresses, and the kustomization that lists them.

Connectors keep local state (the outbox, local blobs) and run as StatefulSets with a volume
claim per replica; router and ticket core keep none and run as Deployments. Secrets are only
referenced: the operators' own Secrets (`intake-rabbitmq-default-user`, CloudNativePG's
`intake-postgres-app`) and `intake-secrets` (the API token, accounts' secrets).
"""

from __future__ import annotations

from typing import Any

from .catalog import CONFIG_MOUNT, DATA_MOUNT, GRACE_S, IMAGE, ServiceSpec, ticket_core_port

RABBITMQ_CLUSTER = "intake-rabbitmq"
POSTGRES_CLUSTER = "intake-postgres"
APP_SECRET = "intake-secrets"
PART_OF = {"app.kubernetes.io/part-of": "intake"}
# Requests and limits from the benchmark's figures (bench/README.md): a connector stays under
# 150 MB; the router and ticket core batch and hold more.
RESOURCES = {
    "connector": {"requests": {"cpu": "100m", "memory": "96Mi"},
                  "limits": {"cpu": "1", "memory": "150Mi"}},
    "router": {"requests": {"cpu": "200m", "memory": "128Mi"},
               "limits": {"cpu": "2", "memory": "256Mi"}},
    "ticket-core": {"requests": {"cpu": "250m", "memory": "192Mi"},
                    "limits": {"cpu": "2", "memory": "512Mi"}},
}
QUEUE_LENGTH_TARGET = "500"  # messages waiting per replica before KEDA adds one
MAX_REPLICAS = 10


def labels(spec: ServiceSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name,
            "app.kubernetes.io/component": "connector" if spec.connector else spec.name}


def _env(spec: ServiceSpec) -> list[dict[str, Any]]:
    def secret(name: str, secret_name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}

    env: list[dict[str, Any]] = [
        secret("RABBITMQ_USER", f"{RABBITMQ_CLUSTER}-default-user", "username"),
        secret("RABBITMQ_PASSWORD", f"{RABBITMQ_CLUSTER}-default-user", "password"),
        # The operator's Service in front of the cluster: one host (the list form is for
        # compose, VMs and systemd).
        {"name": "INTAKE_AMQP_URL",
         "value": f"amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@{RABBITMQ_CLUSTER}:5672/"},
        {"name": "INTAKE_HOST", "value": "0.0.0.0"},
        {"name": "INTAKE_CONFIG", "value": CONFIG_MOUNT},
        {"name": "INTAKE_DATA_DIR", "value": DATA_MOUNT},
        {"name": "INTAKE_TICKET_CORE_URL", "value": f"http://ticket-core:{ticket_core_port()}"},
        {"name": "INTAKE_INSTANCE_ID",
         "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if spec.database:
        # CloudNativePG's app Secret: `uri` is a plain postgresql:// URI (run with asyncpg).
        env.append(secret("INTAKE_DATABASE_URL", f"{POSTGRES_CLUSTER}-app", "uri"))
        env.append(secret("INTAKE_API_TOKEN", APP_SECRET, "api-token"))
        env.append({"name": "INTAKE_TICKET_CORE_MIGRATE_ON_START", "value": "false"})
    return env


def _container(spec: ServiceSpec) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": spec.port}]
    ports += [{"name": name[:15], "containerPort": port} for name, port in spec.tcp_ports]
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10,
             "timeoutSeconds": 3, "failureThreshold": 3}
    return {
        "name": spec.name,
        "image": IMAGE,
        "args": ["run", spec.name],
        "ports": ports,
        "env": _env(spec),
        # Account secrets that the config names as ${ENV}; optional for a service without any.
        "envFrom": [{"secretRef": {"name": APP_SECRET, "optional": True}}],
        "volumeMounts": [{"name": "config", "mountPath": "/etc/intake", "readOnly": True},
                         {"name": "data", "mountPath": DATA_MOUNT},
                         {"name": "tmp", "mountPath": "/tmp"}],
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": probe,
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 5},
        "resources": RESOURCES["connector" if spec.connector else spec.name],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
    }


def _pod(spec: ServiceSpec) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": "intake-config"}},
        {"name": "tmp", "emptyDir": {}},
    ]
    if not spec.connector:
        volumes.append({"name": "data", "emptyDir": {}})
    pod: dict[str, Any] = {
        "terminationGracePeriodSeconds": GRACE_S,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_container(spec)],
        "volumes": volumes,
    }
    if spec.database:
        migrate = {key: value for key, value in _container(spec).items()
                   if key in ("image", "env", "envFrom", "volumeMounts", "resources",
                              "securityContext")}
        pod["initContainers"] = [{"name": "migrate", **migrate, "args": ["migrate"]}]
    return {"metadata": {"labels": {**labels(spec), **PART_OF},
                         "annotations": {"prometheus.io/scrape": "true",
                                         "prometheus.io/port": str(spec.port),
                                         "prometheus.io/path": "/metrics"}},
            "spec": pod}


def workload(spec: ServiceSpec) -> dict[str, Any]:
    body: dict[str, Any] = {
        "replicas": 2,
        "selector": {"matchLabels": labels(spec)},
        "template": _pod(spec),
    }
    if spec.connector:
        body["serviceName"] = spec.name
        # A rescheduled pod finds its outbox again; a scale-down keeps the claim (README:
        # draining it with a Job).
        body["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": "Retain",
                                                       "whenScaled": "Retain"}
        body["volumeClaimTemplates"] = [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}}}]
    return {"apiVersion": "apps/v1", "kind": "StatefulSet" if spec.connector else "Deployment",
            "metadata": {"name": spec.name, "labels": labels(spec)}, "spec": body}


def services(spec: ServiceSpec) -> list[dict[str, Any]]:
    ports = [{"name": "http", "port": spec.port, "targetPort": "http"}]
    found = [{"apiVersion": "v1", "kind": "Service",
              "metadata": {"name": spec.name, "labels": labels(spec)},
              "spec": {"selector": labels(spec), "ports": ports}}]
    for name, port in spec.tcp_ports:  # SMTP and the like: straight to the pods
        found.append({"apiVersion": "v1", "kind": "Service",
                      "metadata": {"name": f"{spec.name}-{name}", "labels": labels(spec)},
                      "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                               "selector": labels(spec),
                               "ports": [{"name": name[:15], "port": port,
                                          "targetPort": name[:15]}]}})
    return found


def disruption_budget(spec: ServiceSpec) -> dict[str, Any]:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": spec.name, "labels": labels(spec)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels(spec)}}}


def autoscaler(spec: ServiceSpec) -> dict[str, Any]:
    """KEDA on the depth of the queue it consumes (and CPU for an HTTP edge too); an HTTP
    edge without a queue scales on CPU alone (a plain HorizontalPodAutoscaler)."""
    target = {"apiVersion": "apps/v1", "kind": "StatefulSet" if spec.connector else "Deployment",
              "name": spec.name}
    cpu = {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    if not spec.queues:
        return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": spec.name, "labels": labels(spec)},
                "spec": {"scaleTargetRef": target, "minReplicas": 2,
                         "maxReplicas": MAX_REPLICAS,
                         "metrics": [{"type": "Resource", "resource": {
                             "name": "cpu", "target": {"type": "Utilization",
                                                       "averageUtilization": 70}}}]}}
    triggers: list[dict[str, Any]] = [{
        "type": "rabbitmq",
        "metadata": {"protocol": "amqp", "mode": "QueueLength",
                     "queueName": f"intake.{spec.queues[0]}", "value": QUEUE_LENGTH_TARGET},
        "authenticationRef": {"name": "intake-rabbitmq"},
    }]
    if spec.http_edge:
        triggers.append(cpu)
    return {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
            "metadata": {"name": spec.name, "labels": labels(spec)},
            "spec": {"scaleTargetRef": {"name": spec.name, "kind": target["kind"],
                                        "apiVersion": "apps/v1"},
                     "minReplicaCount": 2 if not spec.connector else 1,
                     "maxReplicaCount": MAX_REPLICAS, "triggers": triggers}}


def service_documents(spec: ServiceSpec) -> list[dict[str, Any]]:
    return [workload(spec), *services(spec), disruption_budget(spec), autoscaler(spec)]


def ingresses(specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    """The public HTTP edges (forms, vendor callbacks) and the agent API, TLS by cert-manager;
    the hosts are the overlays' (`intake.example.com` here)."""
    def ingress(name: str, host: str, routes: list[tuple[str, ServiceSpec]]) -> dict[str, Any]:
        paths = [{"path": path, "pathType": "Prefix",
                  "backend": {"service": {"name": spec.name, "port": {"name": "http"}}}}
                 for path, spec in routes]
        return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "annotations": {
                    "cert-manager.io/cluster-issuer": "letsencrypt"}},
                "spec": {"tls": [{"hosts": [host], "secretName": f"{name}-tls"}],
                         "rules": [{"host": host, "http": {"paths": paths}}]}}

    public = [(path.rstrip("/") or "/", spec) for spec in specs for path in spec.public_paths]
    api = [(path.rstrip("/"), spec) for spec in specs for path in spec.api_paths]
    return [ingress("intake-public", "intake.example.com", public),
            ingress("intake-agent-api", "agent.intake.example.com", api)]


def kustomization(specs: list[ServiceSpec]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "labels": [{"pairs": PART_OF, "includeSelectors": False}],
        "images": [{"name": IMAGE, "newTag": "latest"}],
        "configMapGenerator": [{"name": "intake-config", "files": ["intake.yaml"]}],
        "resources": ["engines.yaml", "topology.yaml", "keda.yaml", "network-policies.yaml",
                      "ingress.yaml",
                      *(f"services/{spec.name}.yaml" for spec in specs)],
    }
