"""The JSON API's endpoints under /api/v1: subscribers (create, get, update, unsubscribe,
forget), the delivery log by cursor, and stats. Each checks the bearer key and its rate, parses
its input, calls a use case and answers JSON; every error becomes a problem
(campaign.interfaces.api.problems)."""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from campaign.engine import App
from campaign.errors import BadRequest, Suppressed, UnknownPlan, UnknownSubscriber
from campaign.insights import delivery_log
from campaign.interfaces.api import problems
from campaign.interfaces.api.problems import FieldProblem
from campaign.interfaces.api.schemas import (
    DeliveryOut,
    DeliveryPage,
    StatsOut,
    SubscriberCreate,
    SubscriberOut,
    SubscriberUpdate,
)
from campaign.interfaces.web.rate_limit import RateLimiter
from campaign.interfaces.web.request_input import clean_header, read_body, strict_json
from campaign.people import api_keys, subscriptions
from campaign.people.api_keys import ApiKey
from campaign.people.person_fields import checked_fields
from campaign.people.signups import SignupOutcome
from campaign.people.subscriptions import Visitor

log = logging.getLogger("campaign.api")

#: The largest request body taken: a subscriber with its consent is well under 2 KiB.
MAX_BODY_BYTES = 16 * 1024
DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: a consent stated a little in the future is the two systems' clocks differing.
CLOCK_SKEW = timedelta(minutes=5)
_CURSOR_PREFIX = "d1:"

Handler = Callable[[Request, ApiKey], Awaitable[Response]]


