"""The progress-bar rule shared by every long command (below every package, so any may use it)."""

from __future__ import annotations

import sys

__all__ = ["show_progress"]


def show_progress(no_progress: bool) -> bool:
    """Progress bars unless `--no-progress`, and never when stderr is not a terminal (a log file)."""
    return not no_progress and sys.stderr.isatty()
