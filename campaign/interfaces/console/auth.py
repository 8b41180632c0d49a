"""Signing in and out of the console: the login form (with its own CSRF cookie, since there is
no session yet), the throttle's answer, the session cookie's attributes."""

from __future__ import annotations

import hmac
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from campaign.errors import LoginRefused, LoginThrottled
from campaign.interfaces.console.kit import (
    COOKIE,
    LOGIN_COOKIE,
    Console,
    Origin,
    origin,
    read_form,
    redirect,
    render,
)
from campaign.people import operators


def routes() -> list[Route]:
    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]


def _login_token(console: Console, nonce: str) -> str:
    return hmac.new(console.secret.encode(), b"login:" + nonce.encode(), "sha256").hexdigest()


def _safe_next(where: Origin, wanted: str) -> str:
    """Where to go after signing in: a path of the console only (never another site)."""
    if wanted.startswith("/") and not wanted.startswith(("//", "/\\")) and len(wanted) < 500:
        return wanted
    return "/"


async def login_form(request: Request, *, problem: str = "", status: int = 200) -> Response:
    console: Console = request.app.state.console
    where = request.state.origin = getattr(request.state, "origin", None) or origin(
        console, request
    )
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    fresh = not nonce or len(nonce) > 100
    if fresh:
        nonce = secrets.token_urlsafe(24)
    request.state.csrf = _login_token(console, nonce)
    page = render(
        request,
        "login.html",
        status=status,
        problem=problem,
        next=_safe_next(where, request.query_params.get("next", "")),
    )
    if fresh:
        page.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            secure=where.secure_cookie,
            samesite="lax",
            path=where.prefix or "/",
        )
    return page


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    where = request.state.origin = origin(console, request)
    fields, _ = await read_form(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not operators.csrf_matches(
        _login_token(console, nonce), fields.get("csrf_token", "")
    ):
        return render(request, "refused.html", status=403)
    try:
        signed = await run_in_threadpool(
            operators.sign_in,
            console.app.db,
            console.secret,
            fields.get("email", ""),
            fields.get("password", ""),
            client=where.client,
            now=console.app.clock.now(),
            policy=console.policy,
        )
    except LoginThrottled as exc:
        answer = await login_form(request, problem=exc.message, status=429)
        answer.headers["Retry-After"] = str(exc.retry_after_seconds)
        return answer
    except LoginRefused as exc:
        return await login_form(request, problem=exc.message, status=401)
    answer = redirect(request, _safe_next(where, fields.get("next", "")))
    answer.set_cookie(
        COOKIE,
        signed.session_token,
        max_age=int(console.policy.absolute.total_seconds()),
        httponly=True,
        secure=where.secure_cookie,
        samesite="lax",
        path=where.prefix or "/",
    )
    answer.delete_cookie(LOGIN_COOKIE, path=where.prefix or "/")
    return answer


async def logout(request: Request) -> Response:
    console: Console = request.app.state.console
    where = request.state.origin = origin(console, request)
    token = request.cookies.get(COOKIE, "")
    signed = await run_in_threadpool(
        operators.resume,
        console.app.db,
        console.secret,
        token,
        now=console.app.clock.now(),
        policy=console.policy,
    )
    if signed is not None:
        fields, _ = await read_form(request)
        if not operators.csrf_matches(signed.csrf_token, fields.get("csrf_token", "")):
            return render(request, "refused.html", status=403)
        await run_in_threadpool(
            operators.sign_out, console.app.db, token, signed.email, console.app.clock.now()
        )
    answer = redirect(request, "/login")
    answer.delete_cookie(COOKIE, path=where.prefix or "/")
    return answer
