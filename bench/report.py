"""The results as one console table, as Markdown for the README, and checked against the goals.

``python -m bench.report [bench/results.json]`` prints the Markdown table of a saved run.
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["console", "load", "markdown", "targets", "topology_rows"]

LABELS = {
    "bare": "bare Starlette, empty 200 (HTTP stack bound)",
    "verify": "Starlette: verify + decrypt (our crypto)",
    "asgi": "plain ASGI: verify + decrypt (the baseline)",
    "usual": "usual: FastAPI + Tencent-style crypto + reply",
    "ingress": "wecom-bus ingress, Redis's CPU included",
}
SERVICES = ("ingress", "responder", "sender", "fake-wecom")
END_TO_END = ("ingress", "responder", "sender", "redis")
Row = tuple[str, str, str, bool | None]


def _get(results: dict[str, Any], *path: str | int, default: Any = None) -> Any:
    node: Any = results
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return default
    return node


def _measured_rates(results: dict[str, Any]) -> list[dict[str, Any]]:
    runs = _get(results, "pipeline", "e2e", "rates", default=[])
    return [dict(run) for run in runs if "skipped" not in run]


def _e2e_at(results: dict[str, Any], rate: int) -> dict[str, Any] | None:
    return next((run for run in _measured_rates(results) if run["rate"] == rate), None)


def baseline_ms(results: dict[str, Any]) -> float | None:
    """CPU ms per callback of the plain-ASGI verify+decrypt receiver in this run."""
    found = _get(results, "pipeline", "baseline_cpu_ms")
    found = found or _get(results, "ingress", "baseline_cpu_ms")
    return float(found) if found else None


def rate_baseline_ms(results: dict[str, Any], rate: int) -> float | None:
    """CPU ms per callback of the same receiver under the end-to-end run's load at ``rate``
    (open loop, one callback at a time), when this run measured it."""
    found = _get(results, "pipeline", "baseline_at_rate_cpu_ms", str(rate))
    return float(found) if found else None


def _unit(results: dict[str, Any], rate: int) -> float | None:
    """What the CPU figures at ``rate`` are expressed in: the baseline at that rate, else at its
    peak (a run saved before the same-rate baseline was measured)."""
    return rate_baseline_ms(results, rate) or baseline_ms(results)


def _times(ms: float, base: float | None) -> str:
    return f"{ms:.3f} ms ({ms / base:.1f}×)" if base else f"{ms:.3f} ms"


def _both(ms: float, results: dict[str, Any], rate: int) -> str:
    """``ms`` in units of the same-rate baseline and, after it, of the baseline at its peak."""
    at_rate, peak = rate_baseline_ms(results, rate), baseline_ms(results)
    if at_rate and peak:
        return f"{ms:.3f} ms ({ms / at_rate:.1f}×; {ms / peak:.1f}× peak)"
    return _times(ms, at_rate or peak)


def _cpu_rows(results: dict[str, Any]) -> list[Row]:
    """The CPU goals at each measured rate, in ms and in units of the baseline at that rate
    (and at its peak)."""
    rows: list[Row] = []
    for run in _measured_rates(results):
        cpu, rate = run["cpu_ms_per_message"], run["rate"]
        base = _unit(results, rate)
        e2e = run.get("end_to_end_cpu_ms", sum(cpu.get(k, 0.0) for k in END_TO_END))
        checks = (
            ("end-to-end CPU per message", e2e, "≤ 6× baseline", 6 * base if base else None),
            ("sender CPU per send", cpu.get("sender"), "≤ 0.3 ms", 0.3),
            ("responder CPU per event", cpu.get("responder"), "≤ 0.1 ms", 0.1),
        )
        for what, value, target, limit in checks:
            label = f"{what} at {rate}/s"
            if value is None or limit is None:
                rows.append((label, target, "not measured", None))
            elif not run.get("sustained"):  # a backlog shares round trips: cheaper, not better
                rows.append((label, target, _both(value, results, rate) + ", not sustained", False))
            else:
                rows.append((label, target, _both(value, results, rate), value <= limit))
    return rows


def targets(results: dict[str, Any]) -> list[Row]:
    """(what, target, measured, met) for each goal; met is None when not measured."""
    rows: list[Row] = []

    def add(what: str, target: str, value: Any, fmt: str, ok: Callable[[Any], bool]) -> None:
        if value is None:
            rows.append((what, target, "not measured", None))
        else:
            rows.append((what, target, format(value, fmt), ok(value)))

    ratios = _get(results, "ingress", "ratios", default={})
    add(
        "ingress / plain-ASGI verify+decrypt",
        "≥ 0.80",
        ratios.get("ingress_vs_asgi"),
        ".2f",
        lambda v: v >= 0.8,
    )
    add(
        "ingress / Starlette verify+decrypt",
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
    rows += _cpu_rows(results)
    at1000 = _e2e_at(results, 1000)
    add("1000 msg/s sustained", "yes", at1000 and at1000["sustained"], "", lambda v: v is True)
    for rate, pct, limit in ((1000, "p99", 100), (500, "p50", 10), (500, "p99", 50)):
        run = _e2e_at(results, rate)
        add(
            f"{pct} callback → message/send at {rate}/s",
            f"≤ {limit} ms",
            run and run["latency_ms"][pct],
            ".1f",
            partial(operator.ge, limit),
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
        "  (req/CPU-s: 200s per CPU second of the server itself (the ingress: and of Redis); every"
        " figure the median of the rounds; × bare: median of same-round ratios; core: CPU share)",
        f"  ingress at half of peak, open loop at {half['rps']:.0f}/s: p50 / p90 / p99 / max "
        f"{_ms(half['latency_ms'], 'p50', 'p90', 'p99', 'max')} ms "
        f"(server had {half['server_cpu_share']:.0%} of its core; medians of rounds with p99 "
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


CPU_ROWS = (*END_TO_END, "end to end", "fake-wecom")
BASELINE_ROW = "baseline"  # the plain-ASGI receiver's own CPU per callback at that rate


def cpu_table(results: dict[str, Any]) -> list[tuple[str, list[tuple[float, float | None]]]]:
    """Per process (and the end-to-end sum), per measured rate: (CPU ms per message, × the
    baseline at that rate); last, the baseline itself at each rate, when measured.

    The fake WeCom is shown but not counted: it stands in for WeCom's servers.
    """
    runs = _measured_rates(results)
    table = []
    for name in CPU_ROWS:
        cells: list[tuple[float, float | None]] = []
        for run in runs:
            cpu, base = run["cpu_ms_per_message"], _unit(results, run["rate"])
            ms = sum(cpu.get(k, 0.0) for k in END_TO_END) if name == "end to end" else cpu.get(name)
            ms = float(ms or 0.0)
            cells.append((ms, ms / base if base else None))
        table.append((name, cells))
    at_rate = [rate_baseline_ms(results, run["rate"]) for run in runs]
    if all(at_rate):
        table.append((BASELINE_ROW, [(float(ms or 0.0), 1.0) for ms in at_rate]))
    return table


def _cpu_lines(results: dict[str, Any]) -> list[str]:
    base, runs = baseline_ms(results), _measured_rates(results)
    if not runs:
        return []
    peak = f"{base:.3f} ms" if base else "not measured"
    out = [
        "",
        "CPU per message, end to end, by process: ms (× the plain-ASGI verify+decrypt receiver's"
        " CPU per callback under the same load: open loop at that rate, its row 'baseline'; at"
        f" its peak, closed loop on one core, it costs {peak}); Redis and services from /proc",
        "  " + f"{'process':<12}" + "".join(f"{str(run['rate']) + ' msg/s':>21}" for run in runs),
    ]
    for name, cells in cpu_table(results):
        text = "".join(
            f"{ms:>13.3f} ({ratio:>4.1f}×)" if ratio is not None else f"{ms:>20.3f}"
            for ms, ratio in cells
        )
        out.append(f"  {name:<12}{text}")
    work = [(run["rate"], run.get("redis_per_message")) for run in runs]
    out.append(
        "  Redis per message, reads (≈ round trips) / commands: "
        + ", ".join(f"{r} msg/s {w['reads']:.1f} / {w['commands']:.1f}" for r, w in work if w)
    )
    if woken := wake_rows(results):
        text = ", ".join(f"{rate} msg/s {cells}" for rate, cells in woken)
        out.append(f"  wake-ups per message (voluntary context switches), {WAKES}: {text}")
    return out


WAKES = "ingress / responder / sender / Redis"


def wake_rows(results: dict[str, Any]) -> list[tuple[int, str]]:
    """Per measured rate, the wake-ups per message of each process, in the order of WAKES."""
    names, runs = ("ingress", "responder", "sender", "redis"), _measured_rates(results)
    woken = [(run["rate"], run.get("wakeups_per_message")) for run in runs]
    return [(r, " / ".join(f"{w.get(n, 0.0):.1f}" for n in names)) for r, w in woken if w]


def _pipeline_lines(pipe: dict[str, Any]) -> list[str]:
    out = [
        "",
        "End to end (callback → fake WeCom's message/send), all services, nothing pinned",
        f"  {'msg/s':>6} {'sent':>6} {'deliv.':>7} {'refused':>7}  p50 / p99 / max ms      "
        "sustained",
    ]
    for run in pipe["e2e"]["rates"]:
        if "skipped" in run:
            out.append(f"  {run['rate']:>6}  not measured: {run['skipped']}")
            continue
        out.append(
            f"  {run['rate']:>6} {run['sent']:>6} {run['delivered']:>7} {run['ack_errors']:>7}  "
            f"{_ms(run['latency_ms'], 'p50', 'p99', 'max'):<22}  {run['sustained']}"
        )
    c, g = pipe["consumers"], pipe["gettoken"]
    for kind, unit in (("responder", "events/s"), ("sender", "sends/s")):
        out.append(
            f"  {kind} alone: 1 process {c[kind]['1']['per_second']:.0f} {unit}, 2 processes "
            f"{c[kind]['2']['per_second']:.0f} (× {c[kind]['ratio_2_to_1']:.2f}), "
            f"{c[kind]['1']['entries']} entries each"
        )
    rss = pipe["e2e"]["rss_mb_idle"]
    out += [
        f"  gettoken at a cold start: {g['senders']} senders, {g['sends']} sends → "
        f"{g['gettoken_calls']} call(s) (all sent: {g['all_sent']})",
        "  idle RSS: " + ", ".join(f"{n} {rss[n]:.0f} MB" for n in SERVICES if n in rss),
    ]
    return out


def topology_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Per Redis topology: ingress alone (callbacks/s, p50 / p99), then end to end (delivered
    msg/s, p50 / p99 callback → message/send, CPU per message with Redis's share, once)."""
    topo, base = results.get("topology") or {}, baseline_ms(results)
    ingress, runs = topo.get("ingress", {}), _get(topo, "e2e", "runs", default={})
    rows = []
    for label in dict.fromkeys([*ingress, *runs]):
        alone, run = ingress.get(label), runs.get(label)
        cells = [
            label,
            f"{alone['rps']:.0f}, {_ms(alone['latency_ms'], 'p50', 'p99')}" if alone else "-",
        ]
        if run:
            cpu, work = run["cpu_ms_per_message"], run.get("redis_per_message")
            reads = f", {work['reads']:.1f} Redis reads" if work else ""
            once = f"{run['delivered']} of {run['sent']}, {run.get('duplicates', 0)} twice"
            if other := run.get("other_requests"):
                once += f", {other} resent (WeCom's duplicate check)"
            cells += [
                f"{run.get('delivered_per_s', 0.0):.0f}",
                _ms(run["latency_ms"], "p50", "p99"),
                "yes" if run["sustained"] else "no",
                f"{_times(run['end_to_end_cpu_ms'], base)}, Redis {cpu.get('redis', 0.0):.3f} ms"
                f"{reads}",
                once,
            ]
        else:
            cells += ["-"] * 5
        rows.append(tuple(cells))
    return rows


