"""`campaign api-keys`: make, list and revoke the JSON API's bearer tokens."""

from __future__ import annotations

import json
from datetime import datetime

import click

from campaign.interfaces.cli.common import NOW, TEXT, main, make_app, out


@main.group("api-keys")
def api_keys_group() -> None:
    """Keys of the JSON API (/api/v1 on ADMIN_LISTEN)."""


@api_keys_group.command("create")
@click.argument("name", type=TEXT)
@NOW
def api_keys_create(name: str, now: datetime | None) -> None:
    """Make a key named NAME and print its token, this once: it is stored only hashed."""
    from campaign.people import api_keys

    api_keys.checked_name(name)  # before the engine loads: a typo is said at once
    app = make_app(now)
    made = api_keys.create(app.db, name, app.clock.now())
    click.echo(
        f"created API key {made.key.name} (id {made.key.id}); its token, shown only now:",
        err=True,
    )
    click.echo(made.token)


def _when(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else "-"


@api_keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def api_keys_list(as_json: bool) -> None:
    """Every key: name, id, created, last used, revoked (never a token)."""
    from rich.table import Table

    from campaign.people import api_keys

    keys = api_keys.list_keys(make_app().db)
    if as_json:
        rows = [
            {
                "name": key.name,
                "id": key.id,
                "created_at": _when(key.created_at),
                "last_used_at": key.last_used_at and _when(key.last_used_at),
                "revoked_at": key.revoked_at and _when(key.revoked_at),
            }
            for key in keys
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    if not keys:
        out.print("no API keys yet: `campaign api-keys create NAME` makes one")
        return
    table = Table("name", "id", "created", "last used", "revoked")
    for key in keys:
        table.add_row(
            key.name, key.id, _when(key.created_at), _when(key.last_used_at), _when(key.revoked_at)
        )
    out.print(table)


@api_keys_group.command("revoke")
@click.argument("name_or_id", metavar="NAME-OR-ID", type=TEXT)
@NOW
def api_keys_revoke(name_or_id: str, now: datetime | None) -> None:
    """Revoke a key: its token is refused (401) from the next request on."""
    from campaign.people import api_keys

    app = make_app(now)
    key, changed = api_keys.revoke(app.db, name_or_id, app.clock.now())
    out.print(
        f"revoked API key {key.name} (id {key.id})"
        if changed
        else f"API key {key.name} (id {key.id}) was already revoked",
        markup=False,
        highlight=False,
    )
