"""POST /webhooks/{provider}: mail providers' bounces and complaints, on the public listener.

Served only for providers whose secret is set (any other name is a 404). The provider's module
checks the request is its own and reads its events; `record.apply` applies them. A refused post
gets its status and a generic body: the reason goes to the log only, never to the caller.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from campaign.engine import App, return_paths
from campaign.interfaces.web.request_input import read_body
from campaign.people.provider_webhooks.events import (
    WebhookProvider,
    WebhookRejected,
    WebhookRequest,
    WebhookResult,
)
from campaign.people.provider_webhooks.record import EventOutcome, apply, check_nonce
from campaign.people.provider_webhooks.registry import providers_from_settings

log = logging.getLogger("campaign.webhooks")

#: The largest post taken: SNS messages are at most 256 KiB, and a SendGrid batch or a Postmark
#: bounce with its full dump stays well under this.
MAX_WEBHOOK_BODY_BYTES = 1024 * 1024

_REFUSED = {400: "bad request", 401: "unauthorized", 403: "forbidden", 503: "unavailable"}


class WebhookEndpoints:
    """The webhook route of one engine, for the providers configured in its settings."""

    def __init__(self, app: App, providers: dict[str, WebhookProvider] | None = None) -> None:
        self.app = app
        self.providers = providers_from_settings(app.settings) if providers is None else providers
        self.base_url = app.settings.public_base_url.rstrip("/")
        self.return_paths = return_paths(app.settings)

    def routes(self) -> list[Route]:
        return [Route("/webhooks/{provider}", self.receive, methods=["POST"])]

    async def receive(self, request: Request) -> Response:
        provider = self.providers.get(request.path_params["provider"])
        if provider is None:
            return PlainTextResponse("Not Found", 404)
        body = await read_body(request, MAX_WEBHOOK_BODY_BYTES)
        url = self.base_url + request.url.path
        if request.url.query:
            url += "?" + request.url.query
        # Header names lowercased; a repeated header keeps its last value.
        headers = {name.lower(): value for name, value in request.headers.items()}
        posted = WebhookRequest(headers=headers, body=body, url=url)
        try:
            result, outcomes = await run_in_threadpool(self._handle, provider, posted)
        except WebhookRejected as exc:
            client = request.client.host if request.client else "?"
            log.warning(
                "%s webhook from %s refused (%d): %s", provider.name, client, exc.status, exc.reason
            )
            self.app.metrics.webhook_events.labels(provider=provider.name, outcome="rejected").inc()
            # A 503 (SES: Amazon's certificate could not be fetched) asks the provider to retry.
            status = exc.status if 400 <= exc.status < 500 or exc.status == 503 else 400
            headers_out = {"WWW-Authenticate": 'Basic realm="webhooks"'} if status == 401 else None
            return PlainTextResponse(_REFUSED.get(status, "refused"), status, headers_out)
        if result.note:
            log.info("%s webhook: %s", provider.name, result.note)
        counts = {"applied": 0, "duplicate": 0, "not_ours": 0}
        for outcome in outcomes:
            label = outcome.verdict.replace(" ", "_")
            counts[label] += 1
            self.app.metrics.webhook_events.labels(provider=provider.name, outcome=label).inc()
        return JSONResponse({"events": len(outcomes), **counts})

    def _handle(
        self, provider: WebhookProvider, posted: WebhookRequest
    ) -> tuple[WebhookResult, list[EventOutcome]]:
        """Off the event loop: authenticate and parse (signatures, JSON), then the database."""
        now = self.app.clock.now()
        result = provider.handle(posted, now)
        if result.signature_nonce is not None:
            max_age = timedelta(seconds=self.app.settings.webhook_max_age_seconds)
            check_nonce(
                self.app.db, provider.name, result.signature_nonce, posted.body, now, max_age
            )
        outcomes = apply(
            self.app.db,
            result.events,
            now,
            return_paths=self.return_paths,
            soft_bounce_limit=self.app.settings.soft_bounce_limit,
        )
        return result, outcomes
