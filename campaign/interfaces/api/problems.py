"""The JSON API's errors as RFC 9457 problem details (application/problem+json), in one table:
bad input names its field, a database that cannot take the request is a 503 with Retry-After,
and anything else is a bare 500 that never shows its text."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from campaign.domain.subscriber_fields import FieldValueError, UnknownField
from campaign.errors import (
    BadInput,
    BadRequest,
    CampaignError,
    DatabaseError,
    InvalidAddress,
    Suppressed,
    UnknownSubscriber,
)

log = logging.getLogger("campaign.api")

MEDIA_TYPE = "application/problem+json"
#: what a client is told to wait when the database cannot take its request (seconds).
RETRY_AFTER_SECONDS = 30

#: problem type -> title. The type URIs are names, not pages (RFC 9457 3.1.1 allows that).
TITLES = {
    "validation": "The request is not valid",
    "bad-request": "The request cannot be read",
    "unsupported-media-type": "Send application/json",
    "too-large": "The request body is too large",
    "too-slow": "The request body came too slowly",
    "unauthorized": "A valid API key is needed",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "suppressed": "The address is suppressed",
    "rate-limited": "Too many requests",
    "unavailable": "Temporarily unavailable",
    "internal": "Internal error",
}


class FieldProblem(CampaignError):
    """A request field is not valid."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        #: (field, problem) pairs: a dotted body path or a query parameter's name.
        self.errors = list(errors)
        super().__init__("; ".join(f"{field}: {problem}" for field, problem in self.errors))


def problem(
    status: int,
    kind: str,
    detail: str,
    *,
    errors: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A problem details answer of `kind` (a key of TITLES)."""
    body: dict[str, object] = {
        "type": f"urn:campaign:problem:{kind}",
        "title": TITLES[kind],
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": field, "detail": text} for field, text in errors]
    return JSONResponse(body, status, dict(headers or {}), media_type=MEDIA_TYPE)


def unauthorized(detail: str) -> Response:
    return problem(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="campaign", error="invalid_token"'},
    )


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """pydantic's errors as (field, problem), the field a dotted path (`consent.at`)."""
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        field = prefix + ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "is not a field of this request"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        found.append((field, message))
    return found


def from_error(request: Request, exc: Exception) -> Response:
    """The answer to `exc`, raised while serving `request`: the one table."""
    if isinstance(exc, FieldProblem):
        return problem(422, "validation", exc.message, errors=exc.errors)
    if isinstance(exc, UnknownSubscriber):
        return problem(404, "not-found", exc.message)
    if isinstance(exc, Suppressed):
        return problem(409, "suppressed", exc.message)
    if isinstance(exc, InvalidAddress):
        return problem(422, "validation", exc.message, errors=[("email", exc.problem)])
    if isinstance(exc, FieldValueError | UnknownField):
        return problem(
            422, "validation", exc.message, errors=[(f"fields.{exc.field}", exc.problem)]
        )
    if isinstance(exc, BadRequest):
        kinds = {413: "too-large", 408: "too-slow", 415: "unsupported-media-type"}
        return problem(exc.status, kinds.get(exc.status, "bad-request"), exc.message)
    if isinstance(exc, BadInput):
        return problem(422, "validation", exc.message)
    if isinstance(exc, DatabaseError):
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return problem(
            503,
            "unavailable",
            "the database cannot take the request now; nothing was changed, try again",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, HTTPException):
        kind = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        return problem(exc.status_code, kind, str(exc.detail), headers=exc.headers)
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal", "the request failed; the operators' log says why")


async def handle(request: Request, exc: Exception) -> Response:
    """Starlette's exception handler for the API's mount."""
    return from_error(request, exc)
