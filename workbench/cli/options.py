"""Options, formats and argument parsing shared by several commands.

Each option is defined once here so that its name, default, help text and validation
(`min=`, an Enum) are the same in every command that takes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from workbench.errors import WorkbenchError
from workbench.files import check_writable

if TYPE_CHECKING:
    from workbench.store import Store


class ExplanationFormat(str, Enum):
    """How one explanation is shown: a heatmap in the terminal, an HTML page or JSON."""

    terminal = "terminal"
    html = "html"
    json = "json"


class TableFormat(str, Enum):
    """How a tabular result is shown: a table in the terminal, or one JSON document."""

    table = "table"
    json = "json"


class Aggregate(str, Enum):
    token = "token"
    word = "word"


class Removal(str, Enum):
    """How faithfulness metrics remove tokens."""

    delete = "delete"
    replace = "replace"


class Convention(str, Enum):
    """Which definition of the faithfulness metrics (explainers.metrics.faithfulness)."""

    eraser = "eraser"
    ferret = "ferret"


DbOption = typer.Option(
    None, "--db", help="DuckDB file (default: $WORKBENCH_DB or ./workbench.duckdb)."
)
ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    help="Hub id, local directory or .gguf file (default: SmolLM2-135M-Instruct).",
)
AdapterOption = typer.Option(
    None,
    "--adapter",
    exists=True,
    file_okay=False,
    help="LoRA adapter folder (workbench finetune) to apply to the --model it was trained on.",
)
DeviceOption = typer.Option("auto", "--device", help="auto, cpu or cuda.")
DtypeOption = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16.")
GpusOption = typer.Option(
    None,
    "--gpus",
    min=1,
    help="Split the work over N GPUs: runs this command under torchrun, one process a GPU.",
)
DeviceMapOption = typer.Option(
    None,
    "--device-map",
    help="A model larger than one GPU: auto spreads its layers over every GPU (accelerate).",
)
LlmOption = typer.Option("local", "--llm", help="local, or openai:MODEL (OPENAI_BASE_URL).")
SelectOption = typer.Option("choose", "--select", help="choose (rank commands) or generate.")
TableFormatOption = typer.Option(TableFormat.table, "--format", help="table or json.")
ExplanationFormatOption = typer.Option(
    ExplanationFormat.terminal, "--format", help="terminal, html or json."
)
TargetOption = typer.Option(
    None, "--target", help="Continuation (causal LM) or label (classifier) to attribute."
)
RationaleOption = typer.Option(
    None, "--rationale", help="Human rationale: one 0/1 per token, e.g. 0,1,1,0, or a file."
)
RemovalOption = typer.Option(Removal.delete, "--removal", help="How metrics remove tokens.")
ConventionOption = typer.Option(
    Convention.eraser,
    "--convention",
    help="eraser: bins 1/5/10/20/50%, signed scores, k = rationale size; "
    "ferret: bins 10..100%, positive scores, k = 5.",
)
AggregateOption = typer.Option(Aggregate.token, "--aggregate", help="token or word.")
MaxTipsOption = typer.Option(5, "--max-tips", min=1, help="Tips per tip set at most.")
ParamOption = typer.Option([], "--param", "-p", help="Method parameter KEY=VALUE (repeatable).")
ParamsForMethodsOption = typer.Option(
    [], "--param", "-p", help="Method parameter KEY=VALUE or METHOD.KEY=VALUE (repeatable)."
)


def command_group(help: str) -> typer.Typer:
    """A group of subcommands (`workbench GROUP COMMAND`), its `help` shown when it is called
    without one; help text plain, as in the top-level app (no rich markup)."""
    return typer.Typer(help=help, no_args_is_help=True, rich_markup_mode=None)


STDOUT = Path("-")  # `--out -`: standard output, as in most command-line tools


def writable_file(path: Path | None, option: str = "--out") -> Path | None:
    """`path` if it can be written (`-`: standard output); checked before anything slow."""
    if path is not None and path != STDOUT:
        try:
            check_writable(path)
        except WorkbenchError as exc:
            raise WorkbenchError(f"{exc} ({option})") from None
    return path


def new_folder(path: Path, option: str = "--out") -> Path:
    """`path` for a command that writes a folder, where `-` (standard output) cannot be."""
    if path == STDOUT:
        raise WorkbenchError(f"{option} names a folder to create; - (standard output) cannot be")
    return path


def method_params(explainer, common: dict[str, object], pairs: list[str]) -> dict[str, object]:
    """The options given for the method (None: not given) plus `--param KEY=VALUE` pairs
    (JSON values), checked by the method: a parameter it does not take is an error."""
    params: dict[str, object] = {k: v for k, v in common.items() if v is not None}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WorkbenchError(f"--param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return explainer.check_params(params)


def method_params_for(methods: list[str], pairs: list[str]) -> dict[str, dict[str, object]]:
    """`--param KEY=VALUE` for every method that has KEY; `--param METHOD.KEY=VALUE` for one."""
    from explainers import get_method

    by_method: dict[str, list[str]] = {m: [] for m in methods}
    for pair in pairs:
        key = pair.partition("=")[0]
        name, dot, _ = key.partition(".")
        if dot and name in by_method:
            by_method[name].append(pair[len(name) + 1 :])
            continue
        if dot:
            raise WorkbenchError(f"--param {pair!r}: {name!r} is not one of the methods {methods}")
        takers = [m for m in methods if m != "random" and key in get_method(m).parameter_names()]
        if not takers:
            raise WorkbenchError(f"--param {pair!r}: none of {methods} has a parameter {key!r}")
        for m in takers:
            by_method[m].append(pair)
    return {m: method_params(get_method(m), {}, p) for m, p in by_method.items() if m != "random"}


def open_store(db: Path | None, read_only: bool = False) -> Store | None:
    """The store at `--db`, on the one process that may open it: None on the torchrun ranks
    other than 0 (DuckDB lets one process write). Reading commands pass read_only=True: they
    must neither create nor migrate a database, and must work on a read-only file. A command
    that writes results it may not save (`--no-save`) opens them with `open_results`."""
    from workbench import distributed
    from workbench.store import Store

    if not distributed.is_main():
        return None
    return Store(db, read_only=read_only)


@dataclass(frozen=True)
class Results:
    """Where a command's results go, with the two reasons for writing none told apart.

    Under torchrun every rank runs the command but rank 0 alone writes, so "no store here"
    means either that saving is off (`--no-save`: `saving` is False) or that another process
    writes (`saving` is True, `store` None).
    """

    saving: bool  # the results are stored (by rank 0)
    store: Store | None  # the store this process writes to; None unless `writes`

    @property
    def writes(self) -> bool:
        """This process writes the results: saving is on and this is the writing rank."""
        return self.store is not None


def open_results(db: Path | None, save: bool = True) -> Results:
    """The destination of a command's results: the store at `--db` when `save`, opened on
    the writing process alone (rank 0 under torchrun)."""
    return Results(save, open_store(db) if save else None)
