"""The campaign engine: a YAML plan sent day by day over SMTP to subscribers in a database."""

__version__ = "0.1.0"
