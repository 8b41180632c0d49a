"""Which providers' webhooks this engine serves: those whose secret is set."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from campaign.people.provider_webhooks import mailgun, postmark, sendgrid, ses
from campaign.people.provider_webhooks.events import WebhookProvider
from campaign.settings import Settings

#: `from_settings(settings, **injected)`: injected keywords are only those it declares.
ProviderFactory = Callable[..., WebhookProvider | None]


#: Each provider module's `from_settings(settings, **injected) -> WebhookProvider | None`
#: (None: its secret is not set), one a line.
FACTORIES: tuple[ProviderFactory, ...] = (
    postmark.from_settings,
    ses.from_settings,
    mailgun.from_settings,
    sendgrid.from_settings,
)


def providers_from_settings(settings: Settings, **injected: Any) -> dict[str, WebhookProvider]:
    """The configured providers by name (the path segment of /webhooks/<name>). `injected`
    (a test's certificate fetcher, ...) goes to each provider that takes a parameter so named."""
    providers: dict[str, WebhookProvider] = {}
    for factory in FACTORIES:
        provider = factory(settings, **_accepted(factory, injected))
        if provider is not None:
            providers[provider.name] = provider
    return providers


def _accepted(factory: ProviderFactory, injected: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return injected
    names = {p.name for p in parameters}
    return {key: value for key, value in injected.items() if key in names}
