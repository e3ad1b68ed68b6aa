"""Who runs what: claims on runs, a queue that retries what others hold, progress and ETA.

Several runners may work on one folder at once (on one machine, or on machines sharing a
file system with working `flock`): each run is claimed by an exclusive lock on
`<out>/claims/<key>.lock` before it trains, so the runners split the grid between them. A
killed runner's locks go with its process, so its runs are picked up again. Claim files are
never deleted: they stay one inode per key, so two runners can never both hold a key. What a
runner does after claiming must be decided from results.jsonl read then: the claim says who
works, the results file says what is done.

This module knows nothing of training or records: the runner passes `drain` a function that
tries one item (False: someone else holds it, or it waits on work someone else holds).

Example:
    >>> claims = Claims(Path("runs/experiments/paper-simulator"))  # doctest: +SKIP
    >>> with claims.hold("cnan_at/all/s0") as mine:  # doctest: +SKIP
    ...     if mine: train()
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

__all__ = ["CLAIMS_DIR", "Claims", "Progress", "drain", "eta_text"]

log = logging.getLogger(__name__)

CLAIMS_DIR = "claims"

T = TypeVar("T")


def _lock_file(path: Path) -> IO[str] | None:
    """The open file holding an exclusive lock on `path` (close it to release), or None if another holds it."""
    f = open(path, "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def _locked(path: Path) -> bool:
    """Whether a runner (another one, or this one under another open file) holds the claim file `path` now."""
    if not path.exists():
        return False
    f = _lock_file(path)
    if f is None:
        return True
    f.close()
    return False


class Claims:
    """The claim files of one results folder, and the claims this runner holds."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.held: set[str] = set()

    def path(self, key: str) -> Path:
        return self.out / CLAIMS_DIR / (key.replace("/", "__") + ".lock")

    def claim(self, key: str) -> IO[str] | None:
        """An exclusive lock on `key` (the open file; close it to release), or None if another runner holds it."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return _lock_file(path)

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[bool]:
        """Hold `key` for the block; yields False (and holds nothing) when another runner has it."""
        f = self.claim(key)
        if f is None:
            yield False
            return
        self.held.add(key)
        try:
            yield True
        finally:
            self.held.discard(key)
            f.close()

    def held_elsewhere(self, key: str) -> bool:
        """Whether another runner is on `key` now (the dry run's `busy`); creates no folder."""
        return _locked(self.path(key))

    def count_held_elsewhere(self) -> int:
        """How many runs or searches other runners are on now (the ETA shares what is left among the runners)."""
        folder = self.out / CLAIMS_DIR
        if not folder.is_dir():
            return 0
        own = {self.path(k) for k in self.held}
        return sum(_locked(p) for p in folder.glob("*.lock") if p not in own)


def eta_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Progress:
    """This invocation's counts and training times, against the total planned."""

    total: int  # runs and search trials planned
    counts: dict[str, int] = field(default_factory=lambda: {"done": 0, "trained": 0, "reused": 0})  # this runner's
    durations: list[float] = field(default_factory=list)  # this runner's training seconds per run

    def position(self, finished: int) -> tuple[int, int]:
        """(the number of the run about to start, the total) for `[i/total]` log lines; `finished`: by any runner."""
        return min(finished + 1, self.total), self.total

    def eta(self, i: int, runners: int) -> str:
        """`, ETA 1h02m at 40 s/run with 2 runners`: the runs left shared among the runners; empty before any run."""
        if not self.durations:
            return ""
        per_run = sum(self.durations) / len(self.durations)
        return f", ETA {eta_text(per_run * (self.total - i + 1) / runners)} at {per_run:.0f} s/run" + (
            f" with {runners} runners" if runners > 1 else ""
        )


def drain(queue: Sequence[T], attempt: Callable[[T], bool], poll_seconds: float) -> None:
    """Try every item in order; retry those `attempt` could not do (False) until none is left, waiting
    `poll_seconds` whenever a whole pass did nothing."""
    pending = list(queue)
    while pending:
        left = [item for item in pending if not attempt(item)]
        if len(left) == len(pending):
            log.info(
                "%d run(s) held by other runners (or waiting for their tuning); checking again in %.0f s",
                len(left),
                poll_seconds,
            )
            time.sleep(poll_seconds)
        pending = left
