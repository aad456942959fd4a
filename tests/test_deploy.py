"""Offline checks of the deployment files: Dockerfile, docker-compose.yml, kustomize layouts.

Nothing here needs Docker or a cluster. Every layout is rendered by the real
``kubectl kustomize`` (tests/kustomize.py): the base, the example overlays and variants made of
the components. Built-in objects are validated by kubernetes_validate, custom resources by the
upstream CRDs in deploy/schemas/crds, the compose file by deploy/schemas/compose-spec.json.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import jsonschema  # no types-jsonschema in the dev extra
import msgspec
import pytest
import yaml
from dotenv import dotenv_values

from services.cli import build_parser
from shared import config
from tests.kustomize import (
    COMPLETE,
    CRDS,
    K8S,
    LAYOUTS,
    ROOT,
    components_of,
    containers,
    json_validator,
    load_yaml,
    objects,
    of_kind,
    render,
    render_components,
    selects,
    validate,
    workloads,
)

Obj = dict[str, Any]

EXAMPLES = K8S / "examples"  # team behaviours applied next to the base (docs/consumers.md)
SERVICES = ("ingress", "responder", "sender")
# Which service may see each secret. test_secret_policy_matches_the_code keeps it complete.
SECRET_OWNER = {
    "WECOM_TOKEN": "ingress",
    "WECOM_ENCODING_AES_KEY": "ingress",
    "WECOM_SECRET": "sender",
    "SENDER_API_KEY": "sender",
    "CONSOLE_API_KEY": "console",  # components/console, tests/test_deploy_console.py
}
SECRET_MOUNT = "/etc/wecom-bus/secrets"
REDIS_URL_FILE = "/etc/wecom-bus/redis/REDIS_URL"
LABELS = ("name", "instance", "component", "part-of", "version")
# The metadata KEDA's redis*-streams triggers read (KEDA v2.20, pkg/scalers/redis_streams_scaler.go
# and redis_scaler.go): the CRD leaves trigger metadata free-form, so a typo would pass it.
KEDA_STREAMS_METADATA = {
    "address",
    "addresses",
    "host",
    "hosts",
    "port",
    "ports",
    "sentinelMaster",
    "stream",
    "consumerGroup",
    "lagCount",
    "pendingEntriesCount",
    "streamLength",
    "activationLagCount",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def managed_redis(layout: str) -> bool:
    return "redis-managed" in components_of(layout)


# ------------------------------------------------------------------ the code's variables


def config_variables() -> set[str]:
    """Every variable shared/config.py reads. The module exposes no list, so its source is
    parsed: string literals passed to _get()/_number() plus the values of _ENV_APP_FIELDS."""
    tree = ast.parse(Path(config.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in {"_get", "_number"}:
            arg = node.args[1]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_ENV_APP_FIELDS":
            assert isinstance(node.value, ast.Dict)
            names.update(
                v.value
                for v in node.value.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
    assert {"REDIS_URL", "WECOM_CORP_ID", "WECOM_TOKEN", "BUS_DRAIN_TIMEOUT"} <= names, names
    return names


# ------------------------------------------------------------------ helpers


def example_objects() -> list[Obj]:
    return [obj for path in sorted(EXAMPLES.glob("*.yaml")) for obj in load_yaml(path)]


def configmap(layout: str) -> dict[str, str]:
    data: dict[str, str] = of_kind(layout, "ConfigMap")["wecom-bus-config"]["data"]
    return data


def secret_example() -> dict[str, Obj]:
    return {s["metadata"]["name"]: s for s in load_yaml(K8S / "base" / "secret.example.yaml")}


def compose() -> Obj:
    data: Obj = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def interpolate(value: str, env: dict[str, str | None]) -> str:
    """Compose's ${NAME:-default} (used when NAME is unset or empty); no other form is used."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+):-([^}]*)\}", value)
    assert match, f"unexpected compose value {value!r}"
    return env.get(match[1]) or match[2]


