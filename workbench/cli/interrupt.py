"""Ctrl-C as one line and exit code 130.

Click turns a KeyboardInterrupt into "Aborted!" (exit 1) before `main` could see it, so
while a command runs, SIGINT raises `Interrupted` instead, which passes through Click.
Stores write in transactions, so an interrupted command leaves nothing half-written and
a command that resumes (play, experiment) picks up where it stopped.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

GENERIC = "interrupted; nothing half-written: run the same command to resume"


class Interrupted(BaseException):
    """Ctrl-C during a command; the message says what was saved."""

    def __init__(self, message: str = GENERIC):
        super().__init__(message)
        self.message = message


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted()


@contextlib.contextmanager
def sigint_raises_interrupted() -> Iterator[None]:
    """Within the block, Ctrl-C raises `Interrupted` (the previous handler comes back after)."""
    try:
        previous = signal.signal(signal.SIGINT, _raise_interrupted)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
