"""`campaign webhooks ...`: outgoing webhooks' endpoints (add, list, disable, enable, remove,
attempts, retry-failed) and one delivery round by hand."""

from __future__ import annotations

from datetime import datetime

import click

from campaign.interfaces.cli.common import NOW, TEXT, main, make_app, out


@main.group("webhooks")
def webhooks_group() -> None:
    """Outgoing webhooks (Standard Webhooks, signed): where events are posted."""


@webhooks_group.command("add")
@click.argument("url", type=TEXT)
@click.option(
    "--events",
    default=None,
    help="Comma-separated event types (default: all): subscriber.confirmed, "
    "subscriber.unsubscribed, subscriber.bounced, subscriber.complained, delivery.sent, "
    "delivery.failed, click.",
)
def webhooks_add(url: str, events: str | None) -> None:
    """Add an endpoint at URL (https; plain http only to a loopback host) and print its
    signing secret, once: give it to the receiver, it is not shown again."""
    app = make_app()
    added = app.webhooks.add(url, None if events is None else events.split(","))
    out.print(f"added endpoint {added.id}: {added.url}")
    out.print(f"events: {', '.join(added.events)}")
    out.print("signing secret (shown once, keep it with the receiver):")
    click.echo(added.secret)


@webhooks_group.command("list")
def webhooks_list() -> None:
    """Every endpoint: id, state, URL, event types, messages pending, delivered and failed."""
    app = make_app()
    endpoints = app.webhooks.endpoints()
    if not endpoints:
        out.print("no webhook endpoints (add one: campaign webhooks add URL)")
    for endpoint in endpoints:
        state = "enabled" if endpoint.enabled else f"disabled ({endpoint.disabled_reason})"
        click.echo(
            f"{endpoint.id}  {state}  {endpoint.url}  events={','.join(endpoint.events)}"
            f"  pending={endpoint.pending} delivered={endpoint.delivered}"
            f" failed={endpoint.failed}"
        )


@webhooks_group.command("disable")
@click.argument("endpoint_id", type=int, metavar="ID")
def webhooks_disable(endpoint_id: int) -> None:
    """Send endpoint ID nothing more for now; its events are kept until it is enabled."""
    make_app().webhooks.disable(endpoint_id)
    out.print(f"endpoint {endpoint_id} disabled (its events are kept)")


@webhooks_group.command("enable")
@click.argument("endpoint_id", type=int, metavar="ID")
def webhooks_enable(endpoint_id: int) -> None:
    """Send to endpoint ID again, starting with the events kept while it was disabled."""
    make_app().webhooks.enable(endpoint_id)
    out.print(f"endpoint {endpoint_id} enabled")


@webhooks_group.command("remove")
@click.argument("endpoint_id", type=int, metavar="ID")
def webhooks_remove(endpoint_id: int) -> None:
    """Delete endpoint ID and every event still waiting for it."""
    make_app().webhooks.remove(endpoint_id)
    out.print(f"endpoint {endpoint_id} removed")


@webhooks_group.command("retry-failed")
@click.argument("endpoint_id", type=int, metavar="ID")
@NOW
def webhooks_retry_failed(endpoint_id: int, now: datetime | None) -> None:
    """Give endpoint ID's given-up events a fresh retry schedule, starting now."""
    count = make_app(now).webhooks.retry_failed(endpoint_id)
    out.print(f"{count} event(s) to endpoint {endpoint_id} queued again")


@webhooks_group.command("attempts")
@click.argument("endpoint_id", type=int, metavar="ID")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def webhooks_attempts(endpoint_id: int, limit: int) -> None:
    """Endpoint ID's latest delivery attempts, newest first: time, event, status or error."""
    attempts = make_app().webhooks.attempts(endpoint_id, limit)
    if not attempts:
        out.print(f"no attempts to endpoint {endpoint_id} yet")
    for attempt in attempts:
        answer = str(attempt.status_code) if attempt.status_code is not None else "-"
        click.echo(
            f"{attempt.at.isoformat()}  {attempt.event_type}  {attempt.webhook_id}  {answer}"
            f"  {attempt.seconds * 1000:.0f}ms  {attempt.state}"
            + (f"  {attempt.error}" if attempt.error else "")
        )


@webhooks_group.command("deliver")
@NOW
def webhooks_deliver(now: datetime | None) -> None:
    """Run one delivery round now (the running engine does this on its own)."""
    app = make_app(now)
    result = app.webhook_deliverer.deliver_due()
    out.print(f"webhooks {result.summary()}")
