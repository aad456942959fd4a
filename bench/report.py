"""The results as one console table, as Markdown for the README, and checked against the targets
in the README's performance table.

``python -m bench.report [bench/results.json]`` prints the Markdown table of a saved run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["console", "load", "markdown", "targets"]

LABELS = {
    "bare": "bare Starlette, empty 200 (HTTP stack bound)",
    "verify": "minimal Starlette: verify + decrypt (our crypto)",
    "usual": "usual: FastAPI + Tencent-style crypto + reply",
    "ingress": "wecom-bus ingress (+ Redis dedup/XADD)",
}
SERVICES = ("ingress", "responder", "sender", "fake-wecom")


def _get(results: dict[str, Any], *path: str | int, default: Any = None) -> Any:
    node: Any = results
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def _e2e_at(results: dict[str, Any], rate: int) -> dict[str, Any] | None:
    for run in _get(results, "pipeline", "e2e", "rates", default=[]):
        if run["rate"] == rate and "skipped" not in run:
            return dict(run)
    return None


def targets(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, met) per target of the README's performance table.

    met is None when not measured.
    """
    rows: list[tuple[str, str, str, bool | None]] = []

    def add(what: str, target: str, value: Any, fmt: str, ok: Callable[[Any], bool]) -> None:
        if value is None:
            rows.append((what, target, "not measured", None))
        else:
            rows.append((what, target, format(value, fmt), ok(value)))

    ratios = _get(results, "ingress", "ratios", default={})
    add(
        "ingress / verify+decrypt",
        "≥ 0.60",
        ratios.get("ingress_vs_verify"),
        ".2f",
        lambda v: v >= 0.6,
    )
    add(
        "ingress / usual receiver",
        "≥ 3×",
        ratios.get("ingress_vs_usual"),
        ".2f",
        lambda v: v >= 3.0,
    )
    add(
        "ingress p99 ack at half of peak",
        "≤ 10 ms",
        _get(results, "ingress", "half_peak", "latency_ms", "p99"),
        ".1f",
        lambda v: v <= 10,
    )
    at500 = _e2e_at(results, 500)
    add(
        "end to end p50 at 500 msg/s",
        "≤ 10 ms",
        at500 and at500["latency_ms"]["p50"],
        ".1f",
        lambda v: v <= 10,
    )
    add(
        "end to end p99 at 500 msg/s",
        "≤ 50 ms",
        at500 and at500["latency_ms"]["p99"],
        ".1f",
        lambda v: v <= 50,
    )
    add(
        "gettoken calls, cold start",
        "1",
        _get(results, "pipeline", "gettoken", "gettoken_calls"),
        "d",
        lambda v: v == 1,
    )
    rss = _get(results, "pipeline", "e2e", "rss_mb_idle", default={})
    for name in SERVICES[:3]:
        add(f"idle RSS, {name}", "≤ 80 MB", rss.get(name), ".0f", lambda v: v <= 80)
    return rows


def _ms(latency: dict[str, float] | None, *keys: str) -> str:
    if not latency:
        return "-"
    return " / ".join(f"{latency[k]:.1f}" for k in keys)


