"""The monitoring component: alerts tested by the real promtool, a dashboard whose queries parse
and whose metrics the running services really export.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it these
tests skip, saying so, except in CI (``CI`` set), where a missing promtool is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.kustomize import K8S, ROOT, of_kind
from tests.system import running_system

Obj = dict[str, Any]

DOCS = ROOT / "docs" / "operations.md"
DASHBOARD = K8S / "components" / "monitoring" / "dashboards" / "wecom-bus.json"
ALERT_TESTS = Path(__file__).parent / "promtool" / "alerts.test.yml"
LAYOUT = "overlays/example"

# redis_exporter's names for what the Redis alerts read (oliver006/redis_exporter,
# exporter/exporter.go and info.go): the bundled Redis's sidecar exports them.
EXPORTER = {
    "redis_up",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_instance_info",
    "redis_aof_enabled",
    "redis_aof_last_write_status",
}
# Everything operators were promised an alert for (docs/operations.md, "Alerts").
REQUIRED_ALERTS = {
    "WecomCallbacksRefused",
    "WecomCallbacksRedisUnavailable",
    "WecomAckLatencyHigh",
    "WecomGroupLagGrowing",
    "WecomPendingGrowing",
    "WecomDeadLetters",
    "WecomEntriesLost",
    "WecomSendsIpNotTrusted",
    "WecomSendsRateLimited",
    "WecomSendsFailing",
    "WecomCircuitOpen",
    "WecomGettokenFailing",
    "WecomRedisMemoryNearMax",
    "WecomBackgroundTaskDown",
}
# Grafana's variables, replaced by values that keep the query's meaning for the parser.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*", "$app": ".*"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found (Debian package prometheus; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return found


def run_promtool(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{output}"
    return output


def rule_groups() -> list[Obj]:
    (rule,) = of_kind(LAYOUT, "PrometheusRule").values()
    groups: list[Obj] = rule["spec"]["groups"]
    return groups


def alerts() -> list[Obj]:
    return [r for group in rule_groups() for r in group["rules"] if "alert" in r]


def dashboard() -> Obj:
    data: Obj = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def panel_queries() -> list[str]:
    return [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]


def substituted(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in matchers and grouping clauses) or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set(re.findall(r"(?<![\w:.])([a-zA-Z_:][\w:]*)\b(?!\s*\()", expr))
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        fenced ^= line.lstrip().startswith("```")
        if not fenced and (match := re.match(r"#{1,6} (.+)", line)):
            text = re.sub(r"[^\w\- ]", "", match[1].strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


# ------------------------------------------------------------------ alerts


def test_alerts_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups()}, allow_unicode=True), "utf-8")
    checked = run_promtool("check", "rules", str(rules), cwd=tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in checked
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    tested = run_promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
    assert "SUCCESS" in tested


def test_promtool_unit_tests_catch_a_broken_alert(tmp_path: Path) -> None:
    groups = rule_groups()
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "WecomSendsIpNotTrusted":
                rule["expr"] = rule["expr"].replace('"60020"', '"60021"')
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}), "utf-8")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run(
        [promtool(), "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "WecomSendsIpNotTrusted" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_the_promised_ones_exist() -> None:
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names)) >= 6
    assert set(names) >= REQUIRED_ALERTS, REQUIRED_ALERTS - set(names)
    cases = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in cases
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == set(names), set(names) ^ fired


def test_every_alert_has_severity_summary_description_and_a_runbook() -> None:
    anchors = github_anchors(DOCS.read_text(encoding="utf-8"))
    for alert in alerts():
        name = alert["alert"]
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        assert annotations["summary"].strip() and len(annotations["description"]) > 40, name
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no heading for {name}"


# ------------------------------------------------------------------ dashboard


def test_dashboard_is_delivered_as_a_configmap_for_the_grafana_sidecar() -> None:
    maps = of_kind(LAYOUT, "ConfigMap")
    delivered = maps["wecom-bus-dashboard"]
    assert delivered["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(delivered["data"]["wecom-bus.json"]) == dashboard()
    panels = dashboard()["panels"]
    assert len(panels) >= 8 and all(p["targets"] for p in panels)
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("callbacks", "latency", "lag", "pending", "processed", "dead letters"):
        assert topic in titles, topic
    for topic in ("errcode", "delayed", "gettoken", "governor", "circuit"):
        assert topic in titles, topic
    assert {v["name"] for v in dashboard()["templating"]["list"]} == {
        "datasource",
        "namespace",
        "app",
    }


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)}
        for i, expr in enumerate(panel_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), "utf-8")
    checked = run_promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(rules)} rules found" in checked
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x", "expr": "sum(("}]}]}),
        "utf-8",
    )
    with pytest.raises(AssertionError, match="parse error"):
        run_promtool("check", "rules", str(path), cwd=tmp_path)


COUNTER_FUNCTIONS = r"\b(?:rate|irate|increase|resets)\(\s*([a-zA-Z_:][\w:]*)"
GAUGE_FUNCTIONS = r"\b(?:delta|deriv|idelta|predict_linear)\(\s*([a-zA-Z_:][\w:]*)"
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


def test_counter_functions_read_counters_and_gauge_functions_gauges() -> None:
    """rate/increase of a gauge, or delta of a counter, parse fine and mean nothing: each
    function reads the metric type it is made for (counters end in _total, or are a
    histogram's _bucket/_count/_sum)."""
    queries = [alert["expr"] for alert in alerts()] + panel_queries()
    counters = {m for q in queries for m in re.findall(COUNTER_FUNCTIONS, q)}
    gauges = {m for q in queries for m in re.findall(GAUGE_FUNCTIONS, q)}
    assert "wecom_sender_sends_total" in counters and "wecom_stream_group_lag" in gauges
    assert {m for m in counters if not m.endswith(COUNTER_SUFFIXES)} == set()
    assert {m for m in gauges if m.endswith(COUNTER_SUFFIXES)} == set()


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="y", le!="1"}[5m]))) '
        "/ on (app) group_left max(b_total offset 5m) and bool c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


