"""The rule that keeps the output folder inside the manifest's folder.

A module of its own: the loader checks it once, and a plan from `matrix.plan.cache` checks it
again on every use, since a symlink can move the folder without touching the manifest."""

from __future__ import annotations

from pathlib import Path


def output_escape(raw: str, root: Path, lexical: Path) -> str | None:
    """Why the output folder `raw` (`lexical`: normalized, under `root`, the manifest's
    folder) may not hold engines, or None when it may."""
    if lexical == root:
        return f"output {raw!r} is the manifest's folder itself: name a folder inside it"
    if not lexical.is_relative_to(root):
        return (
            f"output {raw!r} is outside the manifest's folder: engines are only written inside it"
        )
    try:
        real, real_root = lexical.resolve(), root.resolve()
    except (OSError, RuntimeError) as error:
        return f"output {raw!r} cannot be resolved: {error}"
    if real == real_root or not real.is_relative_to(real_root):
        return (
            f"output {raw!r} leads to {str(real)!r} through a symlink, "
            "outside the manifest's folder"
        )
    return None
