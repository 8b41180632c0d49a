"""The `campaign` command line: parses input, calls use cases, prints results, maps errors."""

from campaign.interfaces.cli import (  # noqa: F401 - importing registers the commands
    api_keys_command,
    dkim_command,
    marketer,
    operator,
    users_command,
    webhooks_command,
)
from campaign.interfaces.cli.common import load_settings, main
from campaign.logs import configure_logging

__all__ = ["configure_logging", "load_settings", "main"]
