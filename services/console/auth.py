"""Who may use the console: a key, a signed session cookie, and a CSRF token for every POST.

With ``CONSOLE_API_KEY`` set, ``/login`` compares the typed key in constant time and sets the
cookie ``wbc_session`` = ``<session id>.<issued>.<HMAC>``: HttpOnly, SameSite=Strict, never the
key itself. The HMAC key is derived from ``CONSOLE_API_KEY``, so every replica accepts the
cookie and changing the key logs everyone out. Sessions last :data:`SESSION_SECONDS`.

Without a key the console only runs on localhost (``wecom-bus console`` refuses otherwise); then
a visitor gets a session at once, signed with a per-process random key, and requests must name a
loopback ``Host`` (a page of another site that rebinds its name to 127.0.0.1 gets 403).

Every POST carries ``csrf`` = HMAC(session id): a page of another site can neither read it nor
send the cookie (SameSite=Strict), so it cannot replay or drop anything.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from services.console.layout import View, language

__all__ = ["COOKIE", "SESSION_SECONDS", "Access", "Session", "guarded"]

COOKIE = "wbc_session"
SESSION_SECONDS = 12 * 3600
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

Endpoint = Callable[[Request, View], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str
    new: bool  # issued on this request: the response must set the cookie


class Access:
    """The console's key (or none: localhost only) and the session signing derived from it."""

    def __init__(self, key: str | None) -> None:
        self.required = key is not None
        self._key = key.encode() if key is not None else b""
        seed = self._key if key is not None else os.urandom(32)
        self._signing = hmac.new(seed, b"wecom-bus console session", hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"Access(required={self.required})"

    def key_matches(self, given: str) -> bool:
        return self.required and hmac.compare_digest(given.encode(), self._key)

    def _sign(self, text: str) -> str:
        return hmac.new(self._signing, text.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> Session:
        session_id = secrets.token_urlsafe(16)
        return Session(session_id, self._sign(f"csrf:{session_id}"), new=True)

    def cookie_value(self, session: Session, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{session.id}.{issued}.{self._sign(f'{session.id}.{issued}')}"

    def session(self, request: Request, now: float | None = None) -> Session | None:
        """The request's valid session, or None (missing, forged, or expired)."""
        session_id, _, rest = request.cookies.get(COOKIE, "").partition(".")
        issued, _, signature = rest.partition(".")
        if not (session_id and issued.isdigit() and signature):
            return None
        if not hmac.compare_digest(signature, self._sign(f"{session_id}.{issued}")):
            return None
        if (time.time() if now is None else now) - int(issued) > SESSION_SECONDS:
            return None
        return Session(session_id, self._sign(f"csrf:{session_id}"), new=False)

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        """The session cookie; ``Secure`` too when the console is reached over HTTPS."""
        response.set_cookie(
            COOKIE,
            self.cookie_value(session),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

    def check_host(self, request: Request) -> None:
        """Without a key, only loopback names may reach us (DNS rebinding)."""
        if self.required:
            return
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name not in _LOOPBACK_HOSTS:
            raise HTTPException(403, "this console (no CONSOLE_API_KEY) answers loopback only")


async def csrf_ok(request: Request, session: Session) -> bool:
    form = await request.form()
    given = form.get("csrf")
    return isinstance(given, str) and hmac.compare_digest(given, session.csrf)


def guarded(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an endpoint: a session is required (login page otherwise), POSTs need the CSRF
    token, and the endpoint gets a :class:`View` (language, CSRF token, path)."""

    async def run(request: Request) -> Response:
        access: Access = request.app.state.access
        access.check_host(request)
        session = access.session(request)
        if session is None and access.required:
            if request.method != "GET":
                raise HTTPException(401, "log in first")
            query = urlencode({"next": request.url.path})
            return RedirectResponse(f"/login?{query}", status_code=303)
        if session is None:
            session = access.issue()
        if request.method == "POST" and (session.new or not await csrf_ok(request, session)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and retry")
        view = View(language(request), session.csrf, request.url.path, access.required)
        response = await endpoint(request, view)
        if session.new:
            access.set_cookie(request, response, session)
        if (lang := request.query_params.get("lang")) in ("en", "zh"):
            response.set_cookie("lang", str(lang), samesite="strict", max_age=365 * 86_400)
        return response

    return run