class ApiEndpoints:
    """The /api/v1 routes of one engine (paths relative to the /api mount)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.limiter = RateLimiter(app.settings.api_rate_per_minute, 60.0, app.clock)

    def routes(self) -> list[Route]:
        guarded = self._guarded
        return [
            Route("/v1/subscribers", guarded(self.create_subscriber), methods=["POST"]),
            Route("/v1/subscribers/{email}", guarded(self.get_subscriber), methods=["GET"]),
            Route("/v1/subscribers/{email}", guarded(self.update_subscriber), methods=["PATCH"]),
            Route(
                "/v1/subscribers/{email}/unsubscribe",
                guarded(self.unsubscribe),
                methods=["POST"],
            ),
            Route("/v1/subscribers/{email}", guarded(self.forget), methods=["DELETE"]),
            Route("/v1/deliveries", guarded(self.deliveries), methods=["GET"]),
            Route("/v1/stats", guarded(self.stats), methods=["GET"]),
        ]

    def _guarded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the bearer key and its rate limit, its errors as problems."""

        async def endpoint(request: Request) -> Response:
            try:
                key = await self._key(request)
                if key is None:
                    return problems.unauthorized(
                        "send `Authorization: Bearer <token>` with a token from "
                        "`campaign api-keys create`; this one is missing, unknown or revoked"
                    )
                wait = self.limiter.retry_after(key.id)
                if wait:
                    return problems.problem(
                        429,
                        "rate-limited",
                        f"this key may make {self.app.settings.api_rate_per_minute} requests "
                        "a minute (API_RATE_PER_MINUTE)",
                        headers={"Retry-After": str(wait)},
                    )
                return await handler(request, key)
            except Exception as exc:  # the one table turns each error into its answer
                return problems.from_error(request, exc)

        return endpoint

    async def _key(self, request: Request) -> ApiKey | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return await run_in_threadpool(
            api_keys.authenticate, self.app.db, token.strip(), self.app.clock.now()
        )

    async def create_subscriber(self, request: Request, key: ApiKey) -> Response:
        data = await _json_body(request)
        try:
            wanted = SubscriberCreate.model_validate(data)
        except ValidationError as exc:
            errors = problems.validation_errors(exc)
            raise FieldProblem(errors) from exc
        app = self.app
        now = app.clock.now()
        source = f"api:{key.name}"
        try:
            plan = app.plan_named(wanted.plan)
        except UnknownPlan as exc:
            raise FieldProblem([("plan", exc.message)]) from None
        plan_id = plan.id
        # Checked before anything is stored: an undeclared name or a bad value is a 422.
        custom = checked_fields(plan.declared_fields, wanted.fields, unknown="reject")
        if wanted.consent is None:
            visitor = Visitor(
                ip=request.client.host if request.client else "",
                user_agent=clean_header(request.headers.get("user-agent", "")),
                source_page=source,
            )
            result = await run_in_threadpool(
                lambda: app.signups.signup(
                    email=wanted.email,
                    first_name=wanted.first_name,
                    timezone=wanted.timezone,
                    visitor=visitor,
                    now=now,
                    actor=actor(key),
                    fields=custom,
                    plan_id=plan_id,
                )
            )
            if result.confirmation_id is not None or result.enrollment_id is not None:
                # Sent by the engine's signup mail sender, as for the public signup form.
                app.signup_mail.wake(result.enrollment_id)
        else:
            consent = wanted.consent
            if consent.at > now + CLOCK_SKEW:
                raise FieldProblem([("consent.at", "is in the future")])
            stated = Visitor(
                ip=consent.ip, user_agent=consent.user_agent or "", source_page=consent.source
            )
            result = await run_in_threadpool(
                lambda: app.signups.subscribe_with_consent(
                    email=wanted.email,
                    first_name=wanted.first_name,
                    timezone=wanted.timezone,
                    consent=stated,
                    consented_at=consent.at,
                    source=source,
                    now=now,
                    actor=actor(key),
                    fields=custom,
                    plan_id=plan_id,
                )
            )
            if result.outcome == SignupOutcome.ENROLLED and result.enrollment_id is not None:
                await self._send_welcome_now(result.enrollment_id)
        log.info("api key %s: subscriber create: %s", key.name, result.outcome)
        try:
            body = await self._subscriber(wanted.email)
        except UnknownSubscriber:
            if result.outcome == SignupOutcome.IGNORED:  # bounced or complained, not stored
                raise Suppressed(wanted.email, "bounced or complained") from None
            raise
        if result.created:
            location = f"{request.url.path}/{quote(wanted.email, safe='@')}"
            return JSONResponse(body, 201, {"Location": location})
        return JSONResponse(body, 200)

    async def _send_welcome_now(self, enrollment_id: int) -> None:
        """As after a confirmation: the welcome goes out in the request, not at the next tick."""
        now = self.app.clock.now()
        result = await run_in_threadpool(
            self.app.dispatcher.run_pass, now, None, only_enrollment=enrollment_id
        )
        if result.error:
            log.warning(
                "welcome for enrollment %s waits for the next pass: %s", enrollment_id, result.error
            )

    async def _subscriber(self, email: str) -> dict[str, Any]:
        person = await run_in_threadpool(subscriptions.export_person, self.app.db, email)
        return subscriber_out(person).model_dump(mode="json")

    async def get_subscriber(self, request: Request, key: ApiKey) -> Response:
        _no_query(request)
        return JSONResponse(await self._subscriber(request.path_params["email"]))

    async def update_subscriber(self, request: Request, key: ApiKey) -> Response:
        _no_query(request)
        data = await _json_body(request)
        try:
            wanted = SubscriberUpdate.model_validate(data)
        except ValidationError as exc:
            raise FieldProblem(problems.validation_errors(exc)) from exc
        email = request.path_params["email"]
        app = self.app
        await run_in_threadpool(
            lambda: subscriptions.update_fields(
                app.db,
                app.plan,
                email=email,
                fields=wanted.fields or {},
                now=app.clock.now(),
                actor=actor(key),
                declared=app.catalog.declared_fields,
            )
        )
        log.info("api key %s: updated a subscriber's fields", key.name)
        return JSONResponse(await self._subscriber(email))

    async def unsubscribe(self, request: Request, key: ApiKey) -> Response:
        _no_query(request)
        await read_body(request, MAX_BODY_BYTES)  # nothing to read: drained, bounded
        email = request.path_params["email"]
        await run_in_threadpool(
            lambda: subscriptions.unsubscribe(
                self.app.db, email=email, now=self.app.clock.now(), actor=actor(key)
            )
        )
        log.info("api key %s: unsubscribed a subscriber", key.name)
        return JSONResponse(await self._subscriber(email))

    async def forget(self, request: Request, key: ApiKey) -> Response:
        _no_query(request)
        await run_in_threadpool(
            subscriptions.forget_person,
            self.app.db,
            request.path_params["email"],
            self.app.clock.now(),
            actor(key),
        )
        log.info("api key %s: forgot a subscriber", key.name)
        return Response(status_code=204)

    async def deliveries(self, request: Request, key: ApiKey) -> Response:
        query = request.query_params
        _no_query(request, allowed=("since", "limit"))
        after = decode_cursor(query["since"]) if "since" in query else 0
        limit = _limit(query.get("limit"))
        # One row more than asked for says whether there is more, without a count.
        rows = await run_in_threadpool(delivery_log.page, self.app.db, after, limit + 1)
        items = [DeliveryOut(**row._asdict()) for row in rows[:limit]]
        last = items[-1].id if items else after
        page = DeliveryPage(items=items, next=encode_cursor(last), has_more=len(rows) > limit)
        return JSONResponse(page.model_dump(mode="json"))

    async def stats(self, request: Request, key: ApiKey) -> Response:
        _no_query(request)
        numbers = await run_in_threadpool(self.app.stats)
        return JSONResponse(StatsOut.model_validate(numbers).model_dump(mode="json"))