def _topology_lines(results: dict[str, Any]) -> list[str]:
    e2e = _get(results, "topology", "e2e", default={})
    out = [
        "",
        "Redis topologies: the ingress alone (closed loop, callbacks/s, p50 / p99 ms), then end to "
        f"end at {e2e.get('rate', '-')} msg/s for {e2e.get('seconds', '-')} s (delivered msg/s, "
        "p50 / p99 ms callback → message/send, sustained, CPU per message of ingress + responder + "
        "sender + every Redis node (× the baseline at its peak), delivered once)",
    ]
    for row in topology_rows(results):
        out.append(f"  {row[0]:<31} {row[1]:>19} | {row[2]:>4} {row[3]:>15} {row[4]:>3}  {row[5]}")
        out.append(f"  {'':<31} {row[6]}")
    return out


def console(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    out = [
        f"wecom-bus bench ({results.get('mode')}) — {m.get('nproc')} CPUs ({m.get('cpu_model')}),"
        f" Python {m.get('python')}, load average at start {m.get('loadavg_at_start', [0])[0]:.2f}"
    ]
    if ing := results.get("ingress"):
        out += _ingress_lines(ing, results["plan"])
    if pipe := results.get("pipeline"):
        out += _pipeline_lines(pipe)
    out += _cpu_lines(results)
    if results.get("topology"):
        out += _topology_lines(results)
    out += ["", "Goals"]
    for what, target, value, ok in targets(results):
        mark = "—" if ok is None else ("met" if ok else "MISSED")
        out.append(f"  {what:<42} {target:>14}  {value:>20}  {mark}")
    out.append(f"\nfinished in {results.get('seconds', 0):.0f} s")
    return "\n".join(out)


def markdown(results: dict[str, Any]) -> str:
    """The README's tables: receivers, CPU per message by process, Redis topologies, goals."""
    rows = []
    if ing := results.get("ingress"):
        rows += [
            "| receiver (one core) | callbacks per CPU-second | × bare | p50 / p90 / p99 ms |",
            "| --- | ---: | ---: | --- |",
        ]
        for kind, label in LABELS.items():
            run = ing["runs"][kind]
            rows.append(
                f"| {label} | {run['capacity']:.0f} | {ing['ratios'][kind]:.2f} | "
                f"{_ms(run['latency_ms'], 'p50', 'p90', 'p99')} |"
            )
        rows.append("")
    if runs := _measured_rates(results):
        rows.append("| CPU per message | " + " | ".join(f"{r['rate']} msg/s" for r in runs) + " |")
        rows.append("| --- |" + " ---: |" * len(runs))
        for name, cells in cpu_table(results):
            text = " | ".join(
                f"{ms:.3f} ms ({ratio:.1f}×)" if ratio is not None else f"{ms:.3f} ms"
                for ms, ratio in cells
            )
            rows.append(f"| {name} | {text} |")
        if woken := wake_rows(results):
            rows.append(f"| wake-ups per message ({WAKES}) | {' | '.join(c for _, c in woken)} |")
        rows.append("")
    if topology := topology_rows(results):
        e2e = _get(results, "topology", "e2e", default={})
        rows += [
            "| Redis topology | ingress alone: callbacks/s, p50 / p99 ms | end to end at "
            f"{e2e.get('rate')} msg/s: delivered msg/s | p50 / p99 ms | sustained | CPU per "
            "message (× baseline at its peak) | delivered once |",
            "| --- | ---: | ---: | --- | --- | --- | --- |",
        ]
        rows += ["| " + " | ".join(row) + " |" for row in topology]
        rows.append("")
    rows += ["| goal | target | measured | |", "| --- | --- | --- | --- |"]
    for what, target, value, ok in targets(results):
        mark = "—" if ok is None else ("met" if ok else "**missed**")
        rows.append(f"| {what} | {target} | {value} | {mark} |")
    return "\n".join(rows)


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = msgspec.json.decode(path.read_bytes())
    return loaded


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results.json")
    print(markdown(load(target)))
