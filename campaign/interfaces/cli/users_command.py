"""`campaign users`: the operators' console accounts (add, list, remove)."""

from __future__ import annotations

import sys

import click

from campaign.errors import BadInput
from campaign.interfaces.cli.common import TEXT, main, make_app, out


@main.group("users")
def users_group() -> None:
    """Accounts of the operators' console (/console on ADMIN_LISTEN)."""


@users_group.command("add")
@click.argument("email", type=TEXT)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input (for scripts).",
)
def users_add(email: str, password_stdin: bool) -> None:
    """Create a console account for EMAIL; asks for its password twice (12 characters or
    more), stored only as an Argon2id hash."""
    from campaign.people import operators

    operators.account_name(email)  # a bad address is refused before the password is asked
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt="Repeat the password"
        )
    if not password:
        raise BadInput("the password is empty (--password-stdin reads its first line)")
    app = make_app()
    operators.add_operator(app.db, email, password, app.clock.now())
    out.print(f"added {email.strip()}: sign in at /console on ADMIN_LISTEN")


@users_group.command("list")
def users_list() -> None:
    """The console's accounts: address, created, last sign-in (UTC)."""
    from campaign.people import operators

    accounts = operators.list_operators(make_app().db)
    if not accounts:
        out.print("no accounts yet: campaign users add EMAIL")
    for account in accounts:
        last = account.last_login_at.strftime("%Y-%m-%d %H:%M") if account.last_login_at else "-"
        out.print(
            f"{account.email}  created {account.created_at:%Y-%m-%d %H:%M}  last sign-in {last}"
        )


@users_group.command("remove")
@click.argument("email", type=TEXT)
def users_remove(email: str) -> None:
    """Delete EMAIL's console account and end its sessions at once."""
    from campaign.people import operators

    app = make_app()
    if not operators.remove_operator(app.db, email, app.clock.now()):
        raise BadInput(f"there is no account {email}")
    out.print(f"removed {email.strip()}")
