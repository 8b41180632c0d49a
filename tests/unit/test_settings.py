"""Settings from the environment: sensible defaults, and every bad value named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign.errors import ConfigError
from campaign.settings import Settings, load_environment

SECRET_KEY = "a-real-secret-key-0123456789-abcdefghij"
PASSWORD = "smtp-password-hunter2"
PRODUCTION = {
    "SMTP_HOST": "smtp.example.org",
    "SMTP_USERNAME": "mailer",
    "SMTP_PASSWORD": PASSWORD,
    "SECRET_KEY": SECRET_KEY,
    # Real values: the shipped placeholders are refused once SMTP_HOST is set.
    "MAIL_FROM": "Clinic <news@clinic.example.org>",
    "POSTAL_ADDRESS": "Clinic, 1 Real Street, Realtown",
}


def _config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


def test_an_empty_environment_gives_development_defaults() -> None:
    """With nothing set, the engine uses a local SQLite file, the dev sink and a 30 s tick."""
    settings = Settings.from_env({})

    assert settings.database_url == "sqlite:///campaign.db"
    assert settings.smtp_host is None
    assert settings.uses_dev_sink
    assert settings.tick_seconds == 30.0


def test_environment_values_are_parsed_into_settings() -> None:
    """Values given as text arrive typed: ports as numbers, URLs without a trailing slash."""
    settings = Settings.from_env(
        {
            **PRODUCTION,
            "SMTP_PORT": "2525",
            "SMTP_SECURITY": "ssl",
            "TICK_SECONDS": "5",
            "PUBLIC_BASE_URL": "https://news.example.org/",
            "MAIL_FROM": "Clinic <news@example.org>",
        }
    )

    assert not settings.uses_dev_sink
    assert settings.effective_smtp_port == 2525
    assert settings.smtp_security == "ssl"
    assert settings.tick_seconds == 5.0
    assert settings.public_base_url == "https://news.example.org"
    assert (settings.sender_name, settings.sender_address) == ("Clinic", "news@example.org")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SMTP_PORT", "abc"),
        ("SMTP_PORT", "0"),
        ("SMTP_PORT", "70000"),
        ("SMTP_SECURITY", "tls"),
        ("MAIL_FROM", "not-an-address"),
        ("MAIL_FROM", "Eve <eve@example.org>\r\nBcc: victim@example.net"),
        ("REPLY_TO", "not-an-address"),
        ("REPLY_TO", "Ann <ann@example.org>\r\nBcc: victim@example.net"),
        ("PUBLIC_BASE_URL", "ftp://x"),
        ("TICK_SECONDS", "0"),
        ("TICK_SECONDS", "soon"),
        ("DATABASE_URL", "mysql://x"),
        ("BATCH_SIZE", "0"),
        ("LOG_LEVEL", "verbose"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(variable: str, value: str) -> None:
    """A bad value stops start-up with exit code 2 and a message naming the variable and value."""
    error = _config_error({variable: value})

    assert error.variable == variable
    assert error.exit_code == 2
    assert str(error).startswith(f"Config {variable!r}: has value {value!r}.")


def test_a_real_mail_server_without_a_secret_key_is_refused() -> None:
    """Setting SMTP_HOST but no SECRET_KEY is refused, naming SECRET_KEY."""
    error = _config_error({"SMTP_HOST": "smtp.example.org"})

    assert error.variable == "SECRET_KEY"
    assert "SECRET_KEY" in str(error)
    assert error.exit_code == 2


def test_a_short_secret_key_is_refused_without_showing_it() -> None:
    """A too-short SECRET_KEY is refused and the message does not repeat the key."""
    short_key = "hunter2-too-short"

    error = _config_error({"SMTP_HOST": "smtp.example.org", "SECRET_KEY": short_key})

    assert error.variable == "SECRET_KEY"
    assert short_key not in str(error)


def test_a_username_without_a_password_is_refused() -> None:
    """SMTP_USERNAME without SMTP_PASSWORD is refused, naming SMTP_PASSWORD."""
    environ = {**PRODUCTION}
    del environ["SMTP_PASSWORD"]

    error = _config_error(environ)

    assert error.variable == "SMTP_PASSWORD"


def test_secrets_never_appear_in_an_error_about_another_variable() -> None:
    """A bad SMTP_PORT next to real secrets reports the port and shows neither secret."""
    error = _config_error({**PRODUCTION, "SMTP_PORT": "abc"})

    assert error.variable == "SMTP_PORT"
    assert PASSWORD not in str(error)
    assert SECRET_KEY not in str(error)


def test_secrets_never_appear_in_the_settings_repr() -> None:
    """Printing or logging the settings shows neither the SMTP password nor the secret key."""
    settings = Settings.from_env(PRODUCTION)

    for shown in (repr(settings), str(settings)):
        assert PASSWORD not in shown
        assert SECRET_KEY not in shown
    assert settings.secret_key.get_secret_value() == SECRET_KEY


def test_the_database_password_never_appears_in_the_settings_repr() -> None:
    """The password inside DATABASE_URL is not shown when the settings are printed or logged."""
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://app:db-password-99@db.internal/campaign"}
    )

    assert "db-password-99" not in repr(settings)


def test_empty_strings_mean_the_default() -> None:
    """A variable set to an empty string behaves as if it were not set at all."""
    settings = Settings.from_env(
        {"DATABASE_URL": "", "SMTP_HOST": "", "SMTP_PORT": "", "TICK_SECONDS": "", "SECRET_KEY": ""}
    )

    assert settings == Settings.from_env({})
    assert settings.uses_dev_sink


def test_unrelated_environment_variables_are_ignored() -> None:
    """The real process environment, full of other variables, is accepted as it is."""
    settings = Settings.from_env({"PATH": "/usr/bin", "HOME": "/root", "TICK_SECONDS": "7"})

    assert settings.tick_seconds == 7.0


def test_real_environment_variables_win_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable set in the process environment overrides the same one in `.env`."""
    env_file = tmp_path / ".env"
    env_file.write_text("TICK_SECONDS=9\nLOG_LEVEL=DEBUG\n", encoding="utf-8")
    monkeypatch.setenv("TICK_SECONDS", "5")
    monkeypatch.delenv("LOG_LEVEL", raising=False)

    merged = load_environment(env_file)

    assert merged["TICK_SECONDS"] == "5"
    assert merged["LOG_LEVEL"] == "DEBUG"
    settings = Settings.from_env({k: merged[k] for k in ("TICK_SECONDS", "LOG_LEVEL")})
    assert (settings.tick_seconds, settings.log_level) == (5.0, "DEBUG")