def _ingress_lines(ing: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    cores = ing["cores"]
    where = (
        f"server on CPU {cores['server'][0]}, generator and Redis on CPU {cores['load'][0]}"
        if cores["server"]
        else "nothing pinned (fewer than 2 CPUs)"
    )
    out = [
        "",
        f"Ingress on one core ({where}); {plan['connections']} connections, "
        f"{plan['duration']:g} s after {plan['warmup']:g} s warm-up, {plan['rounds']} round(s)",
        f"  {'receiver':<49} {'req/CPU-s':>9} {'× bare':>6} {'req/s':>7} {'core':>5}"
        "  p50 / p90 / p99 ms",
    ]
    for kind, label in LABELS.items():
        run = ing["runs"][kind]
        out.append(
            f"  {label:<49} {run['capacity']:>9.0f} {ing['ratios'][kind]:>6.2f} "
            f"{run['rps']:>7.0f} {run['server_cpu_share']:>5.0%}  "
            f"{_ms(run['latency_ms'], 'p50', 'p90', 'p99')}"
        )
    half, fs, w, r = ing["half_peak"], ing["fsync"], ing["workers"], ing["redis"]
    gen = ing["generator"]
    raw = gen["raw_responder"]
    out += [
        "  (req/CPU-s: answered per CPU second of the server itself, median of rounds; × bare:"
        " median of same-round ratios; req/s, latency: best round; core: its CPU share then)",
        f"  ingress at half of peak, open loop at {half['rps']:.0f}/s: p50 / p90 / p99 / max "
        f"{_ms(half['latency_ms'], 'p50', 'p90', 'p99', 'max')} ms "
        f"(server had {half['server_cpu_share']:.0%} of its core; median round by p99 of "
        f"{', '.join(f'{v:.1f}' for v in half.get('rounds_p99', []))})",
        f"  appendfsync always {fs['always']['rps']:.0f} req/s vs everysec "
        f"{fs['everysec']['rps']:.0f} req/s: × {fs['ratio_always_to_everysec']:.2f}",
        "  server unpinned (2 cores; generator, Redis stay on theirs): "
        f"1 worker {w['1']['rps']:.0f} req/s, "
        f"2 workers {w['2']['rps']:.0f} req/s: × {w['ratio_2_to_1']:.2f}",
        f"  Redis per callback: {r['round_trips_per_callback']:.2f} round trip(s) "
        f"({', '.join(r['from_client'])}), {r['commands_per_callback']:.2f} commands "
        f"(inside the script: {', '.join(r['inside_scripts']) or 'none'})",
        f"  generator: {raw['rps']:.0f} req/s against a raw responder using "
        f"{raw['cpu_util']:.0%} of its core (ceiling ≈ {gen['ceiling_rps_per_core']:.0f} req/s); "
        f"bare app at 2× connections {gen['bare_at_2x_concurrency']['rps']:.0f} req/s "
        f"({gen['bare_at_2x_concurrency']['rps_per_cpu']:.0f} req/CPU-s)",
    ]
    return out


def console(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    out = [
        f"wecom-bus bench ({results.get('mode')}) — {m.get('nproc')} CPUs ({m.get('cpu_model')}),"
        f" Python {m.get('python')}, load average at start {m.get('loadavg_at_start', [0])[0]:.2f}"
    ]
    ing = results.get("ingress")
    if ing:
        out += _ingress_lines(ing, results["plan"])
    pipe = results.get("pipeline")
    if pipe:
        out += [
            "",
            "End to end (callback → fake WeCom's message/send), all services, nothing pinned",
            f"  {'msg/s':>6} {'sent':>6} {'deliv.':>7}  p50 / p99 / max ms      sustained",
        ]
        for run in pipe["e2e"]["rates"]:
            if "skipped" in run:
                out.append(f"  {run['rate']:>6}  not measured: {run['skipped']}")
                continue
            out.append(
                f"  {run['rate']:>6} {run['sent']:>6} {run['delivered']:>7}  "
                f"{_ms(run['latency_ms'], 'p50', 'p99', 'max'):<22}  {run['sustained']}"
            )
        c, g = pipe["consumers"], pipe["gettoken"]
        for kind, unit in (("responder", "events/s"), ("sender", "sends/s")):
            out.append(
                f"  {kind}: 1 process {c[kind]['1']['per_second']:.0f} {unit}, 2 processes "
                f"{c[kind]['2']['per_second']:.0f} (× {c[kind]['ratio_2_to_1']:.2f}), "
                f"{c[kind]['1']['entries']} entries each"
            )
        rss = pipe["e2e"]["rss_mb_idle"]
        out += [
            f"  gettoken at a cold start: {g['senders']} senders, {g['sends']} sends → "
            f"{g['gettoken_calls']} call(s) (all sent: {g['all_sent']})",
            "  idle RSS: " + ", ".join(f"{n} {rss[n]:.0f} MB" for n in SERVICES if n in rss),
        ]
    out += ["", "performance targets"]
    for what, target, value, ok in targets(results):
        mark = "—" if ok is None else ("met" if ok else "MISSED")
        out.append(f"  {what:<36} {target:>8}  {value:>12}  {mark}")
    out.append(f"\nfinished in {results.get('seconds', 0):.0f} s")
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    rows = ["| measure | figure | target |", "| --- | --- | --- |"]
    ing = results.get("ingress")
    if ing:
        for kind, label in LABELS.items():
            run = ing["runs"][kind]
            rows.append(
                f"| {label}, req/s (× bare; p50/p99 ms) | {run['rps']:.0f} "
                f"({ing['ratios'][kind]:.2f}×; {_ms(run['latency_ms'], 'p50', 'p99')}) | |"
            )
    for what, target, value, _ok in targets(results):
        rows.append(f"| {what} | {value} | {target} |")
    return "\n".join(rows)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = msgspec.json.decode(path.read_bytes())
    return loaded


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json")
    print(markdown(load(target)))
