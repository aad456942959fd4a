"""The read-only pages: overview (traffic and consumer groups), sends, token."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from services.console import queries
from services.console.html import Html, age, html, join, stamp
from services.console.layout import View, page
from shared.bus import sendstate
from shared.config import Settings
from shared.wecom import circuit
from shared.wecom.errors import classify

__all__ = ["chart", "overview", "sends", "token"]

_REQUEST_ID = re.compile(r"[\w.:#@-]{1,200}")


def chart(values: Sequence[int], failed: Sequence[int] = (), *, label: str) -> Html:
    """Bars of one value per minute as inline SVG (failed ones in red on top)."""
    width, height, bar = 240, 48, 4
    top = max([*values, 1])
    bars = []
    for i, value in enumerate(values):
        h = math.ceil(value / top * height) if value else 0
        bad = failed[i] if i < len(failed) else 0
        hb = math.ceil(bad / top * height) if bad else 0
        for cls, size in (("", h), ("bad", hb)):
            if size:
                bars.append(
                    html(
                        '<rect class="{c}" x="{x}" y="{y}" width="3" height="{h}"/>',
                        c=cls, x=i * bar, y=height - size, h=size,
                    )
                )  # fmt: skip
    return html(
        '<svg class="chart" viewBox="0 0 {w} {h}" preserveAspectRatio="none" role="img" '
        'aria-label="{label}"><title>{label}</title>{bars}</svg>',
        w=width,
        h=height,
        label=label,
        bars=join(bars),
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return "> 1 s" if value == float("inf") else f"{value:.1f} ms"


def _app_card(view: View, item: queries.Traffic) -> Html:
    calls, sent = sum(item.callbacks), sum(item.sends)
    return html(
        '<section class="card app" data-app="{app}"><h2>{app_label} <code>{app}</code></h2>'
        '<div class="charts"><figure><figcaption>{cl} · {hour}: <b class="n-callbacks">{calls}'
        "</b></figcaption>{c1}{axis}</figure>"
        '<figure><figcaption>{sl} · {hour}: <b class="n-sends">{sent}</b>, {fl} {failed}'
        "</figcaption>{c2}{axis}</figure></div>"
        "<p>{ack}: {mean} {ml} · {p99} {pl}</p></section>",
        app=item.app,
        app_label=view.t("app"),
        cl=view.t("callbacks_min"),
        sl=view.t("sends_min"),
        fl=view.t("failed"),
        hour=view.t("last_hour"),
        calls=calls,
        sent=sent,
        failed=sum(item.failed),
        c1=chart(item.callbacks, label=view.t("callbacks_min")),
        c2=chart(item.sends, item.failed, label=view.t("sends_min")),
        axis=html(
            '<div class="axis"><span>−60 min</span><span>{now}</span></div>', now=view.t("now")
        ),
        ack=view.t("ack"),
        mean=_ms(item.ack_mean_ms),
        ml=view.t("mean"),
        p99=_ms(item.ack_p99_ms),
        pl=view.t("p99"),
    )


def _group_row(view: View, g: queries.GroupInfo) -> Html:
    consumers = join(
        html(
            "<li><code>{n}</code> {p} · {idle} {i}</li>",
            n=c.name, p=c.pending, idle=view.t("idle"), i=age(c.idle),
        )
        for c in g.consumers
    )  # fmt: skip
    oldest = (
        html("<code>{id}</code> ({a})", id=g.oldest_id, a=age(g.oldest_age))
        if g.oldest_id
        else view.t("none")
    )
    return html(
        '<tr data-group="{group}" data-stream="{stream}"><td data-label="{sl}">{stream}</td>'
        '<td data-label="{gl}"><b>{group}</b></td><td class="lag" data-label="{ll}">{lag}</td>'
        '<td class="pending" data-label="{pl}">{pending}</td>'
        '<td data-label="{cl}"><ul class="consumers">{consumers}</ul></td>'
        '<td data-label="{ol}">{oldest}</td></tr>',
        stream=g.stream,
        group=g.group,
        lag="?" if g.lag is None else g.lag,
        pending=g.pending,
        consumers=consumers or Html(view.t("none")),
        oldest=oldest,
        sl=view.t("stream"),
        gl=view.t("group"),
        ll=view.t("lag"),
        pl=view.t("pending"),
        cl=view.t("consumers"),
        ol=view.t("oldest"),
    )


def table(view: View, heads: Sequence[str], rows: Sequence[Html], cls: str = "") -> Html:
    return html(
        '<table class="{cls}"><thead><tr>{heads}</tr></thead><tbody>{rows}</tbody></table>',
        cls=cls,
        heads=join(html("<th>{h}</th>", h=view.t(h) if h else "") for h in heads),
        rows=join(rows),
    )


async def overview(request: Request, view: View) -> Response:
    redis, settings = request.app.state.redis, request.app.state.settings
    apps = await queries.traffic(redis, settings)
    groups = await queries.groups(redis, settings.prefix)
    body = html(
        '<div class="cards">{cards}</div><h2>{gt}</h2>{groups}',
        cards=join(_app_card(view, item) for item in apps),
        gt=view.t("groups"),
        groups=table(
            view,
            ("stream", "group", "lag", "pending", "consumers", "oldest"),
            [_group_row(view, g) for g in groups],
            "groups",
        ),
    )
    return HTMLResponse(page(view, view.t("overview"), body, refresh=5))


def _circuit_row(view: View, state: circuit.CircuitState) -> Html:
    return html(
        '<tr class="circuit {state}"><td>{app}</td><td>{state}</td><td>{reason}</td>'
        "<td>{since}</td><td>{until}</td></tr>",
        app=state.app,
        state=state.state,
        reason=" · ".join(
            str(x) for x in (state.reason, state.errcode, state.advice) if x is not None
        ),
        since=stamp(state.since),
        until=stamp(state.until),
    )


def _lookup(view: View, state: sendstate.MessageState | None, asked: str) -> Html:
    form = html(
        '<form method="get" action="/sends" class="lookup"><input name="id" value="{v}" '
        'placeholder="request id" aria-label="{l}"><button>{b}</button></form>',
        v=asked,
        l=view.t("lookup"),
        b=view.t("look"),
    )
    if not asked:
        return form
    if state is None:
        return html('{f}<p class="result missing">{m}</p>', f=form, m=view.t("not_found"))
    fields = [(k, v) for k, v in _state_fields(state) if v is not None]
    rows = join(html("<tr><th>{k}</th><td>{v}</td></tr>", k=k, v=v) for k, v in fields)
    return html('{f}<table class="result kv">{rows}</table>', f=form, rows=rows)


def _state_fields(state: sendstate.MessageState) -> list[tuple[str, object]]:
    return [
        ("status", state.status),
        ("until", stamp(state.until) if state.until else None),
        ("reason", state.reason),
        ("msgid", state.msgid),
        ("msgids", ", ".join(state.msgids) if state.msgids else None),
        ("response_code", state.response_code or None),
        ("errcode", state.errcode),
        ("advice", state.advice),
    ]


def _errcode_rows(view: View, traffic: Sequence[queries.Traffic]) -> list[Html]:
    rows = []
    for item in traffic:
        for code, n in sorted(item.by_errcode.items(), key=lambda kv: -kv[1]):
            advice = _advice(code)
            rows.append(html(
                '<tr><td data-label="{al}">{app}</td><td data-label="errcode">{code}</td>'
                '<td data-label="{cl}">{n}</td><td>{advice}</td></tr>',
                app=item.app, code=code, n=n, advice=advice,
                al=view.t("app"), cl=view.t("count"),
            ))  # fmt: skip
    return rows


def _advice(code: str) -> str:
    """The operator sentence for a WeCom errcode (none for 0 and ``unavailable``)."""
    if code == "0" or not code.lstrip("-").isdigit():
        return ""
    return classify(int(code))(int(code)).advice


async def sends(request: Request, view: View) -> Response:
    redis, settings = request.app.state.redis, request.app.state.settings
    asked = request.query_params.get("id", "").strip()
    if asked and not _REQUEST_ID.fullmatch(asked):
        raise HTTPException(400, "a request id is 1-200 letters, digits and . : # @ _ -")
    state = await sendstate.read(redis, settings.prefix, asked) if asked else None
    total, waiting = await queries.delayed_queue(redis, settings.prefix)
    now = time.time()
    delayed_rows = [
        html(
            '<tr><td><a href="/sends?id={id}"><code>{id}</code></a></td><td>{app}</td>'
            "<td>{to}</td><td>{until} (+{left})</td><td>{reason}</td></tr>",
            id=d.request_id, app=d.app, to=d.to, until=stamp(d.due),
            left=age(d.due - now), reason=d.reason,
        )
        for d in waiting
    ]  # fmt: skip
    circuits = [await circuit.read(redis, settings.prefix, app) for app in settings.apps]
    traffic = await queries.traffic(redis, settings)
    body = html(
        "<h2>{lt}</h2>{lookup}<h2>{dt} ({total})</h2>{delayed}<h2>{ct}</h2>{circuits}"
        "<h2>{et}</h2>{errcodes}",
        lt=view.t("lookup"),
        lookup=_lookup(view, state, asked),
        dt=view.t("delayed"),
        total=total,
        delayed=table(view, ("request", "app", "to", "until", "reason"), delayed_rows, "delayed")
        if delayed_rows
        else html("<p>{e}</p>", e=view.t("empty")),
        ct=view.t("circuits"),
        circuits=table(
            view,
            ("app", "state", "reason", "since", "until"),
            [_circuit_row(view, c) for c in circuits],
            "circuits",
        ),
        et=view.t("by_errcode"),
        errcodes=table(view, ("app", "code", "count", "advice"), _errcode_rows(view, traffic)),
    )
    return HTMLResponse(page(view, view.t("sends"), body), status_code=200)


async def token(request: Request, view: View) -> Response:
    redis, settings = request.app.state.redis, request.app.state.settings
    ttls = await queries.token_ttls(redis, settings)
    rows = [
        html(
            '<tr class="token" data-app="{app}"><td>{app}</td><td>{corp} / {agent}</td>'
            '<td class="cached">{cached}</td><td class="left">{left}</td></tr>',
            app=name,
            corp=_settings_app(settings, name)[0],
            agent=_settings_app(settings, name)[1],
            cached=view.t("yes") if ttl is not None else view.t("no"),
            left="∞" if ttl == float("inf") else age(ttl) if ttl is not None else "–",
        )
        for name, ttl in ttls.items()
    ]
    body = html(
        "<p>{note}</p>{table}",
        note=view.t("token_note"),
        table=table(view, ("app", "ids", "cached", "left"), rows, "tokens"),
    )
    return HTMLResponse(page(view, view.t("token"), body))


def _settings_app(settings: Settings, name: str) -> tuple[str, int]:
    app = settings.app(name)
    return app.corp_id, app.agent_id
