"""The campaign engine: a YAML plan sent day by day over SMTP to subscribers in a database.

`from campaign import Engine` is the public API (see `campaign.engine`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from campaign.engine import Engine

__version__ = "0.1.0"
__all__ = ["Engine", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import campaign` (every CLI command) must not pay for
    # SQLAlchemy, Jinja2 and the rest of the engine.
    if name == "Engine":
        from campaign.engine import Engine

        return Engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
