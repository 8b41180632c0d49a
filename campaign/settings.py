"""Settings: read once from an injected mapping (environment plus `.env`), validated at start."""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from email.headerregistry import Address
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from campaign.errors import ConfigError

#: Used only when no SMTP_HOST is set (dev sink): links still verify across restarts.
DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105
_DOMAIN = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


class Settings(BaseModel):
    """Every knob of the engine. Field names are the environment variables, lowercased."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str = "sqlite:///campaign.db"
    smtp_host: str | None = None
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_timeout: float = Field(default=30.0, gt=0)
    #: the wait for the reply to a message's final dot (RFC 5321 4.5.3.2.6: 10 minutes).
    smtp_final_reply_timeout: float = Field(default=600.0, gt=0)
    #: a PEM bundle of the CAs trusted for the mail server's certificate, instead of the
    #: system's store (a private relay, a test CA). Verification stays on either way.
    smtp_ca_file: Path | None = None
    mail_from: str = "Pain & Injury Doctor <newsletter@example.com>"
    #: the domain of the VERP return path `bounces+TOKEN@BOUNCE_DOMAIN` (default: MAIL_FROM's).
    bounce_domain: str | None = None
    public_base_url: str = "http://localhost:8000"
    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    plan_path: Path = Path("plans/thirty_day.yaml")
    templates_dir: Path = Path("templates/emails")
    #: the third folder a plan's files (ebook, attachments) may come from, besides its own
    #: and templates_dir; None: the `assets` folder beside the plan's folder.
    assets_dir: Path | None = None
    outbox_dir: Path = Path("outbox")
    ebook_url: str | None = None
    postal_address: str = "Pain & Injury Doctor, 123 Example Street, Springfield, USA"
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
    track_clicks: bool = False
    double_opt_in: bool = True
    confirm_token_days: int = Field(default=7, ge=1, le=90)
    signup_rate_per_minute: int = Field(default=5, ge=1, le=10_000)
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
    #: DKIM signing: all three set, or none (unsigned). The domain should be MAIL_FROM's.
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key_file: Path | None = None
    #: the SenderId of Gmail's Feedback-ID header (`step:plan:kind:SenderId`); unset: no header.
    feedback_id_sender: str | None = None

    @field_validator("mail_from")
    @classmethod
    def _mail_from_is_an_address(cls, value: str) -> str:
        name, addr = parseaddr(value)
        if "@" not in addr or any(c in value for c in "\r\n"):
            raise ValueError("must be an address such as 'Name <newsletter@example.com>'")
        Address(display_name=name, addr_spec=addr)  # raises on an unusable address
        return value

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
        if value is None:
            return None
        value = value.strip().lower()
        if not _DOMAIN.fullmatch(value):
            raise ValueError("must be a DNS label such as 'campaign2026' (letters, digits, -)")
        return value

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

    @field_validator("smtp_ca_file")
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
    def sender_name(self) -> str:
        return parseaddr(self.mail_from)[0]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build settings from a mapping of environment variables; unset or empty means default."""
        names = {name.upper(): name for name in cls.model_fields}
        values: dict[str, Any] = {
            names[key]: value for key, value in environ.items() if key in names and value != ""
        }
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


def _domain_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower().rstrip(".")
    if not _DOMAIN.fullmatch(value) or len(value) > 253:
        raise ValueError("must be a domain name such as 'example.com' (ASCII, A-labels)")
    return value


def mask_url_password(url: str) -> str:
    """`postgresql://app:secret@host/db` -> `postgresql://app:***@host/db`."""
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", url)


def load_environment(env_file: Path | str = ".env") -> dict[str, str]:
    """The process environment over the `.env` file (real environment variables win)."""
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    merged.update(os.environ)
    return merged
