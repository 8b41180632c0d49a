"""Settings: read once from an injected mapping (environment plus `.env`), validated at start."""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from campaign.errors import ConfigError

#: Used only when no SMTP_HOST is set (dev sink): links still verify across restarts.
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105
#: The sender and footer address shipped as defaults here and in `.env.example`: placeholders,
#: refused once SMTP_HOST is set (real people would receive them).
SHIPPED_MAIL_FROM = "Pain & Injury Doctor <newsletter@example.com>"
PLACEHOLDER_POSTAL_ADDRESS = "Pain & Injury Doctor, 123 Example Street, Springfield, USA"
#: The default plan, email templates, pages and ebook installed with the package: used when
#: the setting is unset and its default path is missing under CAMPAIGN_HOME.
PACKAGED_DEFAULTS = Path(__file__).resolve().parent / "defaults"
_PACKAGED_FALLBACKS = {
    "plan_path": "plans/thirty_day.yaml",
    "templates_dir": "templates/emails",
    "pages_dir": "templates/web",
}
#: Settings holding a path: a relative one is taken from CAMPAIGN_HOME when that is set.
_PATH_SETTINGS = (
    "plan_path",
    "templates_dir",
    "assets_dir",
    "outbox_dir",
    "pages_dir",
    "smtp_ca_file",
    "bounce_mailbox_ca_file",
)
_SQLITE_PREFIX = "sqlite:///"
_DOMAIN = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