def test_bounces_go_to_the_mail_from_domain_unless_bounce_domain_is_set() -> None:
    """The VERP return path goes to the MAIL_FROM domain by default, to BOUNCE_DOMAIN if set."""
    mail_from = {"MAIL_FROM": "News <news@Letters.example.org>"}
    assert Settings.from_env(mail_from).return_path_domain == "letters.example.org"
    chosen = Settings.from_env({**mail_from, "BOUNCE_DOMAIN": "Bounces.Example.COM."})
    assert chosen.return_path_domain == "bounces.example.com"


@pytest.mark.parametrize(
    "value",
    ["bounces@example.com", "ex ample.com", "-x.example.com", "straße.de", "a..b", "x\r\ny"],
)
def test_a_bounce_domain_that_is_not_a_domain_name_is_named_at_start_up(value: str) -> None:
    """An address, spaces, a leading hyphen, a U-label or a line break in BOUNCE_DOMAIN: refused."""
    error = _config_error({"BOUNCE_DOMAIN": value})
    assert "BOUNCE_DOMAIN" in str(error)


@pytest.mark.parametrize(
    ("url", "protocol", "security", "port", "folder"),
    [
        ("imaps://bounces%40example.org@mail.example.org/Bounces", "imap", "ssl", 993, "Bounces"),
        ("imap://bounces@mail.example.org", "imap", "starttls", 143, "INBOX"),
        ("pop3s://bounces@mail.example.org", "pop3", "ssl", 995, "INBOX"),
        ("pop3://bounces@127.0.0.1:1110?security=none", "pop3", "none", 1110, "INBOX"),
    ],
)
def test_a_bounce_mailbox_url_is_read_with_tls_unless_asked_otherwise(
    url: str, protocol: str, security: str, port: int, folder: str
) -> None:
    """Each scheme gets its protocol, TLS and standard port; plain text only with ?security=none."""
    settings = Settings.from_env({"BOUNCE_MAILBOX_URL": url, "BOUNCE_MAILBOX_PASSWORD": "pw"})

    mailbox = settings.bounce_mailbox
    assert mailbox is not None
    assert (mailbox.protocol, mailbox.security, mailbox.port, mailbox.folder) == (
        protocol,
        security,
        port,
        folder,
    )
    assert mailbox.username.startswith("bounces")


