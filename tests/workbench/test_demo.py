"""The demo's heartbeat: what a long step of the tour prints while it runs (the tour itself
runs for minutes, by hand: `workbench demo`)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from workbench.cli.demo import Heartbeat


def test_a_heartbeat_line_says_how_far_a_step_is():
    out = io.StringIO()
    beat = Heartbeat(Console(file=out), "playing", "episodes", total=4)
    beat.advance()
    beat.advance()
    assert re.fullmatch(r"  \.\.\. playing: 2 of 4 episodes, \d+ s", beat.line())
    beat.update(7, 40)  # a library's progress(done, total) hook
    assert re.fullmatch(r"  \.\.\. playing: 7 of 40 episodes, \d+ s", beat.line())
    beat.update(8)  # a hook that gives no total keeps the last one
    assert " 8 of 40 " in beat.line()
    silent = Heartbeat(Console(file=out), "explaining the step", "passes")
    assert re.fullmatch(r"  \.\.\. explaining the step: \d+ s", silent.line())  # no "0 passes"


def test_a_heartbeat_stops_with_its_step():
    out = io.StringIO()
    with Heartbeat(Console(file=out), "knots", "knots", every=3600.0) as beat:
        beat.update(1, 2)
    assert not beat._thread.is_alive() and out.getvalue() == ""  # quiet when fast
