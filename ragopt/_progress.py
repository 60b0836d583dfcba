"""Whether to show progress bars: one rule for every long loop (encoding, indexing, scoring, tuning)."""

from __future__ import annotations

import os
import sys

__all__ = ["progress_enabled"]


def progress_enabled(progress: bool | None) -> bool:
    """Progress bars go to stderr, and only to a terminal unless asked for explicitly (``progress=True``, or
    the environment variable ``RAGOPT_PROGRESS=1``; ``RAGOPT_PROGRESS=0`` silences them)."""
    if progress is None:
        env = os.environ.get("RAGOPT_PROGRESS", "").strip().lower()
        if env in ("1", "true", "yes", "on"):
            return True
        if env in ("0", "false", "no", "off"):
            return False
        return sys.stderr.isatty()
    return progress