def test_a_bounce_mailbox_login_with_an_at_sign_is_decoded() -> None:
    """`bounces%40example.org@host` logs in as bounces@example.org."""
    settings = Settings.from_env(
        {"BOUNCE_MAILBOX_URL": "imaps://bounces%40example.org@host", "BOUNCE_MAILBOX_PASSWORD": "x"}
    )

    assert settings.bounce_mailbox is not None
    assert settings.bounce_mailbox.username == "bounces@example.org"
    assert str(settings.bounce_mailbox) == "imaps://host:993"


@pytest.mark.parametrize(
    "url",
    [
        "http://u@host",
        "imaps://host",
        "imaps://u@",
        "imaps://u@host:99999",
        "imap://u@host?security=off",
        "imaps://u@host/IN BOX",
    ],
)
def test_a_bad_bounce_mailbox_url_is_refused_naming_the_variable(url: str) -> None:
    """A URL that names no usable mailbox is a ConfigError about BOUNCE_MAILBOX_URL (exit 2)."""
    error = _config_error({"BOUNCE_MAILBOX_URL": url, "BOUNCE_MAILBOX_PASSWORD": "x"})

    assert error.variable == "BOUNCE_MAILBOX_URL"
    assert error.exit_code == 2


def test_a_password_in_the_bounce_mailbox_url_is_refused_and_not_shown() -> None:
    """The password belongs in BOUNCE_MAILBOX_PASSWORD; one written in the URL is not echoed."""
    error = _config_error({"BOUNCE_MAILBOX_URL": "imaps://u:hunter2@host"})

    assert error.variable == "BOUNCE_MAILBOX_URL"
    assert "hunter2" not in str(error)


def test_a_bounce_mailbox_without_a_password_is_refused() -> None:
    """BOUNCE_MAILBOX_URL alone is a ConfigError naming BOUNCE_MAILBOX_PASSWORD."""
    error = _config_error({"BOUNCE_MAILBOX_URL": "imaps://u@host"})

    assert error.variable == "BOUNCE_MAILBOX_PASSWORD"


def test_the_bounce_mailbox_password_never_appears_in_the_settings_repr() -> None:
    """The mailbox password is a secret: not in repr or str of the settings."""
    settings = Settings.from_env(
        {"BOUNCE_MAILBOX_URL": "imaps://u@host", "BOUNCE_MAILBOX_PASSWORD": "mailbox-hunter2"}
    )

    assert "mailbox-hunter2" not in repr(settings) + str(settings)


def test_replies_go_to_reply_to_when_set_else_to_mail_from() -> None:
    """REPLY_TO names where "reply" buttons write; unset, replies go to MAIL_FROM's address."""
    unset = Settings.from_env({"MAIL_FROM": "Clinic <news@example.org>"})
    given = Settings.from_env(
        {"MAIL_FROM": "Clinic <news@example.org>", "REPLY_TO": "Dr Ann <ann@example.org>"}
    )
    assert (unset.reply_to, unset.reply_to_address) == (None, "news@example.org")
    assert given.reply_to == "Dr Ann <ann@example.org>"
    assert given.reply_to_address == "ann@example.org"
