"""Ctrl-C as one line and exit code 130.

A command that knows what an interruption saved (play counts its episodes) raises
`Interrupted` with that message; any other KeyboardInterrupt gets the generic one. Stores
write in transactions, so an interrupted command leaves nothing half-written, and the
commands that resume (play, experiment) pick up where they stopped.
"""

from __future__ import annotations

GENERIC = "interrupted; nothing half-written: run the same command to resume"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a command; the message says what was saved."""

    def __init__(self, message: str = GENERIC):
        super().__init__(message)
        self.message = message
