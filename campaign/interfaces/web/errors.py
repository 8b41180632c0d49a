"""Errors to HTTP answers, in one table: a visitor's bad input is a 4xx in words, a database
that cannot take the request a 503 with Retry-After. Anything else is a bug: a bare 500,
never its text."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from campaign.errors import (
    BadInput,
    BadRequest,
    BodyTimeout,
    BodyTooLarge,
    CampaignError,
    DatabaseError,
    InvalidToken,
)
from campaign.interfaces.web.pages import Pages

log = logging.getLogger("campaign.web")

#: what a client is told to wait when the database cannot take its request (seconds).
RETRY_AFTER_SECONDS = 30


def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


def _message(exc: Exception) -> str:
    return exc.message if isinstance(exc, CampaignError) else str(exc)


async def invalid_link(request: Request, exc: Exception) -> Response:
    """A link that was altered, has expired or is not for this page: say so, offer the form."""
    return _pages(request).render(
        "error.html",
        400,
        heading="This link does not work",
        message=_message(exc),
        signup_link=True,
    )


async def body_too_large(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(_message(exc), 413)


async def body_too_slow(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(_message(exc), 408, headers={"Connection": "close"})


async def bad_input(request: Request, exc: Exception) -> Response:
    """The visitor's own mistake (or an attacker's): say what it is, in words, not code."""
    status = exc.status if isinstance(exc, BadRequest) else 422
    message = exc.message if isinstance(exc, BadInput) else "the request is not valid"
    if "json" in request.headers.get("content-type", "").lower():
        return JSONResponse({"error": message}, status)
    return _pages(request).render(
        "error.html", status, heading="That did not work", message=message
    )


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """Gone, read-only after a failover, full, or locked: nothing was stored, so ask the
    visitor (or the mailbox provider's one-click POST) to come back, never a 500."""
    log.warning("%s %s: %s", request.method, request.url.path, _message(exc))
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    if "application/json" in request.headers.get("content-type", ""):
        return JSONResponse({"error": "temporarily unavailable; try again"}, 503, headers)
    return _pages(request).render(
        "error.html",
        503,
        headers,
        heading="Please try again in a minute",
        message="We could not save that just now. Nothing was changed: please try again.",
    )


#: Starlette picks the entry of the most specific class in the error's MRO.
EXCEPTION_HANDLERS: Mapping[Any, Callable[[Request, Exception], Any]] = {
    InvalidToken: invalid_link,  # 400, the error page with the signup link
    BodyTooLarge: body_too_large,  # 413, plain text
    BodyTimeout: body_too_slow,  # 408, plain text, and the connection closed
    BadInput: bad_input,  # BadRequest's own status (400, 415), else 422
    DatabaseError: database_unavailable,  # 503 with Retry-After
}
