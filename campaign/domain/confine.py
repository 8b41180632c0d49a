"""Confinement of the files a plan names to the folders the operator set aside for content.

Pure path logic: a written path is resolved (symlinks included) and must land inside one of
the content folders, as a regular, non-hidden file path (no `.env`, no `.git/...`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def content_roots(*folders: Path | str) -> tuple[Path, ...]:
    """The content folders, resolved once, without repeats, in the order given."""
    roots: list[Path] = []
    for folder in folders:
        resolved = Path(folder).resolve()
        if resolved not in roots:
            roots.append(resolved)
    return tuple(roots)


def escape_reason(path: Path, roots: Sequence[Path]) -> str | None:
    """Why `path` is not a file the content folders may offer, or None if it is one.

    `path` is resolved first, so a symlink inside a content folder that points out of it is
    an escape like `../../etc/passwd` is.
    """
    try:
        real = path.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable folder
        return f"cannot be resolved ({exc})"
    for root in roots:
        if real.is_relative_to(root):
            hidden = [part for part in real.relative_to(root).parts if part.startswith(".")]
            if hidden:
                return f"is a hidden file or folder ({hidden[0]}): not content"
            return None
    via = f" (through a symlink, to {real})" if real != Path(path).absolute() else ""
    return f"is outside the content folders{via}: {_listed(roots)}"


def confined(path: Path, roots: Sequence[Path]) -> Path | None:
    """The real path of `path` if it is inside the content folders, else None."""
    return None if escape_reason(path, roots) else path.resolve()


def _listed(roots: Sequence[Path]) -> str:
    return ", ".join(str(root) for root in roots)
