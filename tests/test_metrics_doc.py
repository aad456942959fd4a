"""docs/metrics.md lists exactly the metrics the services export, and no others."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

from prometheus_client import REGISTRY

import services
import shared

DOC = Path(__file__).parent.parent / "docs" / "metrics.md"


def exported() -> set[str]:
    """Every wecom_* metric registered once every module of the services is imported."""
    for package in (shared, services):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("wecom_"):
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def documented() -> list[str]:
    return re.findall(r"^\| `(wecom_[a-z_]+)` \|", DOC.read_text(encoding="utf-8"), re.M)


def test_the_metric_table_lists_exactly_the_exported_metrics() -> None:
    table = documented()
    assert len(table) == len(set(table)), "a metric is listed twice"
    assert set(table) == exported()


def test_shared_state_queries_use_max_not_sum() -> None:
    text = DOC.read_text(encoding="utf-8")
    for gauge in ("wecom_stream_group_lag", "wecom_stream_group_pending"):
        assert f"max by (stream, group) ({gauge})" in text
        assert f"sum by (stream, group) ({gauge})" not in text


ROOT = Path(__file__).parent.parent
METRIC = re.compile(r"^\w+\s*=\s*(?:Counter|Gauge|Histogram|Summary)\(", re.M)


def test_metrics_are_defined_only_in_a_metrics_module() -> None:
    outside = {
        str(path.relative_to(ROOT))
        for package in ("shared", "services")
        for path in (ROOT / package).rglob("*.py")
        if path.name != "metrics.py" and METRIC.search(path.read_text("utf-8"))
    }
    assert outside == set()
