"""`campaign dkim keygen`: a new DKIM private key, written 0600, and the DNS record to publish.

Imports cryptography only inside the command: `campaign --help` loads none of it."""

from __future__ import annotations

import os
from pathlib import Path

import click

from campaign.errors import ConfigError
from campaign.interfaces.cli.common import load_settings, main, out


@main.group("dkim")
def dkim_group() -> None:
    """DKIM signing keys."""


@dkim_group.command("keygen")
@click.option(
    "--type",
    "kind",
    type=click.Choice(["rsa", "ed25519"]),
    default="rsa",
    show_default=True,
    help="rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463, not yet by every provider).",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the private key (default: DKIM_PRIVATE_KEY_FILE, else dkim.key).",
)
@click.option("--selector", default=None, help="Default: DKIM_SELECTOR, else 'campaign'.")
@click.option("--domain", default=None, help="Default: DKIM_DOMAIN, else MAIL_FROM's domain.")
def dkim_keygen(kind: str, out_file: Path | None, selector: str | None, domain: str | None) -> None:
    """Write a new private key (mode 0600, never over an existing file) and print the TXT
    record to publish at SELECTOR._domainkey.DOMAIN before setting the DKIM_* variables."""
    from campaign.content.dkim_keys import dns_record, new_signing_key
    from campaign.settings import dkim_selector, domain_name

    settings = load_settings()
    path = out_file or settings.dkim_private_key_file or Path("dkim.key")
    # Checked as DKIM_SELECTOR and DKIM_DOMAIN are: the record printed must be publishable.
    try:
        selector = dkim_selector(selector or settings.dkim_selector or "campaign")
    except ValueError as exc:
        raise ConfigError("--selector", f"{selector!r} {exc}") from exc
    try:
        domain = domain_name(
            domain or settings.dkim_domain or settings.sender_address.rpartition("@")[2]
        )
    except ValueError as exc:
        raise ConfigError("--domain", f"{domain!r} {exc}") from exc
    pem, key = new_signing_key("rsa" if kind == "rsa" else "ed25519")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError("--out", f"{path} exists; a key is never overwritten") from exc
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    out.print(f"private key written to {path} (mode 0600)", markup=False, highlight=False)
    out.print("publish this DNS record, then set DKIM_DOMAIN, DKIM_SELECTOR and", highlight=False)
    out.print(f"DKIM_PRIVATE_KEY_FILE={path}:", markup=False, highlight=False)
    click.echo(dns_record(selector, domain, key))
