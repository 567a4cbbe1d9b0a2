"""The `workbench` command line: thin commands over library functions.

One module per command group; `render` holds the shared terminal output and `options` the
shared options. Heavy libraries (torch, transformers, shap, streamlit) are imported inside
the commands, so `workbench --help` answers at once.

Every user error is a `WorkbenchError` and comes out as one line on stderr with exit code 1;
a usage error (a bad option value) is one line with exit code 2; Ctrl-C is one line with
exit code 130. Set WORKBENCH_DEBUG=1 to see tracebacks, of user errors too.
"""

from __future__ import annotations

import os
import sys

import typer

from workbench import distributed
from workbench.cli import (
    compare,
    concepts,
    dashboard,
    demo,
    evaluate,
    experiment,
    explain,
    explain_step,
    explanations,
    export,
    finetune,
    games,
    launch,
    mistakes,
    patch,
    play,
    probe,
    runs,
    sae,
    tips,
)
from workbench.cli.interrupt import GENERIC, Interrupted
from workbench.cli.render import err_console
from workbench.errors import WorkbenchError

app = typer.Typer(
    help="Explainability and introspective-agent workbench for transformer language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: paragraphs are re-wrapped to the terminal and option names are never cut
    # (rich's help tables truncate long option names at 80 columns).
    rich_markup_mode=None,
)
app.command("demo")(demo.demo)
app.command("explain")(explain.explain)
app.add_typer(explanations.app, name="explanations")
app.command("evaluate")(evaluate.evaluate)
app.command("compare")(compare.compare)
app.command("probe")(probe.probe)
app.command("patch")(patch.patch)
app.add_typer(games.app, name="games")
app.command("play")(play.play)
app.command("report")(runs.report)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(runs.episodes_app, name="episodes")
app.add_typer(tips.app, name="tips")
app.add_typer(experiment.app, name="experiment")
app.command("explain-step")(explain_step.explain_step)
app.command("mistakes")(mistakes.mistakes)
app.command("tcav")(concepts.tcav)
app.command("steer")(concepts.steer)
app.command("rsa")(concepts.rsa)
app.add_typer(sae.app, name="sae")
app.command("finetune")(finetune.finetune)
app.command("export")(export.export)
app.command("dashboard")(dashboard.dashboard)


def _error(text: str) -> None:
    if not distributed.is_main():
        # Another torchrun rank: rank 0 prints the job's errors ("rank N: ..." when they came
        # from another rank or a lost peer); this rank adds a line only for its own failure.
        if not text.startswith("rank "):
            sys.stderr.write(f"error: rank {distributed.world().rank}: {text}\n")
        return
    err_console.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)


def _usage_message(exc: Exception) -> str:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    return " ".join(message.split()) + (f" (see `{ctx.command_path} --help`)" if ctx else "")


def main(args: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr and a non-zero exit.

    The command is invoked here rather than through Typer's `app()`, which would turn
    Ctrl-C into a silent exit and usage errors into a multi-line panel.
    """
    command = typer.main.get_command(app)
    argv = sys.argv[1:] if args is None else list(args)
    if not distributed.is_main():  # under torchrun rank 0 alone prints results and progress
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
        err_console.quiet = True
    try:
        with command.make_context("workbench", argv) as ctx:
            command.invoke(ctx)
        code = 0
    except typer.Exit as exc:  # --help, or a command that exits with a code
        code = exc.exit_code
    except typer.TyperException as exc:  # a usage error: a bad option or value
        code = getattr(exc, "exit_code", 2)
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one printed the help already
            _error(_usage_message(exc))
    except WorkbenchError as exc:
        if os.environ.get("WORKBENCH_DEBUG"):
            raise  # the traceback, with the exception that caused the user error (`from exc`)
        if not launch.reported_by_launcher(exc):
            _error(str(exc))
        code = 1
    except KeyboardInterrupt as exc:
        message = exc.message if isinstance(exc, Interrupted) else GENERIC
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)
        code = 130
    except Exception as exc:  # an unexpected failure is still one line unless debugging
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _error(f"unexpected {type(exc).__name__}: {first} (set WORKBENCH_DEBUG=1 for details)")
        code = 1
    if distributed.launched():
        launch.finish(code)  # a torchrun rank: see there why it does not just exit
    sys.exit(code)
