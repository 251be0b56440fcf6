"""The Kubernetes manifests: both overlays render (kubectl kustomize), validate offline against
Kubernetes' schemas (kubernetes-validate) and the operators' CRDs (kept in tests/deploy/crds),
and hold what ops rely on: per service a workload, Service, PodDisruptionBudget and autoscaler,
probes, a locked-down pod, secrets only referenced, PostgreSQL reachable by the ticket core
alone among the gateway's services."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from intake.deploy.catalog import services

from .support import KUBERNETES_VERSION, OVERLAYS, by_kind, crd_schemas, rendered_overlay

WORKLOADS = ("Deployment", "StatefulSet")
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "DATABASE_URL", "KEY")


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the CRD's schema does not declare (the API server would prune them silently)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_validates_offline(overlay: str) -> None:
    crds = crd_schemas()
    for doc in rendered_overlay(overlay):
        key = (doc["apiVersion"], doc["kind"])
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if key in crds:
            jsonschema.validate(doc, crds[key])
            assert unknown_fields(doc, crds[key]) == [], name
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_workload_service_budget_and_autoscaler(overlay: str) -> None:
    docs = rendered_overlay(overlay)
    workloads = {**by_kind(docs, "Deployment"), **by_kind(docs, "StatefulSet")}
    scalers = {**by_kind(docs, "ScaledObject"), **by_kind(docs, "HorizontalPodAutoscaler")}
    for spec in services():
        workload = workloads[spec.name]
        assert workload["kind"] == ("StatefulSet" if spec.connector else "Deployment")
        assert spec.name in by_kind(docs, "Service")
        assert spec.name in by_kind(docs, "PodDisruptionBudget")
        scaler = scalers[spec.name]
        if spec.queues:  # scaled on the depth of the queue it consumes
            assert scaler["kind"] == "ScaledObject"
            trigger = scaler["spec"]["triggers"][0]
            assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
            assert trigger["metadata"]["queueName"] == f"intake.{spec.queues[0]}"
            assert trigger["authenticationRef"]["name"] in by_kind(docs, "TriggerAuthentication")
        else:
            assert scaler["kind"] == "HorizontalPodAutoscaler"
        if spec.connector:  # its outbox survives a reschedule
            claim = workload["spec"]["volumeClaimTemplates"][0]
            assert claim["metadata"]["name"] == "data"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_probed_locked_down_and_given_time_to_stop(overlay: str) -> None:
    docs = rendered_overlay(overlay)
    for name, workload in {**by_kind(docs, "Deployment"),
                           **by_kind(docs, "StatefulSet")}.items():
        pod = workload["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > 30, name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["allowPrivilegeEscalation"] is False
            assert container["resources"]["limits"]["memory"]
        container = pod["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        env = {item["name"]: item for item in container["env"]}
        assert env["INTAKE_HOST"]["value"] == "0.0.0.0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_referenced_never_written(overlay: str) -> None:
    docs = rendered_overlay(overlay)
    assert not by_kind(docs, "Secret")
    for workload in [*by_kind(docs, "Deployment").values(),
                     *by_kind(docs, "StatefulSet").values()]:
        pod = workload["spec"]["template"]["spec"]
        for container in pod["containers"] + pod.get("initContainers", []):
            for item in container["env"]:
                if any(word in item["name"] for word in SECRET_WORDS):
                    assert "secretKeyRef" in item.get("valueFrom", {}), item["name"]
            amqp = next(i for i in container["env"] if i["name"] == "INTAKE_AMQP_URL")
            assert "$(RABBITMQ_PASSWORD)" in amqp["value"]
    core = by_kind(docs, "Deployment")["ticket-core"]["spec"]["template"]["spec"]["containers"][0]
    database = next(i for i in core["env"] if i["name"] == "INTAKE_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"] == {"name": "intake-postgres-app", "key": "uri"}


def test_postgres_takes_the_ticket_core_and_no_other_gateway_service() -> None:
    docs = rendered_overlay("production")
    policy = by_kind(docs, "NetworkPolicy")["intake-postgres"]
    sources = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    gateway = {peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name")
               for peer in sources if "podSelector" in peer} & {s.name for s in services()}
    assert gateway == {"ticket-core"}
    assert not any(peer.get("podSelector", {}).get("matchLabels", {}).get(
        "app.kubernetes.io/part-of") for peer in sources)
    database_users = {name for name, workload in {**by_kind(docs, "Deployment"),
                                                   **by_kind(docs, "StatefulSet")}.items()
                      if any(item["name"] == "INTAKE_DATABASE_URL"
                             for item in workload["spec"]["template"]["spec"]["containers"][0]
                             ["env"])}
    assert database_users == {"ticket-core"}


def test_production_runs_engines_at_three_and_consumers_at_two_or_more() -> None:
    docs = rendered_overlay("production")
    assert by_kind(docs, "RabbitmqCluster")["intake-rabbitmq"]["spec"]["replicas"] == 3
    assert by_kind(docs, "Cluster")["intake-postgres"]["spec"]["instances"] == 3
    scaled = by_kind(docs, "ScaledObject")
    for name in ("router", "ticket-core"):
        assert scaled[name]["spec"]["minReplicaCount"] >= 2
        assert by_kind(docs, "Deployment")[name]["spec"]["replicas"] >= 2


def test_production_stores_attachments_in_s3_for_every_service() -> None:
    """Replicas on several nodes share attachments: every service has the same `s3://` URL,
    its credentials from a Secret; dev keeps the file store on each pod's volume."""
    for overlay, want in (("production", True), ("dev", False)):
        workloads = [w for kind in WORKLOADS for w in by_kind(rendered_overlay(overlay),
                                                              kind).values()]
        assert {w["metadata"]["name"] for w in workloads} == {s.name for s in services()}
        for workload in workloads:
            container = workload["spec"]["template"]["spec"]["containers"][0]
            urls = [e.get("value") for e in container["env"] if e["name"] == "INTAKE_BLOB_URL"]
            refs = [e["secretRef"]["name"] for e in container["envFrom"] if "secretRef" in e]
            if want:
                assert urls == ["s3://intake-attachments/production"], workload["metadata"]
                assert "intake-blob-store" in refs
            else:
                assert urls == [] and "intake-blob-store" not in refs


def test_dev_runs_one_of_everything() -> None:
    docs = rendered_overlay("dev")
    assert by_kind(docs, "RabbitmqCluster")["intake-rabbitmq"]["spec"]["replicas"] == 1
    assert by_kind(docs, "Cluster")["intake-postgres"]["spec"]["instances"] == 1
    for workload in [*by_kind(docs, "Deployment").values(),
                     *by_kind(docs, "StatefulSet").values()]:
        assert workload["spec"]["replicas"] == 1
    assert all(s["spec"]["maxReplicaCount"] == 1 for s in by_kind(docs, "ScaledObject").values())
    assert all(h["spec"]["maxReplicas"] == 1
               for h in by_kind(docs, "HorizontalPodAutoscaler").values())


def test_ingresses_cover_every_public_route_and_the_agent_api() -> None:
    docs = rendered_overlay("production")
    ingresses = by_kind(docs, "Ingress")
    routed = {(path["path"], path["backend"]["service"]["name"])
              for ingress in ingresses.values() for rule in ingress["spec"]["rules"]
              for path in rule["http"]["paths"]}
    for spec in services():
        for prefix in [*spec.public_paths, *spec.api_paths]:
            assert (prefix.rstrip("/"), spec.name) in routed
    for ingress in ingresses.values():
        assert ingress["spec"]["tls"] and "cert-manager.io/cluster-issuer" in \
            ingress["metadata"]["annotations"]
