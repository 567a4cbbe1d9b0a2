"""Terminal output shared by the commands: the consoles, tables, progress and file writes.

Human-readable output goes to stdout through `Console()`; status lines, warnings and
progress go to stderr (`err_console`), so stdout stays one clean document with --format json.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError
from workbench.files import write_atomically

err_console = Console(stderr=True)


def status(text: str) -> None:
    """One plain status line on stderr."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


def print_plain(out: Console, text: str, style: str | None = None) -> None:
    """`text` on `out` as it is: no rich markup read into it, nothing highlighted."""
    out.print(text, markup=False, highlight=False, style=style)


def working(text: str):
    """A spinner with `text` on stderr while a slow step runs (drawn only on a terminal)."""
    return err_console.status(text)


def write_json(payload: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, default=str) + "\n")


@contextlib.contextmanager
def progress(description: str) -> Iterator[Callable[..., None]]:
    """Progress on stderr: a bar on a terminal, gone when the block ends; elsewhere (a pipe,
    a log file) a plain line at each tenth of the work and at its end.

    Yields `update(done, total, description=None)`, which is the `progress(done, total)`
    callback the libraries take.
    """
    if not err_console.is_terminal:  # rich would still leave an empty line behind
        yield _progress_lines(description)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None = None, description: str | None = None) -> None:
            fields: dict[str, Any] = {"completed": done}
            if total is not None:
                fields["total"] = total
            if description is not None:
                fields["description"] = description
            bar.update(task, **fields)

        yield update


def _progress_lines(title: str) -> Callable[..., None]:
    """`update(done, total)` that prints "title: done/total" to stderr when the work crosses
    a tenth of its total, from the first unit done (a total may grow, as adaptive IG's
    does; an update without one keeps the last)."""
    state: dict[str, Any] = {"total": None, "key": None}

    def update(done: int, total: int | None = None, description: str | None = None) -> None:
        if total is not None:
            state["total"] = total
        total = state["total"]
        if done <= 0:
            return  # nothing done yet: a command that fails at once keeps its one-line error
        label = description or title
        tenth = done if not total else (10 * done) // total
        key = (label, tenth, total if done >= (total or 0) else None)
        if key == state["key"]:
            return
        state["key"] = key
        shown = f"{done}/{total}" if total else f"{done}"
        sys.stderr.write(f"{label}: {shown}\n")
        sys.stderr.flush()

    return update


def write_out(out: Path, text: str) -> None:
    """`text` into the `--out` file (replaced whole), or on stdout for `--out -`."""
    if out == Path("-"):
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    write_atomically(out, text)
    status(f"wrote {out}")


def emit_explanation(exp, fmt, out: Path | None) -> None:
    """An explanation as a heatmap on the terminal, or HTML/JSON on stdout or in `--out`
    (`--out -`: stdout too)."""
    if fmt.value == "json":
        text = exp.to_json()
    elif fmt.value == "html":
        text = exp.to_html()
    else:
        text = None
    if out is not None:
        if text is None:
            raise WorkbenchError("--out needs --format html or json")
        write_out(out, text)
    elif text is not None:
        sys.stdout.write(text + "\n")
    else:
        exp.show(console=Console())


def metric_table(evaluations, title: str) -> Table:
    """One row per metric, one column per method (fits a terminal with many metrics)."""
    from explainers.metrics import HIGHER_IS_BETTER

    names = list(dict.fromkeys(k for e in evaluations for k in e.metrics))
    table = Table("metric", "better", *[e.method for e in evaluations], title=title)
    for name in names:
        cells = [e.metrics.get(name) for e in evaluations]
        better = "higher" if HIGHER_IS_BETTER.get(name, True) else "lower"
        table.add_row(name, better, *["-" if v is None or v != v else f"{v:.4f}" for v in cells])
    return table


def report_table(rows, title: str | None = None) -> Table:
    """Play results per level and condition, with 95% intervals over games."""
    table = Table(
        "level",
        "condition",
        "games",
        "episodes",
        "success [95% CI]",
        "score [95% CI]",
        "moves to win",
        title=title,
    )
    for r in rows:
        table.add_row(
            str(r.level or "?"),
            r.condition,
            str(r.games),
            str(r.episodes),
            r.success.text(),
            r.score.text(),
            "" if r.steps_to_win is None else f"{r.steps_to_win:.1f}",
        )
    return table