def dockerfile_stages() -> dict[str, list[str]]:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [line])
        elif line.strip() and not line.startswith("#"):
            current.append(line.strip())
    return stages


def file_secrets(deployment: Obj) -> dict[str, str]:
    """{variable: secret name} of every ``<NAME>_FILE`` the container reads, following the
    path to the Secret volume mounted there (and checking the file is one of its keys)."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
    found: dict[str, str] = {}
    for env in container.get("env", []):
        assert env["name"].endswith("_FILE") and "valueFrom" not in env, env
        directory, _, key = env["value"].rpartition("/")
        secret = mounts[directory]["secret"]
        assert mounts[directory] and key == env["name"].removesuffix("_FILE")
        assert all(item["key"] == item["path"] for item in secret.get("items", []))
        assert key in {item["key"] for item in secret.get("items", [])} or "items" not in secret
        assert secret["defaultMode"] == 0o440  # readable by the pod's group only
        found[key] = secret["secretName"]
    return found


# ------------------------------------------------------------------ validity


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_rendered_object_is_valid_and_managed(layout: str) -> None:
    rendered = objects(layout)
    for obj in rendered:
        validate(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kustomize", obj
    kinds = sorted(o["kind"] for o in rendered)
    assert kinds.count("Deployment") == 3
    assert ("StatefulSet" in kinds) == ("redis-bundled" in components_of(layout))
    routes = {"HTTPRoute": "gateway-api", "Ingress": "ingress-nginx"}
    for kind, component in routes.items():
        assert (kind in kinds) == (component in components_of(layout)), (layout, kind)
    monitoring = {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
    assert monitoring == ("monitoring" in components_of(layout))
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in rendered]
    assert len(keys) == len(set(keys)), f"{layout}: duplicate objects"


def test_the_example_overlay_uses_the_gateway_api_and_monitoring() -> None:
    assert components_of("overlays/example") == {"redis-bundled", "gateway-api", "monitoring"}
    (dashboard,) = [
        c
        for c in of_kind("overlays/example", "ConfigMap").values()
        if "wecom-bus.json" in c["data"]
    ]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_exclusive_components_cannot_be_combined() -> None:
    for pair in (("redis-bundled", "redis-managed"), ("gateway-api", "ingress-nginx")):
        with pytest.raises(AssertionError, match=r"wecom-bus-to-redis|wecom-bus-callback-route"):
            render_components(pair)


def test_example_manifests_are_valid() -> None:
    items = example_objects()
    assert any(o["kind"] == "Deployment" for o in items)
    for obj in items:
        validate(obj)


def test_crds_are_the_upstream_files_named_in_the_readme() -> None:
    readme = (CRDS / "README.md").read_text(encoding="utf-8")
    rows = {m[1]: m[0] for m in re.finditer(r"^\| `([^`]+\.yaml)` .*$", readme, re.M)}
    files = sorted(p.name for p in CRDS.glob("*.yaml"))
    assert sorted(rows) == files and len(files) == 6
    for name in files:
        (crd,) = load_yaml(CRDS / name)
        assert crd["kind"] == "CustomResourceDefinition"
        assert name == f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.yaml"
        annotations = crd["metadata"].get("annotations", {})
        for key in ("gateway.networking.k8s.io/bundle-version", "operator.prometheus.io/version"):
            if key in annotations:  # the release the file came from, as the README says
                assert annotations[key].lstrip("v") in rows[name], (name, annotations[key])


def test_schemas_reject_mistakes() -> None:
    scaled = of_kind("overlays/example", "ScaledObject")["wecom-bus-sender"]
    typo = copy.deepcopy(scaled)
    typo["spec"]["minReplicas"] = 1  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        validate(typo)
    del scaled["spec"]["triggers"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    monitor = of_kind("overlays/example", "ServiceMonitor")["wecom-bus"]
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    route = of_kind("overlays/example", "HTTPRoute")["wecom-bus-callback"]
    route["spec"]["rules"][0]["timeouts"]["request"] = "five seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(route)
    rule = of_kind("overlays/example", "PrometheusRule")["wecom-bus"]
    del rule["spec"]["groups"][0]["name"]
    with pytest.raises(jsonschema.ValidationError):
        validate(rule)
    auth = of_kind("overlays/sentinel-example", "TriggerAuthentication")["wecom-bus-redis"]
    auth["spec"]["secretTargetRef"][0]["secret"] = auth["spec"]["secretTargetRef"][0].pop("name")
    with pytest.raises(jsonschema.ValidationError):
        validate(auth)
    deployment = workloads("overlays/example")["sender"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)
    changes: list[Obj] = [{"enviroment": {}}, {"restart": "sometimes"}]
    for service_change in changes:
        broken = compose()
        broken["services"]["sender"].update(service_change)
        with pytest.raises(jsonschema.ValidationError):
            json_validator("compose-spec.json").validate(broken)


def test_compose_file_follows_the_specification() -> None:
    json_validator("compose-spec.json").validate(compose())
    assert compose()["services"]["fake-wecom"]["profiles"] == ["demo"]  # never in production


# ------------------------------------------------------------------ configuration drift


def test_every_variable_is_deployed_and_nothing_else() -> None:
    variables = config_variables()
    assert set(dotenv_values(ROOT / ".env.example")) == variables
    services = compose()["services"]
    seen: set[str] = set()
    for name in (*SERVICES, "console", "fake-wecom"):
        # The fake WeCom also reads FAKE_WECOM_* (devkit), set here.
        env = services[name]["environment"]
        if name == "fake-wecom":
            env = {k: v for k, v in env.items() if not k.startswith("FAKE_WECOM_")}
        assert set(env) <= variables, f"{name}: {set(env) - variables} are read by no code"
        for key, value in env.items():
            assert value.startswith(f"${{{key}:-"), f"{name}: {key} is not taken from .env"
        seen |= set(env) if name != "fake-wecom" else set()
    assert seen == variables, f"compose gives no service {variables - seen}"
    assert "environment" not in services["redis"]
    example = secret_example()
    secret_keys = {
        key
        for name in ("wecom-bus-ingress", "wecom-bus-sender", "wecom-bus-console")
        for key in example[name]["stringData"]
    }
    assert secret_keys == set(SECRET_OWNER)
    for layout in LAYOUTS:
        plain = set(configmap(layout))
        from_secrets = secret_keys | ({"REDIS_URL"} if managed_redis(layout) else set())
        assert plain | from_secrets == variables and not plain & from_secrets, layout


def test_secret_policy_matches_the_code() -> None:
    def secret_fields(struct: type[msgspec.Struct]) -> list[str]:
        fields = msgspec.structs.fields(struct)
        return [f.name for f in fields if config.Secret in typing.get_args(f.type)]

    app_vars = {config._ENV_APP_FIELDS[name] for name in secret_fields(config.AppSettings)}
    # Settings has Secrets of its own (sender_api_key, console_api_key); a new one must be
    # classified in SECRET_OWNER before it ships.
    assert secret_fields(config.Settings) == ["sender_api_key", "console_api_key"]
    assert set(SECRET_OWNER) == app_vars | {"SENDER_API_KEY", "CONSOLE_API_KEY"}
    assert set(SECRET_OWNER) | {"REDIS_URL"} <= set(config.SECRET_VARIABLES)  # _FILE forms


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("service", SERVICES)
def test_secrets_reach_only_their_service_as_files(layout: str, service: str) -> None:
    own = {key for key, owner in SECRET_OWNER.items() if owner == service}
    env = compose()["services"][service]["environment"]
    assert set(env) & set(SECRET_OWNER) == own
    deployment = workloads(layout)[service]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "wecom-bus-config"}}]
    expected = {key: f"wecom-bus-{service}" for key in own}
    if managed_redis(layout):
        expected["REDIS_URL"] = "wecom-bus-redis"
        assert {"name": "REDIS_URL_FILE", "value": REDIS_URL_FILE} in container["env"]
    assert file_secrets(deployment) == expected
    if own:
        assert set(secret_example()[f"wecom-bus-{service}"]["stringData"]) == own


def test_secret_example_holds_only_placeholders_and_is_not_deployed() -> None:
    example = secret_example()
    assert set(example) == {
        "wecom-bus-ingress",
        "wecom-bus-sender",
        "wecom-bus-console",
        "wecom-bus-redis",
    }
    assert set(example["wecom-bus-redis"]["stringData"]) == {"REDIS_URL", "REDIS_PASSWORD"}
    for secret in example.values():
        validate(secret)
        assert "data" not in secret
        for key, value in secret["stringData"].items():
            assert re.fullmatch(r"<[^<>]+>", value), f"{key} holds a value, not a placeholder"
    resources = load_yaml(K8S / "base" / "kustomization.yaml")[0]["resources"]
    assert "secret.example.yaml" not in resources
    assert all(o["kind"] != "Secret" for layout in LAYOUTS for o in render(layout))


@pytest.mark.parametrize("service", SERVICES)
def test_env_example_configures_each_compose_service(service: str) -> None:
    env = dotenv_values(ROOT / ".env.example")
    service_env = {
        key: interpolate(value, env)
        for key, value in compose()["services"][service]["environment"].items()
    }
    settings = config.load_settings(service_env)
    settings.require_redis()
    needs: dict[str, tuple[Literal["secret", "token", "encoding_aes_key"], ...]] = {
        "ingress": ("token", "encoding_aes_key"),
        "sender": ("secret",),
    }
    settings.require(*needs.get(service, ()))


@pytest.mark.parametrize("layout", COMPLETE)
def test_configmap_is_a_valid_configuration(layout: str) -> None:
    settings = config.load_settings(configmap(layout))
    if "ingress-nginx" in components_of(layout):
        body = of_kind(layout, "Ingress")["wecom-bus-callback"]["metadata"]["annotations"]
        size = body["nginx.ingress.kubernetes.io/proxy-body-size"]
        assert int(size.removesuffix("k")) * 1024 == settings.ingress_max_body
    if layout == "overlays/example":  # the others leave the app's identity empty on purpose
        assert settings.app().agent_id > 0
    if not managed_redis(layout):
        assert settings.require_redis() == "redis://redis:6379/0"


# ------------------------------------------------------------------ workloads


@pytest.mark.parametrize("layout", LAYOUTS)
def test_deployments_are_hardened_probed_and_labelled(layout: str) -> None:
    drain = float(configmap(layout)["BUS_DRAIN_TIMEOUT"])
    assert drain >= config.Settings().drain_timeout
    deployments = list(workloads(layout).items())
    if layout == "base":  # the examples run next to the base
        deployments += [
            (d["metadata"]["labels"]["app.kubernetes.io/component"], d)
            for d in example_objects()
            if d["kind"] == "Deployment"
        ]
    for component, deployment in deployments:
        meta, spec = deployment["metadata"], deployment["spec"]
        pod = spec["template"]["spec"]
        expected = {
            "name": "wecom-bus",
            "instance": "wecom-bus",
            "component": component,
            "part-of": "wecom-bus",
            "version": VERSION,
        }
        for labels in (meta["labels"], spec["template"]["metadata"]["labels"]):
            assert {k: labels[f"app.kubernetes.io/{k}"] for k in LABELS} == expected
        assert "app.kubernetes.io/version" not in spec["selector"]["matchLabels"]  # immutable
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }
        tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        assert any(m["mountPath"] == "/tmp" and m["name"] in tmp for m in container["volumeMounts"])
        assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] not in tmp)
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}
        name, tag = container["image"].rsplit(":", 1)
        assert name.endswith("wecom-bus") and tag == VERSION
        port = int(container["args"][container["args"].index("--port") + 1])
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod["terminationGracePeriodSeconds"] > drain + sleep, component
        assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def redis_address(layout: str) -> str:
    namespace = workloads(layout)["sender"]["metadata"]["namespace"]
    return f"redis.{namespace}.svc.cluster.local:6379"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_autoscalers_own_the_replica_counts(layout: str) -> None:
    deployments = workloads(layout)
    hpas, scaled = of_kind(layout, "HorizontalPodAutoscaler"), of_kind(layout, "ScaledObject")
    targets = [a["spec"]["scaleTargetRef"]["name"] for a in (*hpas.values(), *scaled.values())]
    assert sorted(targets) == sorted(d["metadata"]["name"] for d in deployments.values())
    assert all("replicas" not in d["spec"] for d in deployments.values())
    (hpa,) = hpas.values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "wecom-bus-ingress"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    prefix = configmap(layout)["BUS_PREFIX"]
    used = components_of(layout)
    kind = next((k for k in ("sentinel", "cluster") if f"keda-{k}" in used), None)
    auths = of_kind(layout, "TriggerAuthentication")
    for group, stream in (("responder", "events"), ("sender", "outbox")):
        spec = scaled[f"wecom-bus-{group}"]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert set(meta) <= KEDA_STREAMS_METADATA, set(meta) - KEDA_STREAMS_METADATA
        assert (meta["stream"], meta["consumerGroup"]) == (f"{prefix}:{stream}", group)
        assert {"lagCount", "pendingEntriesCount"} & set(meta)
        if kind is None:
            assert trigger["type"] == "redis-streams"
            if not managed_redis(layout):
                assert meta["address"] == redis_address(layout)
        else:
            assert trigger["type"] == f"redis-{kind}-streams" and "address" not in meta
            hosts = meta["addresses"].split(",")
            assert len(hosts) >= 2 and all(re.fullmatch(r"[a-z0-9.-]+:\d+", h) for h in hosts)
            assert ("sentinelMaster" in meta) == (kind == "sentinel")
        if "keda-auth" in used:
            (auth,) = auths.values()
            assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
            assert auth["spec"]["secretTargetRef"] == [
                {"parameter": "password", "name": "wecom-bus-redis", "key": "REDIS_PASSWORD"}
            ]
        else:
            assert "authenticationRef" not in trigger and not auths


@pytest.mark.parametrize("layout", LAYOUTS)
def test_services_and_budgets_select_their_pods(layout: str) -> None:
    pods = {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in render(layout)
        if o["kind"] in {"Deployment", "StatefulSet"}
    }
    for service in of_kind(layout, "Service").values():
        selector = {"matchLabels": service["spec"]["selector"]}
        (name,) = [n for n, t in pods.items() if selects(selector, t["metadata"]["labels"])]
        ports = {p["name"] for c in pods[name]["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for deployment in workloads(layout).values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        budgets = [
            p
            for p in of_kind(layout, "PodDisruptionBudget").values()
            if selects(p["spec"]["selector"], labels)
        ]
        assert len(budgets) == 1, deployment["metadata"]["name"]


def test_only_callback_is_public_through_the_gateway() -> None:
    (gateway,) = of_kind("overlays/example", "Gateway").values()
    (listener,) = gateway["spec"]["listeners"]
    assert (listener["protocol"], listener["port"], listener["tls"]["mode"]) == (
        "HTTPS",
        443,
        "Terminate",
    )
    assert listener["allowedRoutes"] == {"namespaces": {"from": "Same"}}
    (route,) = of_kind("overlays/example", "HTTPRoute").values()
    assert route["spec"]["parentRefs"] == [{"name": "wecom-bus", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == [listener["hostname"]] == ["wecom.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/callback"}}]
    assert rule["backendRefs"] == [{"name": "wecom-bus-ingress", "port": 8080}]
    assert float(rule["timeouts"]["request"].removesuffix("s")) <= 5  # WeCom's own limit


def test_only_callback_is_public_through_the_retired_ingress_nginx() -> None:
    (ingress,) = of_kind("variant:ingress-nginx", "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/callback", "Prefix")
    assert path["backend"]["service"] == {"name": "wecom-bus-ingress", "port": {"name": "http"}}
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    timeout = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
    assert int(timeout) <= 5  # WeCom's own limit


@pytest.mark.parametrize("layout", COMPLETE)
def test_network_policies_grant_least_privilege(layout: str) -> None:
    policies = of_kind(layout, "NetworkPolicy")
    deny = policies["wecom-bus-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    pods = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in workloads(layout).items()}
    if not managed_redis(layout):
        redis = of_kind(layout, "StatefulSet")["redis"]
        pods["redis"] = redis["spec"]["template"]["metadata"]["labels"]
    assert all(selects(deny["podSelector"], labels) for labels in pods.values())

    def rules(component: str, direction: str) -> list[Obj]:
        return [
            r
            for p in policies.values()
            if p["metadata"]["name"] != "wecom-bus-allow-dns"
            and selects(p["spec"]["podSelector"], pods[component])
            for r in p["spec"].get(direction, [])
        ]

    def namespaces(rule: Obj) -> set[str]:
        return {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in rule["from"]
            if peer.get("namespaceSelector", {}).get("matchLabels")
        }

    proxy = "ingress-nginx" if "ingress-nginx" in components_of(layout) else "envoy-gateway-system"
    callers = [namespaces(r) for r in rules("ingress", "ingress")]
    assert sorted(callers, key=sorted) == [{proxy}, {"monitoring"}]
    assert all(
        r["ports"] == [{"protocol": "TCP", "port": 8080}] for r in rules("ingress", "ingress")
    )
    for component in SERVICES:
        egress = rules(component, "egress")
        blocks = [p["ipBlock"]["cidr"] for r in egress for p in r["to"] if "ipBlock" in p]
        to_pods = [p["podSelector"] for r in egress for p in r["to"] if "podSelector" in p]
        if managed_redis(layout):
            redis_blocks = [b for b in blocks if b != "0.0.0.0/0"]
            assert to_pods == [] and redis_blocks == ["10.20.0.0/16"], component
        else:
            assert len(to_pods) == 1 and selects(to_pods[0], pods["redis"])
        world = [b for b in blocks if b == "0.0.0.0/0"]
        assert world == (["0.0.0.0/0"] if component == "sender" else []), component
    world_rules = [
        r
        for r in rules("sender", "egress")
        if r["to"][0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    ]
    assert world_rules[0]["ports"] == [{"protocol": "TCP", "port": 443}]
    if not managed_redis(layout):
        to_redis, scrape = rules("redis", "ingress")
        assert namespaces(to_redis) == {"keda"} and namespaces(scrape) == {"monitoring"}
        assert scrape["ports"] == [{"protocol": "TCP", "port": 9121}]
        inside = [p["podSelector"] for p in to_redis["from"] if "podSelector" in p]
        assert sorted(c for c in SERVICES if selects(inside[0], pods[c])) == sorted(SERVICES)


# ------------------------------------------------------------------ Redis, compose, image


def test_redis_is_durable_everywhere() -> None:
    statefulset = of_kind("overlays/example", "StatefulSet")["redis"]
    pod_containers = {c["name"]: c for c in statefulset["spec"]["template"]["spec"]["containers"]}
    container = pod_containers["redis"]
    for argv, image in (
        (container["command"], container["image"]),
        (compose()["services"]["redis"]["command"], compose()["services"]["redis"]["image"]),
    ):
        options = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert options["--appendonly"] == "yes" and options["--appendfsync"] == "always"
        assert options["--maxmemory-policy"] == "noeviction"
        version = re.fullmatch(r"redis:(\d+)\.(\d+)-alpine", image)
        assert version and (int(version[1]), int(version[2])) >= (6, 2)  # XAUTOCLAIM
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert "redis-data:/data" in compose()["services"]["redis"]["volumes"]


def test_the_bundled_redis_has_an_exporter_for_the_alerts() -> None:
    statefulset = of_kind("overlays/example", "StatefulSet")["redis"]
    pod_containers = {c["name"]: c for c in statefulset["spec"]["template"]["spec"]["containers"]}
    exporter = pod_containers["redis-exporter"]
    assert exporter["image"].startswith("oliver006/redis_exporter:v")
    args = dict(a.removeprefix("--").split("=", 1) for a in exporter["args"])
    assert args["redis.addr"] == "redis://127.0.0.1:6379"
    prefix = configmap("overlays/example")["BUS_PREFIX"]
    streams = {f"{prefix}:{s}" for s in ("events", "outbox", "deadletter")}
    assert set(args["check-single-streams"].split(",")) == streams
    assert exporter["ports"] == [{"name": "metrics", "containerPort": 9121, "protocol": "TCP"}]
    service = of_kind("overlays/example", "Service")["redis"]
    assert {"name": "metrics", "port": 9121, "targetPort": "metrics", "protocol": "TCP"} in (
        service["spec"]["ports"]
    )
    (monitor,) = of_kind("overlays/example", "ServiceMonitor").values()
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}


@pytest.mark.parametrize("service", SERVICES)
def test_compose_services_are_hardened_and_health_checked(service: str) -> None:
    spec = compose()["services"][service]
    assert spec["read_only"] is True and spec["tmpfs"][0].startswith("/tmp")
    assert spec["restart"] == "unless-stopped" and spec["cap_drop"] == ["ALL"]
    assert spec["depends_on"] == {"redis": {"condition": "service_healthy"}}
    port = spec["command"][spec["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/readyz" in spec["healthcheck"]["test"][-1]
    assert int(spec["stop_grace_period"].removesuffix("s")) > config.Settings().drain_timeout
    assert "profiles" not in spec


def test_dockerfile_builds_a_small_non_root_image() -> None:
    stages = dockerfile_stages()
    assert list(stages) == ["builder", "runtime"]
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert all(s[0].startswith("FROM ${PYTHON_IMAGE} AS ") for s in stages.values())
    assert "[ingress,responder,sender]" in " ".join(stages["builder"])
    final = stages["runtime"]
    copies = [line for line in final if line.startswith("COPY")]
    assert copies == ["COPY --from=builder /opt/wecom-bus /opt/wecom-bus"]
    runs = " ".join(line for line in final if line.startswith("RUN"))
    assert not re.search(r"\b(pip|apt-get|apk|gcc|make)\b", runs)
    assert "USER 10001:10001" in final
    assert re.search(r"PYTHONDONTWRITEBYTECODE=1", " ".join(final))
    (entrypoint,) = [line for line in final if line.startswith("ENTRYPOINT")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["wecom-bus"]
    (check,) = [line for line in final if line.startswith("HEALTHCHECK")]
    argv = json.loads(check[check.index("CMD ") + 4 :])  # exec form must be valid JSON
    assert argv[:2] == ["python", "-c"] and "/healthz" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", ".env", "tests", "deploy", "docs", "bench"} <= set(ignored)


def test_every_deployed_command_is_a_wecom_bus_command() -> None:
    stages = dockerfile_stages()
    (cmd,) = [line for line in stages["runtime"] if line.startswith("CMD")]
    argvs = [json.loads(cmd.removeprefix("CMD "))]
    argvs += [
        s["command"] for s in compose()["services"].values() if s.get("image") == "wecom-bus:local"
    ]
    argvs += [
        c["args"]
        for layout in LAYOUTS
        for c in containers(render(layout))
        if "args" in c and c["name"] != "redis-exporter"
    ]
    argvs += [c["args"] for c in containers(example_objects()) if "args" in c]
    assert {argv[0] for argv in argvs} >= set(SERVICES)
    parser = build_parser()
    for argv in argvs:
        try:
            assert parser.parse_args(argv).command == argv[0]
        except SystemExit:
            pytest.fail(f"`wecom-bus {' '.join(argv)}` is not accepted by services/cli.py")
