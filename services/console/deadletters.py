"""Dead letters: the table, one letter's detail, and Replay / Drop (one, selected, or filtered).

All of it is ``shared.bus.deadletter.DeadLetters``, the library ``wecom-bus deadletter`` uses:
replay gives the entry back to the group that failed it, drop deletes the letter.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from services.console.html import Html, html, join, pretty_json, stamp
from services.console.layout import View, page
from services.console.views import table
from shared.bus.deadletter import DeadLetter, DeadLetters

__all__ = ["act", "detail", "listing"]

_FILTERS = ("group", "stream", "reason")
_LIMIT = 200


def _letters(request: Request) -> DeadLetters:
    settings = request.app.state.settings
    return DeadLetters(request.app.state.redis, settings.prefix, maxlen=settings.stream_maxlen)


def _filters(values: Any) -> dict[str, str]:
    return {k: str(values.get(k)).strip() for k in _FILTERS if str(values.get(k) or "").strip()}


def _errcode(letter: DeadLetter) -> Html:
    if letter.errcode is None:
        return Html("")
    return html("<b>{c}</b> {a}", c=letter.errcode, a=letter.advice or "")


def _row(view: View, letter: DeadLetter) -> Html:
    return html(
        '<tr class="letter" data-id="{id}"><td><input type="checkbox" name="ids" value="{id}" '
        'form="bulk" aria-label="{id}"></td><td data-label="{tl}"><a href="/deadletters/{id}">'
        '{time}</a></td><td data-label="{gl}">{stream} / <b>{group}</b></td>'
        '<td class="reason" data-label="{rl}">{reason}</td><td data-label="{el}">{errcode}</td>'
        '<td data-label="{al}">{attempts}</td></tr>',
        id=letter.id,
        time=stamp(letter.time),
        stream=letter.stream,
        group=letter.group,
        reason=letter.reason,
        errcode=_errcode(letter),
        attempts=letter.attempts,
        tl=view.t("time"),
        gl=view.t("group"),
        rl=view.t("reason"),
        el=view.t("errcode"),
        al=view.t("attempts"),
    )


def _bulk_form(view: View, filters: dict[str, str]) -> Html:
    hidden = join(
        html('<input type="hidden" name="f_{k}" value="{v}">', k=k, v=v) for k, v in filters.items()
    )
    buttons = join(
        html(
            '<button name="action" value="{a}" data-confirm="{c}" class="{a}">{label}</button>',
            a=action,
            c=view.t(f"confirm_{action.split('_')[0]}"),
            label=view.t(f"{action}_{scope}"),
        )
        for action, scope in (("replay", "selected"), ("drop", "selected"))
    )
    every = join(
        html(
            '<button name="action" value="{a}_filtered" data-confirm="{c}" class="{a}">'
            "{label}</button>",
            a=action,
            c=view.t(f"confirm_{action}"),
            label=view.t(f"{action}_all"),
        )
        for action in ("replay", "drop")
    )
    return html(
        '<form id="bulk" method="post" action="/deadletters/act" class="actions">{csrf}{hidden}'
        "{buttons}{every}</form>",
        csrf=view.csrf_field(),
        hidden=hidden,
        buttons=buttons,
        every=every,
    )


def _filter_form(view: View, filters: dict[str, str]) -> Html:
    fields = join(
        html(
            '<label>{label} <input name="{k}" value="{v}"></label>',
            label=view.t(k),
            k=k,
            v=filters.get(k, ""),
        )
        for k in _FILTERS
    )
    return html(
        '<form method="get" action="/deadletters" class="filters">{fields}<button>{b}</button>'
        "</form>",
        fields=fields,
        b=view.t("filter"),
    )


async def listing(request: Request, view: View) -> Response:
    letters = _letters(request)
    filters = _filters(request.query_params)
    found = await letters.list(limit=_LIMIT, **filters)  # type: ignore[arg-type]
    total = await letters.count()
    done = request.query_params.get("done", "")
    notice = html('<p class="notice">{d}: {t}</p>', d=view.t("done"), t=done) if done else Html("")
    rows = [_row(view, letter) for letter in reversed(found)]  # newest first
    heads = ("", "time", "group", "reason", "errcode", "attempts")
    body = html(
        '{notice}{filters}<p class="count">{n} {of} {total}</p>{bulk}{table}',
        notice=notice,
        filters=_filter_form(view, filters),
        n=len(found),
        of=view.t("shown_of"),
        total=total,
        bulk=_bulk_form(view, filters) if found else Html(""),
        table=table(view, heads, rows, "letters")
        if found
        else html('<p class="empty">{e}</p>', e=view.t("no_deadletters")),
    )
    return HTMLResponse(page(view, view.t("deadletters"), body))


async def detail(request: Request, view: View) -> Response:
    letter_id = request.path_params["id"]
    try:
        letter = await _letters(request).get(letter_id)
    except ValueError:
        raise HTTPException(400, f"{letter_id!r} is not a dead-letter id") from None
    if letter is None:
        raise HTTPException(404, "no such dead letter (replayed or dropped already?)")
    fields = [
        ("id", letter.id),
        ("time", stamp(letter.time)),
        ("stream", letter.stream),
        ("group", letter.group),
        ("entry", letter.entry_id),
        ("consumer", letter.consumer),
        ("attempts", letter.attempts),
        ("reason", letter.reason),
        ("errcode", _errcode(letter)),
    ]
    rows = join(
        html('<tr class="{k}"><th>{label}</th><td>{v}</td></tr>', k=k, label=_label(view, k), v=v)
        for k, v in fields
    )
    actions = html(
        '<form method="post" action="/deadletters/act" class="actions">{csrf}'
        '<input type="hidden" name="ids" value="{id}">'
        '<button name="action" value="replay" class="replay" data-confirm="{cr}">{r}</button>'
        '<button name="action" value="drop" class="drop" data-confirm="{cd}">{d}</button></form>',
        csrf=view.csrf_field(),
        id=letter.id,
        r=view.t("replay"),
        d=view.t("drop"),
        cr=view.t("confirm_replay"),
        cd=view.t("confirm_drop"),
    )
    body = html(
        '{actions}<table class="kv detail">{rows}</table><h2>{pl}</h2><pre class="payload">'
        "{data}</pre>",
        actions=actions,
        rows=rows,
        pl=view.t("payload"),
        data=pretty_json(letter.data),
    )
    return HTMLResponse(page(view, f"{view.t('deadletters')} {letter.id}", body))


def _label(view: View, key: str) -> str:
    return key if key == "id" else view.t(key)


async def act(request: Request, view: View) -> Response:
    """POST: ``action`` replay|drop with ``ids``, or replay_filtered|drop_filtered with the
    filters (``f_group``…) the table was shown with."""
    form = await request.form()
    action = str(form.get("action", ""))
    letters = _letters(request)
    if action in ("replay_filtered", "drop_filtered"):
        filters = _filters({k: form.get(f"f_{k}") for k in _FILTERS})
        ids = [letter.id for letter in await letters.list(limit=None, **filters)]  # type: ignore[arg-type]
        action = action.removesuffix("_filtered")
    elif action in ("replay", "drop"):
        ids = [str(i) for i in form.getlist("ids")]
        if not ids:
            raise HTTPException(400, "select at least one dead letter")
    else:
        raise HTTPException(400, "action must be replay or drop")
    try:
        if action == "replay":
            result = await letters.replay(ids)
            kept = [r.id for r in result.items if r.outcome == "nogroup"]
            summary = f"replayed {len(result.replayed)}, missing {len(result.missing)}"
            summary += f", kept {len(kept)} (group gone)" if kept else ""
        else:
            dropped = await letters.drop(ids)
            summary = f"dropped {len(dropped)}, missing {len(ids) - len(dropped)}"
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    return RedirectResponse(f"/deadletters?{urlencode({'done': summary})}", status_code=303)
