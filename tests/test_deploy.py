"""Offline checks of the deployment files: Dockerfile, docker-compose.yml, kustomize base/overlay.

Nothing here needs Docker, kustomize or a cluster. ``render`` below applies the few kustomize
features this repository uses (and fails on any other), every built-in Kubernetes object is
checked by kubernetes_validate against the newest schema it ships (strict: unknown fields fail),
and the CRDs and the compose file are checked against the schemas kept in deploy/schemas/.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import tomllib
import typing
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

import jsonschema  # no types-jsonschema in the dev extra
import kubernetes_validate
import msgspec
import pytest
import yaml
from dotenv import dotenv_values
from kubernetes_validate.utils import latest_version

from services.cli import build_parser
from shared import config

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
LAYOUTS = ("base", "overlays/example")
EXAMPLES = K8S / "examples"  # team behaviours applied next to the base (docs/consumers.md)
SERVICES = ("ingress", "responder", "sender")
# Which service may see each secret. test_secret_policy_matches_the_code keeps it complete.
SECRET_OWNER = {
    "WECOM_TOKEN": "ingress",
    "WECOM_ENCODING_AES_KEY": "ingress",
    "WECOM_SECRET": "sender",
    "SENDER_API_KEY": "sender",
}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json",
}
LABELS = ("name", "instance", "component", "part-of", "version")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


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


# ------------------------------------------------------------------ a tiny kustomize


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _split_image(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, None)


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    have = {"group": group, "version": version, "kind": obj["kind"], **obj["metadata"]}
    return all(have.get(key) == value for key, value in target.items())


def _merge(base: Obj, patch: Obj, where: str) -> None:
    """Strategic merge as kustomize does it for the fields we patch: maps merge, lists replace."""
    for key, value in patch.items():
        if key in {"containers", "initContainers", "env", "volumes", "volumeMounts", "ports"}:
            raise NotImplementedError(f"{where}: merge-by-key list {key!r} is not implemented")
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, where)
        else:
            base[key] = copy.deepcopy(value)


def _json_patch(obj: Obj, ops: list[Obj]) -> None:
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "replace":
            node[key]  # replace needs an existing value: KeyError or IndexError otherwise
            node[key] = op["value"]
        elif op["op"] == "add" and isinstance(node, dict):
            node[key] = op["value"]
        elif op["op"] == "remove":
            del node[key]
        else:
            raise NotImplementedError(op)


@cache
def render(layout: str) -> tuple[Obj, ...]:
    """``kustomize build`` for resources, patches, namespace and images; anything else fails."""
    directory = (K8S / layout).resolve()
    kust = load_yaml(directory / "kustomization.yaml")[0]
    unsupported = set(kust) - {"apiVersion", "kind", "namespace", "resources", "patches", "images"}
    assert not unsupported, f"{layout}: the test renderer does not implement {unsupported}"
    objects: list[Obj] = []
    for entry in kust.get("resources", []):
        path = directory / entry
        objects += (
            copy.deepcopy(list(render(str(path.relative_to(K8S)))))
            if path.is_dir()
            else (load_yaml(path))
        )
    for item in kust.get("patches", []):  # kustomize order: patches, namespace, images
        docs = load_yaml(directory / item["path"])
        assert len(docs) == 1, f"{item['path']}: 'patches' takes one patch per file"
        patch, target = docs[0], item.get("target")
        if isinstance(patch, list):
            hits = [o for o in objects if target and _matches(o, target)]
            for obj in hits:
                _json_patch(obj, patch)
        else:
            want = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
            hits = [o for o in objects if _matches(o, want)]
            for obj in hits:
                _merge(obj, patch, item["path"])
        assert hits, f"{item['path']}: the patch matches nothing"
    if namespace := kust.get("namespace"):
        for obj in objects:  # kustomize renames Namespace objects too
            obj["metadata"]["name" if obj["kind"] == "Namespace" else "namespace"] = namespace
    for rule in kust.get("images", []):
        for container in containers(objects):
            name, tag = _split_image(container["image"])
            if name == rule["name"]:
                container["image"] = f"{rule.get('newName', name)}:{rule.get('newTag', tag)}"
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), f"{layout}: duplicate objects"
    return tuple(objects)


def containers(objects: typing.Iterable[Obj]) -> Iterator[Obj]:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        yield from pod.get("containers", []) + pod.get("initContainers", [])


def example_objects() -> list[Obj]:
    return [obj for path in sorted(EXAMPLES.glob("*.yaml")) for obj in load_yaml(path)]


def of_kind(layout: str, kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in render(layout) if o["kind"] == kind}


def workloads(layout: str) -> dict[str, Obj]:
    """Deployments by component (ingress, responder, sender)."""
    deps = of_kind(layout, "Deployment").values()
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in deps}


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def configmap(layout: str) -> dict[str, str]:
    data: dict[str, str] = of_kind(layout, "ConfigMap")["wecom-bus-config"]["data"]
    return data


@cache
def validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(obj: Obj) -> None:
    if schema_file := CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"])):
        validator(schema_file).validate(obj)
    else:
        kubernetes_validate.validate(obj, latest_version(), strict=True)


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


# ------------------------------------------------------------------ validity


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_rendered_object_is_valid(layout: str) -> None:
    objects = render(layout)
    for obj in objects:
        validate(obj)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 3 and "StatefulSet" in kinds and "Ingress" in kinds
    assert ("ServiceMonitor" in kinds) == (layout != "base")  # scrape annotations in the base


def test_example_manifests_are_valid() -> None:
    objects = example_objects()
    assert any(o["kind"] == "Deployment" for o in objects)
    for obj in objects:
        validate(obj)


def test_schemas_reject_mistakes() -> None:
    scaled = copy.deepcopy(of_kind("base", "ScaledObject")["wecom-bus-sender"])
    scaled["spec"]["minReplicas"] = 1  # the HPA's spelling, not KEDA's
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    del scaled["spec"]["minReplicas"], scaled["spec"]["triggers"]
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    monitor = copy.deepcopy(of_kind("overlays/example", "ServiceMonitor")["wecom-bus"])
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)
    deployment = copy.deepcopy(workloads("base")["sender"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(jsonschema.ValidationError):
        validate(deployment)
    changes: list[Obj] = [{"enviroment": {}}, {"restart": "sometimes"}]
    for service_change in changes:
        broken = compose()
        broken["services"]["sender"].update(service_change)
        with pytest.raises(jsonschema.ValidationError):
            validator("compose-spec.json").validate(broken)


def test_compose_file_follows_the_specification() -> None:
    validator("compose-spec.json").validate(compose())
    assert compose()["services"]["fake-wecom"]["profiles"] == ["demo"]  # never in production


# ------------------------------------------------------------------ configuration drift


def test_every_variable_is_deployed_and_nothing_else() -> None:
    variables = config_variables()
    assert set(dotenv_values(ROOT / ".env.example")) == variables
    services = compose()["services"]
    seen: set[str] = set()
    for name in (*SERVICES, "fake-wecom"):
        # The fake WeCom also reads FAKE_WECOM_* (services/fakewecom/__main__.py), set here.
        env = services[name]["environment"]
        if name == "fake-wecom":
            env = {k: v for k, v in env.items() if not k.startswith("FAKE_WECOM_")}
        assert set(env) <= variables, f"{name}: {set(env) - variables} are read by no code"
        for key, value in env.items():
            assert value.startswith(f"${{{key}:-"), f"{name}: {key} is not taken from .env"
        seen |= set(env) if name != "fake-wecom" else set()
    assert seen == variables, f"compose gives no service {variables - seen}"
    assert "environment" not in services["redis"]
    example = {s["metadata"]["name"]: s for s in load_yaml(K8S / "base" / "secret.example.yaml")}
    secret_keys = {key for s in example.values() for key in s["stringData"]}
    for layout in LAYOUTS:
        plain = set(configmap(layout))
        assert plain | secret_keys == variables and not plain & secret_keys, layout
    assert secret_keys == set(SECRET_OWNER)


def test_secret_policy_matches_the_code() -> None:
    def secret_fields(struct: type[msgspec.Struct]) -> list[str]:
        fields = msgspec.structs.fields(struct)
        return [f.name for f in fields if config.Secret in typing.get_args(f.type)]

    app_vars = {config._ENV_APP_FIELDS[name] for name in secret_fields(config.AppSettings)}
    # Settings has one Secret of its own (sender_api_key, read from SENDER_API_KEY); a new one
    # must be classified in SECRET_OWNER before it ships.
    assert secret_fields(config.Settings) == ["sender_api_key"]
    assert set(SECRET_OWNER) == app_vars | {"SENDER_API_KEY"}


@pytest.mark.parametrize("service", SERVICES)
def test_secrets_reach_only_their_service(service: str) -> None:
    own = {key for key, owner in SECRET_OWNER.items() if owner == service}
    env = compose()["services"][service]["environment"]
    assert set(env) & set(SECRET_OWNER) == own
    for layout in LAYOUTS:
        (container,) = workloads(layout)[service]["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "wecom-bus-config"}}]
        refs = [e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])]
        assert {r["key"] for r in refs} == own
        assert {r["name"] for r in refs} <= {f"wecom-bus-{service}"}
        assert [e["name"] for e in container.get("env", [])] == [r["key"] for r in refs]
    if own:
        example = {
            s["metadata"]["name"]: s for s in load_yaml(K8S / "base" / "secret.example.yaml")
        }
        assert set(example[f"wecom-bus-{service}"]["stringData"]) == own


def test_secret_example_holds_only_placeholders_and_is_not_deployed() -> None:
    for secret in load_yaml(K8S / "base" / "secret.example.yaml"):
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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_configmap_is_a_valid_configuration(layout: str) -> None:
    settings = config.load_settings(configmap(layout))
    body = of_kind(layout, "Ingress")["wecom-bus-callback"]["metadata"]["annotations"]
    size = body["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert int(size.removesuffix("k")) * 1024 == settings.ingress_max_body
    if layout != "base":  # the base leaves the app's identity empty on purpose
        assert settings.app().agent_id > 0


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
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}
        name, tag = _split_image(container["image"])
        assert name.endswith("wecom-bus") and tag == VERSION
        port = int(container["args"][container["args"].index("--port") + 1])
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        sleep = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod["terminationGracePeriodSeconds"] > drain + sleep, component
        assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)


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
    namespace = deployments["sender"]["metadata"]["namespace"]
    for group, stream in (("responder", "events"), ("sender", "outbox")):
        spec = scaled[f"wecom-bus-{group}"]["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-streams"
        assert (meta["stream"], meta["consumerGroup"]) == (f"{prefix}:{stream}", group)
        assert {"lagCount", "pendingEntriesCount"} & set(meta)
        assert meta["address"] == f"redis.{namespace}.svc.cluster.local:6379"


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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_only_callback_is_public(layout: str) -> None:
    (ingress,) = of_kind(layout, "Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/callback", "Prefix")
    assert path["backend"]["service"] == {"name": "wecom-bus-ingress", "port": {"name": "http"}}
    (tls,) = ingress["spec"]["tls"]
    assert tls["hosts"] == [rule["host"]] and tls["secretName"]
    assert rule["host"].endswith(".invalid") == (layout == "base")  # the overlay sets the host
    assert (
        int(ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"])
        <= 5
    )  # WeCom's own limit


@pytest.mark.parametrize("layout", LAYOUTS)
def test_network_policies_grant_least_privilege(layout: str) -> None:
    policies = of_kind(layout, "NetworkPolicy")
    deny = policies["wecom-bus-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny
    pods = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in workloads(layout).items()}
    pods["redis"] = of_kind(layout, "StatefulSet")["redis"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert all(selects(deny["podSelector"], labels) for labels in pods.values())

    def rules(component: str, direction: str) -> list[Obj]:
        found = [
            r
            for p in policies.values()
            if p["metadata"]["name"] != "wecom-bus-allow-dns"
            and selects(p["spec"]["podSelector"], pods[component])
            for r in p["spec"].get(direction, [])
        ]
        return found

    def same_namespace_pods(rule: Obj, side: str, labels: dict[str, str]) -> bool:
        return any(
            "namespaceSelector" not in peer
            and "podSelector" in peer
            and selects(peer["podSelector"], labels)
            for peer in rule[side]
        )

    def namespaces(rule: Obj) -> set[str]:
        return {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            for peer in rule["from"]
            if peer.get("namespaceSelector", {}).get("matchLabels")
        }

    (ingress_rule,) = rules("ingress", "ingress")
    assert namespaces(ingress_rule) == {"ingress-nginx", "monitoring"}
    assert ingress_rule["ports"] == [{"protocol": "TCP", "port": 8080}]
    for component in SERVICES:
        egress = rules(component, "egress")
        to_redis = [r for r in egress if same_namespace_pods(r, "to", pods["redis"])]
        assert to_redis and to_redis[0]["ports"] == [{"protocol": "TCP", "port": 6379}]
        blocks = [p["ipBlock"] for r in egress for p in r["to"] if "ipBlock" in p]
        assert blocks == ([{"cidr": "0.0.0.0/0"}] if component == "sender" else []), component
    world = [r for r in rules("sender", "egress") if "ipBlock" in r["to"][0]]
    assert world[0]["ports"] == [{"protocol": "TCP", "port": 443}]
    (redis_rule,) = rules("redis", "ingress")
    callers = [c for c, labels in pods.items() if same_namespace_pods(redis_rule, "from", labels)]
    assert sorted(callers) == sorted(SERVICES)
    assert namespaces(redis_rule) == {"keda"}


# ------------------------------------------------------------------ Redis, compose, image


def test_redis_is_durable_everywhere() -> None:
    statefulset = of_kind("base", "StatefulSet")["redis"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
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
    argvs += [s["command"] for n, s in compose()["services"].items() if n != "redis"]
    argvs += [c["args"] for layout in LAYOUTS for c in containers(render(layout)) if "args" in c]
    argvs += [c["args"] for c in containers(example_objects()) if "args" in c]
    assert {argv[0] for argv in argvs} >= set(SERVICES)
    parser = build_parser()
    for argv in argvs:
        try:
            assert parser.parse_args(argv).command == argv[0]
        except SystemExit:
            pytest.fail(f"`wecom-bus {' '.join(argv)}` is not accepted by services/cli.py")
