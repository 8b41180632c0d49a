"""Which providers' webhooks this engine serves: those whose secret is set."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

from campaign.people.provider_webhooks.events import WebhookProvider
from campaign.settings import Settings

#: Each provider's module under campaign.people.provider_webhooks, one a line. Each exposes
#: `from_settings(settings, **injected) -> WebhookProvider | None` (None: not configured).
PROVIDER_MODULES: tuple[str, ...] = ("postmark",)


class ProviderFactory(Protocol):
    def __call__(self, settings: Settings, /, **injected: Any) -> WebhookProvider | None: ...


def factories() -> list[ProviderFactory]:
    """Every provider module's `from_settings`, in PROVIDER_MODULES order."""
    found = []
    for name in PROVIDER_MODULES:
        module = importlib.import_module(f"{__package__}.{name}")
        factory: ProviderFactory = module.from_settings
        found.append(factory)
    return found


def providers_from_settings(settings: Settings, **injected: Any) -> dict[str, WebhookProvider]:
    """The configured providers by name (the path segment of /webhooks/<name>). `injected`
    (a test's certificate fetcher, ...) goes to each provider that takes a parameter so named."""
    providers: dict[str, WebhookProvider] = {}
    for factory in factories():
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