# ------------------------------------------------------------------ names against a scrape


def exported_names(text: str) -> set[str]:
    """Every series name a /metrics page can carry: the samples and, for metrics without any
    sample yet, what their TYPE line promises (counter _total, histogram _bucket/_sum/_count)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            base = name.removesuffix("_total")
            names.update(base + suffix for suffix in suffixes.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def scraped(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The names the three services export, from GET /metrics of the running processes."""
    with running_system(redis_url, tmp_path_factory.mktemp("scrape")) as system:
        names: set[str] = set()
        for service in ("ingress", "responder", "sender"):
            response = httpx.get(system.url(service, "/metrics"), timeout=10)
            assert response.status_code == 200, service
            names |= exported_names(response.text)
        yield names


@pytest.mark.slow
def test_every_metric_the_dashboard_and_alerts_read_is_exported(scraped: set[str]) -> None:
    assert {"wecom_ingress_callbacks_total", "wecom_sender_sends_total"} <= scraped
    used_by_dashboard = {n for expr in panel_queries() for n in metric_names(substituted(expr))}
    variables = dashboard()["templating"]["list"]
    used_by_dashboard |= {
        m[1] for v in variables if (m := re.match(r"label_values\((\w+),", v.get("definition", "")))
    }
    assert used_by_dashboard - scraped == set(), used_by_dashboard - scraped
    used_by_alerts = {n for alert in alerts() for n in metric_names(alert["expr"])}
    assert used_by_alerts - scraped <= EXPORTER, used_by_alerts - scraped
    assert used_by_alerts & EXPORTER == EXPORTER  # and nothing of the exporter is unused


# ------------------------------------------------------------------ docker compose


def compose_monitoring() -> dict[str, Obj]:
    services: dict[str, Obj] = yaml.safe_load(
        (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    )["services"]
    return {n: s for n, s in services.items() if s.get("profiles") == ["monitoring"]}


def bind_mounts(service: Obj) -> dict[str, Path]:
    """Container path → file of this checkout, for the service's ./-relative bind mounts."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_ = volume.split(":")
        if source.startswith("./"):
            mounts[target] = ROOT / source
            assert mounts[target].is_file(), f"{source} does not exist"
    return mounts


def test_compose_monitoring_profile_is_optional_and_complete() -> None:
    monitoring = compose_monitoring()
    assert set(monitoring) == {"redis-exporter", "prometheus", "grafana"}
    config = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for target in targets:
        name, port = target.split(":")
        command = services[name]["command"]
        argv = " ".join(command)
        assert f"--port {port}" in argv or f"--web.listen-address=:{port}" in argv, target
    assert {t.split(":")[0] for t in targets} == {
        "ingress",
        "responder",
        "sender",
        "redis-exporter",
    }
    exporter = " ".join(monitoring["redis-exporter"]["command"])
    assert "--check-single-streams=wecom:events,wecom:outbox,wecom:deadletter" in exporter


def test_compose_prometheus_loads_the_prometheusrule_alerts(tmp_path: Path) -> None:
    prometheus = compose_monitoring()["prometheus"]
    mounts = bind_mounts(prometheus)
    assert prometheus["entrypoint"] == ["/bin/sh", "-c"]
    (command,) = prometheus["command"]
    extract, _, start = command.replace("$$", "$").partition(" && exec ")
    rules = tmp_path / "wecom-bus.rules.yml"
    extract = extract.replace("/tmp/wecom-bus.rules.yml", str(rules))
    for target, source in mounts.items():
        extract = extract.replace(target, str(source))
    subprocess.run(["sh", "-c", extract], check=True, timeout=30)
    source = mounts["/etc/wecom-bus/prometheusrule.yaml"]
    assert yaml.safe_load(rules.read_text()) == yaml.safe_load(source.read_text())["spec"]
    assert f"SUCCESS: {len(alerts())} rules found" in run_promtool(
        "check", "rules", str(rules), cwd=tmp_path
    )
    config = yaml.safe_load(mounts["/etc/wecom-bus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/tmp/wecom-bus.rules.yml"]
    assert "--config.file=/etc/wecom-bus/prometheus.yml" in start.split()
    config["rule_files"] = [str(rules)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), "utf-8")
    run_promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_compose_grafana_provisions_the_dashboard() -> None:
    grafana = compose_monitoring()["grafana"]
    mounts = bind_mounts(grafana)
    provider_file = mounts["/etc/grafana/provisioning/dashboards/wecom-bus.yml"]
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    (dashboard_target,) = [t for t, s in mounts.items() if s == DASHBOARD]
    assert Path(dashboard_target).parent == Path(provider["options"]["path"])
    sources = yaml.safe_load(
        mounts["/etc/grafana/provisioning/datasources/wecom-bus.yml"].read_text()
    )["datasources"]
    (source,) = sources
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert source["url"] == "http://prometheus:9090"
