"""The console's kustomize component (deploy/k8s/components/console), rendered by the real
``kubectl kustomize`` on top of the base with the bundled Redis, and validated like every
layout in tests/test_deploy.py: strict schemas, hardening, its Secret as a file, its policies."""

from __future__ import annotations

from functools import cache
from typing import Any

from services.cli import build_parser
from tests.kustomize import LAYOUTS, render, render_components, selects, validate
from tests.test_deploy import SECRET_MOUNT, file_secrets

Obj = dict[str, Any]


@cache
def rendered() -> tuple[Obj, ...]:
    return tuple(render_components(("redis-bundled", "console")))


def of_kind(kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in rendered() if o["kind"] == kind}


def test_every_object_is_valid_and_the_console_comes_only_with_its_component() -> None:
    for obj in rendered():
        validate(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize"
    assert "wecom-bus-console" in of_kind("Deployment")
    for layout in LAYOUTS:  # no layout of the repository installs it unasked
        assert all("console" not in o["metadata"]["name"] for o in render(layout))


def test_the_console_is_hardened_probed_and_reads_its_key_from_a_file() -> None:
    deployment = of_kind("Deployment")["wecom-bus-console"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert file_secrets(deployment) == {"CONSOLE_API_KEY": "wecom-bus-console"}
    assert {"name": "CONSOLE_API_KEY_FILE", "value": f"{SECRET_MOUNT}/CONSOLE_API_KEY"} in (
        container["env"]
    )
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.host, args.port) == ("console", "0.0.0.0", 8083)
    assert container["ports"] == [{"name": "http", "containerPort": 8083, "protocol": "TCP"}]
    (service,) = [
        s for s in of_kind("Service").values() if s["metadata"]["name"].endswith("console")
    ]
    assert service["spec"]["type"] == "ClusterIP"
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels())


def pod_labels(component: str = "console") -> dict[str, str]:
    pods = [*of_kind("Deployment").values(), *of_kind("StatefulSet").values()]
    for workload in pods:
        labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") == component:
            return labels
    raise AssertionError(f"no {component} pod")


def test_policies_let_the_console_reach_redis_and_only_console_clients_reach_it() -> None:
    policies = of_kind("NetworkPolicy").values()
    console, redis = pod_labels("console"), pod_labels("redis")
    assert selects(
        of_kind("NetworkPolicy")["wecom-bus-default-deny"]["spec"]["podSelector"], console
    )
    egress = [
        rule
        for p in policies
        if selects(p["spec"]["podSelector"], console)
        for rule in p["spec"].get("egress", [])
        if any("podSelector" in peer and selects(peer["podSelector"], redis) for peer in rule["to"])
    ]
    assert [r["ports"] for r in egress] == [[{"protocol": "TCP", "port": 6379}]]
    into_redis = [
        peer
        for p in policies
        if selects(p["spec"]["podSelector"], redis)
        for rule in p["spec"].get("ingress", [])
        for peer in rule["from"]
        if "podSelector" in peer and "namespaceSelector" not in peer
    ]
    assert any(selects(peer["podSelector"], console) for peer in into_redis)
    (own,) = [p for p in policies if p["metadata"]["name"] == "wecom-bus-console"]
    (rule,) = own["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8083}]
    assert rule["from"][0]["podSelector"]["matchLabels"] == {"wecom-bus.io/console-client": "true"}