def actor(key: ApiKey) -> str:
    """Who the audit log names for a change made through the API: the key, by its name."""
    return f"api key {key.name}"


async def _json_body(request: Request) -> Any:
    """The body as JSON: application/json (415 otherwise), at most MAX_BODY_BYTES (413),
    UTF-8, valid, no key given twice (400), an object (422)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise BadRequest("send the body as application/json", status=415)
    body = await read_body(request, MAX_BODY_BYTES)
    try:
        data = strict_json(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequest("the body is not UTF-8") from exc
    except RecursionError as exc:
        raise BadRequest("the JSON is nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(f"the body is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(data, dict):
        raise FieldProblem([("body", "must be a JSON object")])
    return data


def _no_query(request: Request, allowed: tuple[str, ...] = ()) -> None:
    unknown = [name for name in request.query_params if name not in allowed]
    if unknown:
        raise FieldProblem([(name[:40], "is not a parameter of this request") for name in unknown])


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise FieldProblem([("limit", f"must be a whole number from 1 to {MAX_PAGE}")])
    return int(text)


def encode_cursor(after_id: int) -> str:
    """An opaque cursor for the deliveries after `after_id`."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The id a cursor of ours stands for; FieldProblem naming `since` for anything else."""
    try:
        padded = (cursor + "=" * (-len(cursor) % 4)).encode("ascii")
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        text = ""
    number = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not number.isdigit() or len(number) > 18:
        raise FieldProblem([("since", "is not a cursor this API gave (use a page's `next`)")])
    return int(number)


def subscriber_out(person: subscriptions.PersonExport) -> SubscriberOut:
    """The API's view of everything stored about a person."""
    row = person["subscriber"]
    plans = {e["id"]: e["plan_id"] for e in person["enrollments"]}
    return SubscriberOut.model_validate(
        {
            **{k: row[k] for k in SubscriberOut.model_fields if k in row},
            "consents": [{**c, "source": c["source_page"]} for c in person["consents"]],
            "enrollments": person["enrollments"],
            "deliveries": [
                {**d, "email": row["email"], "plan_id": plans[d["enrollment_id"]]}
                for d in person["deliveries"]
            ],
        }
    )