def episodes_table(episodes: list[dict[str, Any]], title: str | None = None) -> Table:
    """A run's episodes with their ids (which `explain-step --episode` takes)."""
    table = Table(
        "episode", "game", "level", "condition", "trial", "won", "score", "moves", title=title
    )
    table.columns[0].no_wrap = True
    table.columns[1].no_wrap = True
    for e in episodes:
        table.add_row(
            e["id"],
            e["game"],
            str(e["level"] or "?"),
            e["condition"],
            str(e["trial"]),
            "yes" if e["won"] else "no",
            f"{e['score']}/{e['max_score']}",
            str(e["moves"]),
        )
    return table


OBJECTIVE_TEXT = {
    "choice": "log p(chosen | candidates)",
    "margin": "score margin over the runner-up",
    "logprob": "log p(command text)",
}


def check_line(result) -> str:
    """Whether the segment masses can be trusted, said whether or not they pass."""
    check = result.check
    delta, expected = check.get("delta"), check.get("expected")
    if check.get("exact") is not None:
        how = (
            f"exact Shapley values over {check.get('evaluations')} coalitions"
            if check["exact"]
            else f"sampled Shapley values over {check.get('evaluations')} coalitions "
            "(standard errors in --format json)"
        )
        return (
            f"{how}: they add up to v(all) - v(none) = {expected:+.3f} "
            f"(gap {delta:+.1e}), status {check.get('status')}"
        )
    if delta is not None and expected is not None:
        knots = check.get("knots")
        counted = f" with {knots} knots" if knots else ""
        return (
            f"completeness{counted}: the attributions add up to {expected + delta:+.3f} of "
            f"f(input) - f(baseline) = {expected:+.3f} (delta {delta:+.3f}), "
            f"status {check.get('status')}"
        )
    return f"status {check.get('status')} ({result.method} has no completeness check)"


def show_step_explanation(result, out: Console) -> None:
    """An explained step: the decision's objective, its attribution per prompt segment,
    whether the masses are exact or complete, and what removing each tip does."""
    print_plain(
        out,
        f"step {result.step} of episode {result.episode_id}: action {result.action!r}; "
        f"{OBJECTIVE_TEXT.get(result.objective, result.objective)} = {result.value:+.3f}",
    )
    segments = Table("segment", "attribution", "|segment| / sum of |segments|")
    scale = sum(abs(v) for v in result.segments.values()) or 1.0
    for name, value in result.segments.items():
        segments.add_row(name, f"{value:+.3f}", f"{100 * abs(value) / scale:.0f}%")
    segments.add_row("total", f"{result.total:+.3f}", "")
    out.print(segments)
    print_plain(out, check_line(result))
    if result.tips:
        tips = Table(
            "tip", "attribution", "effect of removing it", "without it the agent",
            title="tip ablation",
        )  # fmt: skip
        for t in result.tips:
            then = f"changes to {t['new_action']!r}" if t["action_changed"] else "does the same"
            effect = t.get("effect")
            tips.add_row(
                t["tip"], f"{t['mass']:+.3f}", "" if effect is None else f"{effect:+.3f}", then
            )
        # The rest of the tips segment, so that the column adds up to it.
        tips.add_row("(header, bullets, line breaks)", f"{result.tip_scaffold:+.3f}", "", "")
        out.print(tips)
        if any(t.get("disagrees") for t in result.tips):
            print_plain(
                out,
                "a tip's attribution and its removal effect differ in sign: the attribution "
                "is its share of the decision averaged over the other parts of the prompt "
                "being there or not; the removal effect is what dropping it alone does "
                "with everything else in place. They differ when the tip's effect depends "
                "on what else the prompt says.",
                style="yellow",
            )
    exp = result.explanation
    if exp is not None:
        from explainers.render import warning_lines

        for line in warning_lines(exp):
            print_plain(
                out,
                f"{line}; the masses above are not reliable: re-run with "
                "--param steps=auto until the completeness delta is small",
                style="bold red",
            )
