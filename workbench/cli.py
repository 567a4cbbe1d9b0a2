"""The `workbench` command line: thin commands over library functions.

Every user error is a `WorkbenchError` and comes out as one line on stderr with exit code 1
(Typer's own usage errors exit 2). Set WORKBENCH_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import os
import sys
import tempfile
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.errors import WorkbenchError

app = typer.Typer(
    help="Explainability and introspective-agent workbench for transformer language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
explanations_app = typer.Typer(help="Read explanations back from the store.", no_args_is_help=True)
app.add_typer(explanations_app, name="explanations")

err_console = Console(stderr=True)


class OutputFormat(str, Enum):
    terminal = "terminal"
    html = "html"
    json = "json"


class Aggregate(str, Enum):
    token = "token"
    word = "word"


DbOption = typer.Option(
    None, "--db", help="DuckDB file (default: $WORKBENCH_DB or ./workbench.duckdb)."
)
ModelOption = typer.Option(
    None,
    "--model",
    "-m",
    help="Hub id, local directory or .gguf file (default: SmolLM2-135M-Instruct).",
)
DeviceOption = typer.Option("auto", "--device", help="auto, cpu or cuda.")
DtypeOption = typer.Option("auto", "--dtype", help="auto, float32, bfloat16 or float16.")


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a failure leaves no half-written file."""
    if not path.parent.exists():
        raise WorkbenchError(f"cannot write {str(path)!r}: folder does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _emit(exp, fmt: OutputFormat, out: Path | None) -> None:
    if fmt is OutputFormat.json:
        text = exp.to_json()
    elif fmt is OutputFormat.html:
        text = exp.to_html()
    else:
        text = None
    if out is not None:
        if text is None:
            raise WorkbenchError("--out needs --format html or json")
        _write_atomically(out, text)
        err_console.print(f"wrote {out}")
    elif text is not None:
        sys.stdout.write(text + "\n")
    else:
        exp.show(console=Console())


@app.command()
def explain(
    text: str = typer.Option(..., "--text", "-t", help="The input to explain."),
    method: str = typer.Option(
        "ig", "--method", help="Explanation method (unknown names list the known ones)."
    ),
    target: str | None = typer.Option(
        None,
        "--target",
        help="Continuation to attribute (causal LM), or a label name/index (classifier).",
    ),
    generate: int | None = typer.Option(
        None, "--generate", help="Attribute the model's greedy continuation of N tokens."
    ),
    contrast: str | None = typer.Option(
        None, "--contrast", help="Attribute log p(target) - log p(contrast)."
    ),
    steps: str = typer.Option(
        "32", "--steps", help="Integration steps, or 'auto' to refine until complete."
    ),
    baseline: str = typer.Option("pad", "--baseline", help="pad (the pad token, else EOS), eos or zero."),
    aggregate: Aggregate = typer.Option(Aggregate.token, "--aggregate", help="token or word."),
    fmt: OutputFormat = typer.Option(
        OutputFormat.terminal, "--format", help="terminal, html or json."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the html/json rendering to this file."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Save the explanation in the store."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method parameter KEY=VALUE (repeatable)."
    ),
) -> None:
    """Explain which input tokens drove a model's output.

    Example: workbench explain --method ig --text "The milk is in the fridge. To get the
    milk, open the" --target " fridge"
    """
    from explainers import explain as run_explain
    from explainers import get_method
    from workbench.models import load_model
    from workbench.store import Store

    explainer = get_method(method)  # fail on an unknown name before loading anything
    params = _method_params(explainer, {"steps": steps, "baseline": baseline}, param)
    store = Store(db) if save else None  # a bad database fails before the slow part
    lm = load_model(model, device=device, dtype=dtype, progress=True)
    exp = run_explain(
        lm,
        text,
        method=method,
        target=target,
        generate=generate,
        contrast=contrast,
        aggregate=aggregate.value,
        **params,
    )
    if store is not None:
        exp.save(store)
    _emit(exp, fmt, out)
    if store is not None and fmt is not OutputFormat.json:
        err_console.print(f"saved as explanation {exp.id} in {store.path}")


def _method_params(explainer, common: dict[str, str], pairs: list[str]) -> dict[str, object]:
    """Common options the method accepts, plus `--param KEY=VALUE` pairs (JSON values)."""
    import json

    accepted = explainer.parameter_names()
    params: dict[str, object] = {k: v for k, v in common.items() if k in accepted}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WorkbenchError(f"--param takes KEY=VALUE, not {pair!r}")
        if key not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise WorkbenchError(
                f"{explainer.name} has no parameter {key!r}; its parameters: {known}"
            )
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


@explanations_app.command("list")
def explanations_list(
    db: Path | None = DbOption,
    limit: int = typer.Option(20, "--limit", min=1, help="How many to show."),
    method: str | None = typer.Option(None, "--method", help="Only this method."),
) -> None:
    """List stored explanations, newest first.

    Example: workbench explanations list --limit 5
    """
    from workbench.store import Store

    rows = Store(db).list_explanations(limit=limit, method=method)
    if not rows:
        err_console.print("no explanations yet; run `workbench explain --text ...` first")
        return
    table = Table()
    table.add_column("id", no_wrap=True)
    table.add_column("when", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for name in ("model", "input", "target"):
        table.add_column(name, overflow="ellipsis", max_width=30)
    table.add_column("max |delta|", no_wrap=True)
    for r in rows:
        delta = "" if r["max_abs_delta"] is None else f"{r['max_abs_delta']:.3g}"
        text = r["input_text"] if len(r["input_text"]) <= 40 else r["input_text"][:37] + "..."
        table.add_row(
            r["id"],
            f"{r['created_at']:%Y-%m-%d %H:%M}",
            r["method"],
            r["model"],
            repr(text),
            repr(r["target_text"] or ""),
            delta,
        )
    Console().print(table)


@explanations_app.command("show")
def explanations_show(
    exp_id: str = typer.Argument(..., metavar="ID", help="Explanation id (from `list`)."),
    db: Path | None = DbOption,
    fmt: OutputFormat = typer.Option(
        OutputFormat.terminal, "--format", help="terminal, html or json."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the html/json rendering to this file."
    ),
) -> None:
    """Show one stored explanation.

    Example: workbench explanations show 3f2a9c1b7d10 --format html --out exp.html
    """
    from explainers import Explanation
    from workbench.store import Store

    _emit(Explanation.load(Store(db), exp_id), fmt, out)


@app.command()
def demo(db: Path | None = DbOption) -> None:
    """Run a short tour of the workbench on defaults and record it in the store.

    Example: workbench demo --db demo.duckdb
    """
    from workbench.demo import run_demo

    ids = run_demo(db)
    Console().print(
        f"\nDone. Browse it with: workbench explanations show {ids['explanation']}"
        + (f" --db {db}" if db else "")
    )


def main() -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    try:
        app()
    except WorkbenchError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # an unexpected failure is still one line unless debugging
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {first} (set WORKBENCH_DEBUG=1 for details)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