class Settings(BaseModel):
    """Every knob of the engine. Field names are the environment variables, lowercased."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: the base folder relative paths (and a relative SQLite file) are taken from; None: the
    #: working folder. `.env` is read from it too.
    campaign_home: Path | None = None
    database_url: str = "sqlite:///campaign.db"
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout: float = Field(default=30.0, gt=0)
    #: the wait for the reply to a message's final dot (RFC 5321 4.5.3.2.6: 10 minutes).
    smtp_final_reply_timeout: float = Field(default=600.0, gt=0)
    #: where the relay offers PIPELINING, one message's end goes with the next message's
    #: MAIL, RCPT and DATA (one round trip per email); false: two round trips per email.
    smtp_group_messages: bool = True
    #: a PEM bundle of the CAs trusted for the mail server's certificate, instead of the
    #: system's store (a private relay, a test CA). Verification stays on either way.
    smtp_ca_file: Path | None = None
    mail_from: str = SHIPPED_MAIL_FROM
    #: where replies go (the Reply-To of every campaign email): a person who reads them.
    #: Unset: replies go to MAIL_FROM.
    reply_to: str | None = None
    #: the domain of the VERP return path `bounces+TOKEN@BOUNCE_DOMAIN` (default: MAIL_FROM's).
    bounce_domain: str | None = None
    public_base_url: str = "http://localhost:8000"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    #: a plan file, or a folder whose `*.yaml` files are each a plan.
    plan_path: Path = Path("plans/thirty_day.yaml")
    #: the id of the plan a signup joins when it names none (needed for a folder of plans).
    default_plan: str | None = None
    #: lesson emails (every step but a plan's day 0) one person gets per local day, all plans.
    max_per_day: int = Field(default=1, ge=1, le=24)
    templates_dir: Path = Path("templates/emails")
    #: the third folder a plan's files (ebook, attachments) may come from, besides its own
    #: and templates_dir; None: the `assets` folder beside the plan's folder.
    assets_dir: Path | None = None
    outbox_dir: Path = Path("outbox")
    ebook_url: str | None = None
    postal_address: str = PLACEHOLDER_POSTAL_ADDRESS
    tick_seconds: float = Field(default=30.0, gt=0)
    send_rate_per_second: float = Field(default=0.0, ge=0)
    send_rate_per_hour: float = Field(default=0.0, ge=0)
    smtp_connections: int = Field(default=1, ge=1, le=64)
    #: processes the SMTP connections are spread over (one process sends on one core).
    sender_processes: int = Field(default=1, ge=1, le=64)
    batch_size: int = Field(default=200, ge=1, le=10_000)
    lease_seconds: int = Field(default=300, ge=10)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_base_seconds: int = Field(default=60, ge=1)
    soft_bounce_limit: int = Field(default=3, ge=1, le=100)
    #: how often a message whose final reply never came is sent again (0 or 1).
    unknown_outcome_retries: int = Field(default=1, ge=0, le=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: text (one readable line) or json (one object a line, for journald or Loki).
    log_format: Literal["text", "json"] = "text"
    track_clicks: bool = False
    double_opt_in: bool = True
    confirm_token_days: int = Field(default=7, ge=1, le=90)
    signup_rate_per_minute: int = Field(default=5, ge=1, le=10_000)
    #: JSON API requests per minute for one API key; more get 429 with Retry-After.
    api_rate_per_minute: int = Field(default=600, ge=1, le=1_000_000)
    pending_purge_days: int = Field(default=14, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    #: slow clients: seconds for a request's headers, then for its body; open connections.
    http_header_timeout: float = Field(default=10.0, gt=0, le=3600)
    http_body_timeout: float = Field(default=10.0, gt=0, le=3600)
    http_max_connections: int = Field(default=500, ge=2, le=100_000)
    pages_dir: Path = Path("templates/web")
    #: proxies whose X-Forwarded-For is believed (client addresses for rate limits and consent).
    forwarded_allow_ips: str = "127.0.0.1"
    #: the operators' listener (/metrics, detailed /healthz): HOST:PORT, or "off".
    admin_listen: str = "127.0.0.1:9100"
    #: the operators' console (/console on ADMIN_LISTEN): a session ends after this many
    #: minutes without a request, and this many hours after sign-in whatever happens.
    console_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    console_session_hours: int = Field(default=12, ge=1, le=30 * 24)
    #: failed sign-ins allowed per 15 minutes: for one account, and from one client address.
    console_login_attempts: int = Field(default=5, ge=1, le=1000)
    console_client_attempts: int = Field(default=20, ge=1, le=100_000)
    #: DKIM signing: all three set, or none (unsigned). The domain should be MAIL_FROM's.
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = None
    #: the SenderId of Gmail's Feedback-ID header (`step:plan:kind:SenderId`); unset: no header.
    feedback_id_sender: str | None = None
    #: provider webhooks (bounces, complaints) at /webhooks/<provider> on the public listener;
    #: each is served only when its secret is set. SES: the SNS topic ARNs accepted (commas).
    ses_topic_arns: str | None = None
    #: Postmark: the HTTP Basic password in the webhook URL (https://any:SECRET@host/...).
    postmark_webhook_secret: SecretStr | None = None
    #: Mailgun: the HTTP webhook signing key (HMAC-SHA256 of timestamp + token).
    mailgun_webhook_signing_key: SecretStr | None = None
    #: SendGrid: the signed event webhook's verification key (base64 ECDSA public key).
    sendgrid_webhook_public_key: str | None = None
    #: a signed webhook older than this (its own timestamp) is refused as a replay.
    webhook_max_age_seconds: int = Field(default=900, ge=60, le=7 * 24 * 3600)
    #: the mailbox `bounces poll` reads: imaps://USER@HOST[:993][/FOLDER], pop3s://USER@HOST,
    #: or imap:// and pop3:// with STARTTLS (`?security=none`: no TLS, for loopback tests).
    bounce_mailbox_url: str | None = None
    bounce_mailbox_password: SecretStr | None = None
    #: a PEM bundle of the CAs trusted for the mailbox server, instead of the system's store.
    bounce_mailbox_ca_file: Path | None = None
    bounce_mailbox_timeout: float = Field(default=30.0, gt=0, le=600)

    @field_validator("mail_from", "reply_to")
    @classmethod
    def _is_an_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name, addr = parseaddr(value)
        if "@" not in addr or any(c in value for c in "\r\n"):
            raise ValueError("must be an address such as 'Name <newsletter@example.com>'")
        Address(display_name=name, addr_spec=addr)  # raises on an unusable address
        return value

    @field_validator("postal_address")
    @classmethod
    def _postal_address_is_not_blank(cls, value: str) -> str:
        # Blank means unset: the placeholder, which is refused with SMTP_HOST and announced
        # at start without it (never a silent fallback).
        return value.strip() or PLACEHOLDER_POSTAL_ADDRESS

    @field_validator("bounce_domain")
    @classmethod
    def _bounce_domain_is_a_domain(cls, value: str | None) -> str | None:
        return _domain_name(value)

    @field_validator("dkim_domain")
    @classmethod
    def _dkim_domain_is_a_domain(cls, value: str | None) -> str | None:
        return _domain_name(value)

    @field_validator("dkim_selector")
    @classmethod
    def _dkim_selector_is_a_label(cls, value: str | None) -> str | None:
        return None if value is None else dkim_selector(value)

    @field_validator("feedback_id_sender")
    @classmethod
    def _feedback_id_sender_is_a_token(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-' (no ':')")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for local development)")
        return value.rstrip("/")

    @field_validator("bounce_mailbox_url")
    @classmethod
    def _bounce_mailbox_url_is_a_mailbox(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mailbox_url(value)
        return value

    @property
    def bounce_mailbox(self) -> MailboxAddress | None:
        """Where `bounces poll` reads, parsed from BOUNCE_MAILBOX_URL; None when unset."""
        return parse_mailbox_url(self.bounce_mailbox_url) if self.bounce_mailbox_url else None

    @field_validator("smtp_ca_file", "bounce_mailbox_ca_file")
    @classmethod
    def _ca_file_is_a_pem_bundle(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        if not value.is_file():
            raise ValueError("no such file (it must be a PEM file of CA certificates)")
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=value)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise ValueError(f"not a readable PEM file of CA certificates: {exc}") from exc
        return value

    @field_validator("admin_listen")
    @classmethod
    def _admin_listen_is_host_port(cls, value: str) -> str:
        if value.strip().lower() == "off":
            return "off"
        host, _, port = value.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT (e.g. 127.0.0.1:9100) or off")
        return value

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """Where the operators' listener binds; None when ADMIN_LISTEN=off."""
        if self.admin_listen == "off":
            return None
        host, _, port = self.admin_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DB")
        return value

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (mask_url_password(value) if name == "database_url" else value)

    @property
    def uses_dev_sink(self) -> bool:
        """No SMTP_HOST: messages are written to OUTBOX_DIR instead of sent."""
        return not self.smtp_host

    @property
    def effective_smtp_port(self) -> int:
        if self.smtp_port:
            return self.smtp_port
        return {"ssl": 465, "starttls": 587, "none": 25}[self.smtp_security]

    @property
    def sender_address(self) -> str:
        """The bare address of MAIL_FROM (the envelope sender)."""
        return parseaddr(self.mail_from)[1]

    @property
    def return_path_domain(self) -> str:
        """Where bounces go: `bounces+TOKEN@` this domain (BOUNCE_DOMAIN, else MAIL_FROM's)."""
        return self.bounce_domain or self.sender_address.rpartition("@")[2].lower()

    @property
    def reply_to_address(self) -> str:
        """The bare address replies go to: REPLY_TO's, else MAIL_FROM's."""
        return parseaddr(self.reply_to)[1] if self.reply_to else self.sender_address

    @property
    def sender_name(self) -> str:
        return parseaddr(self.mail_from)[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping of environment variables; unset or empty means default."""
        names = {name.upper(): name for name in cls.model_fields}
        values: dict[str, Any] = {
            names[key]: value for key, value in environ.items() if key in names and value != ""
        }
        _resolve_paths(values)
        if "public_base_url" not in values:
            values["public_base_url"] = _local_base_url(
                values.get("http_host", "127.0.0.1"), values.get("http_port", "8000")
            )
        try:
            settings = cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            variable = str(error["loc"][0]).upper() if error["loc"] else "?"
            shown = str(values.get(variable.lower(), ""))
            shown_text = "<hidden>" if "PASSWORD" in variable or "SECRET" in variable else shown
            shown_text = mask_url_password(shown_text)
            problem = error["msg"].removeprefix("Value error, ")
            raise ConfigError(variable, f"has value {shown_text!r}. {problem}.") from exc
        settings._check_production()
        settings._check_dkim()
        if settings.bounce_mailbox_url and not settings.bounce_mailbox_password:
            raise ConfigError(
                "BOUNCE_MAILBOX_PASSWORD", "must be set when BOUNCE_MAILBOX_URL is set"
            )
        return settings

    def _check_dkim(self) -> None:
        """DKIM needs its three settings together: a partial set is a mistake, not "off"."""
        dkim = {
            "DKIM_DOMAIN": self.dkim_domain,
            "DKIM_SELECTOR": self.dkim_selector,
            "DKIM_PRIVATE_KEY_FILE": self.dkim_private_key_file,
        }
        given = [name for name, value in dkim.items() if value is not None]
        missing = [name for name, value in dkim.items() if value is None]
        if given and missing:
            raise ConfigError(
                missing[0], f"must be set when {given[0]} is set (DKIM needs all three)"
            )

    def _check_production(self) -> None:
        """A real mail server means real people: refuse the dev-only defaults."""
        if self.uses_dev_sink:
            return
        if self.secret_key.get_secret_value() == DEV_SECRET_KEY:
            raise ConfigError("SECRET_KEY", "must be set when SMTP_HOST is set (32+ random chars)")
        if len(self.secret_key.get_secret_value()) < 32:
            raise ConfigError("SECRET_KEY", "must be at least 32 characters long")
        if self.smtp_username and not self.smtp_password:
            raise ConfigError("SMTP_PASSWORD", "must be set when SMTP_USERNAME is set")
        if self.mail_from == SHIPPED_MAIL_FROM:
            raise ConfigError(
                "MAIL_FROM",
                "still holds the shipped example sender; set your own address (a domain with "
                "SPF and DKIM) when SMTP_HOST is set",
            )
        if self.postal_address == PLACEHOLDER_POSTAL_ADDRESS:
            raise ConfigError(
                "POSTAL_ADDRESS",
                "is empty or still holds the shipped placeholder; set your real postal address "
                "(every email's footer, required by anti-spam law) when SMTP_HOST is set",
            )

    def start_warnings(self) -> list[str]:
        """What an operator should hear once at start: settings that work but are risky."""
        warnings = []
        if self.postal_address == PLACEHOLDER_POSTAL_ADDRESS:
            warnings.append(
                "POSTAL_ADDRESS is not set: the dev sink's emails carry the placeholder "
                f"{PLACEHOLDER_POSTAL_ADDRESS!r} (refused once SMTP_HOST is set)"
            )
        url = urlsplit(self.public_base_url)
        if url.scheme != "https" and not _is_loopback(url.hostname or ""):
            warnings.append(
                f"PUBLIC_BASE_URL {self.public_base_url} is not https: links in emails and "
                "signup pages travel in clear text (serve them behind a TLS proxy)"
            )
        return warnings


@dataclass(frozen=True)
class MailboxAddress:
    """A bounce mailbox: protocol, TLS (implicit "ssl", "starttls", or "none"), server, login
    and, for IMAP, the folder read."""

    protocol: Literal["imap", "pop3"]
    security: Literal["ssl", "starttls", "none"]
    host: str
    port: int
    username: str
    folder: str

    def __str__(self) -> str:
        """The server as an operator names it (no login, no password): `imaps://host:993`."""
        scheme = self.protocol + ("s" if self.security == "ssl" else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


_MAILBOX_SCHEMES: dict[str, tuple[Literal["imap", "pop3"], Literal["ssl", "starttls"], int]] = {
    "imaps": ("imap", "ssl", 993),
    "imap": ("imap", "starttls", 143),
    "pop3s": ("pop3", "ssl", 995),
    "pop3": ("pop3", "starttls", 110),
}


def parse_mailbox_url(url: str) -> MailboxAddress:
    """`imaps://bounces%40example.org@mail.example.org/INBOX` -> its parts; ValueError naming
    what is wrong. The password never goes in the URL (BOUNCE_MAILBOX_PASSWORD holds it)."""
    shape = "must look like imaps://USER@HOST[:PORT][/FOLDER] or pop3s://USER@HOST[:PORT]"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise ValueError(f"{shape} (no spaces or control characters)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _MAILBOX_SCHEMES:
        raise ValueError(f"{shape}; the scheme is one of imaps, imap, pop3s, pop3")
    protocol, security, default_port = _MAILBOX_SCHEMES[scheme]
    try:
        port = parts.port or default_port
    except ValueError:
        raise ValueError(f"{shape}; the port is 1-65535") from None
    if not parts.hostname:
        raise ValueError(f"{shape}; the host is missing")
    if not parts.username:
        raise ValueError(f"{shape}; the user name is missing")
    if parts.password is not None:
        raise ValueError("must not hold the password: set BOUNCE_MAILBOX_PASSWORD instead")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if query and (set(query) != {"security"} or query["security"] not in ("none", "starttls")):
        raise ValueError("takes only ?security=none (no TLS) or ?security=starttls")
    wanted = query.get("security")
    if wanted is not None and security == "ssl":
        raise ValueError(f"{scheme}:// always uses TLS; ?security= is for imap:// and pop3://")
    folder = unquote(parts.path.lstrip("/"))
    if protocol == "pop3" and folder:
        raise ValueError("a POP3 mailbox has no folders: drop the /path")
    return MailboxAddress(
        protocol=protocol,
        security="none" if wanted == "none" else security,
        host=parts.hostname,
        port=port,
        username=unquote(parts.username),
        folder=folder or "INBOX",
    )


def _resolve_paths(values: dict[str, Any]) -> None:
    """Relative paths from CAMPAIGN_HOME (if set); unset defaults missing there: the packaged."""
    home = Path(values["campaign_home"]).expanduser() if "campaign_home" in values else None
    if home is not None:
        for name in _PATH_SETTINGS:
            if name in values and not Path(values[name]).expanduser().is_absolute():
                values[name] = str(home / values[name])
        url = values.get("database_url", f"{_SQLITE_PREFIX}campaign.db")
        sqlite_file = url.removeprefix(_SQLITE_PREFIX) if url.startswith(_SQLITE_PREFIX) else ""
        if sqlite_file and sqlite_file != ":memory:" and not sqlite_file.startswith("/"):
            values["database_url"] = f"{_SQLITE_PREFIX}{home / sqlite_file}"
    for name, default in _PACKAGED_FALLBACKS.items():
        if name in values:
            continue
        local = (home or Path()) / default
        if not local.exists():
            values[name] = str(PACKAGED_DEFAULTS / default)
        elif home is not None:
            values[name] = str(local)


def _local_base_url(host: str, port: str) -> str:
    """PUBLIC_BASE_URL when unset: the HTTP listener's own address (localhost for loopback and
    every-interface binds, as a browser on this machine reaches them)."""
    bare = host.strip("[]")
    if bare in {"", "0.0.0.0", "::"} or _is_loopback(bare):  # noqa: S104 - compared, not bound
        bare = "localhost"
    shown = f"[{bare}]" if ":" in bare else bare
    return f"http://{shown}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _domain_name(value: str | None) -> str | None:
    return None if value is None else domain_name(value)


def domain_name(value: str) -> str:
    """`value` as a DNS name (lower case, no final dot); ValueError if it is not one."""
    value = value.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(value) or len(value) > 253:
        raise ValueError("must be a domain name such as 'example.com' (ASCII, A-labels)")
    return value


def dkim_selector(value: str) -> str:
    """`value` as a DKIM selector (lower case); ValueError if it is not DNS labels."""
    value = value.strip().lower()
    if not _DOMAIN.fullmatch(value):
        raise ValueError("must be a DNS label such as 'campaign2026' (letters, digits, -)")
    return value


def mask_url_password(url: str) -> str:
    """`postgresql://app:secret@host/db` -> `postgresql://app:***@host/db`."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def load_environment(env_file: Path | str | None = None) -> dict[str, str]:
    """The process environment over the `.env` file (real environment variables win); by
    default the `.env` in CAMPAIGN_HOME, else in the working folder."""
    from dotenv import dotenv_values

    if env_file is None:
        env_file = Path(os.environ.get("CAMPAIGN_HOME") or ".").expanduser() / ".env"

    merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    merged.update(os.environ)
    return merged
