"""The `workbench` command line: thin commands over library functions.

Every user error is a `WorkbenchError` and comes out as one line on stderr with exit code 1
(Typer's own usage errors exit 2). Set WORKBENCH_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import json
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

TargetOption = typer.Option(
    None, "--target", help="Continuation (causal LM) or label (classifier) to attribute."
)
RationaleOption = typer.Option(
    None, "--rationale", help="Human rationale: one 0/1 per token, e.g. 0,1,1,0, or a file."
)
RemovalOption = typer.Option(
    "delete", "--removal", help="How metrics remove tokens: delete or replace."
)
AggregateOption = typer.Option(Aggregate.token, "--aggregate", help="token or word.")


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
    text: str | None = typer.Option(None, "--text", "-t", help="The input to explain."),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="JSONL file, one {text, target} per line: explain them all."
    ),
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
    baseline: str = typer.Option(
        "pad", "--baseline", help="pad (the pad token, else EOS), eos or zero."
    ),
    aggregate: Aggregate = AggregateOption,
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
    llm: str = typer.Option(
        "local",
        "--llm",
        help="Prompting methods: local (the --model) or openai:MODEL (OPENAI_BASE_URL).",
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

    if (text is None) == (dataset is None):
        raise WorkbenchError("give either --text or --dataset")
    explainer = get_method(method)  # fail on an unknown name before loading anything
    params = _method_params(explainer, {"steps": steps, "baseline": baseline}, param)
    if llm != "local":
        params["llm"] = _prompting_llm(explainer, llm, model, device, dtype)
    items = None
    if dataset is not None:
        from explainers.metrics.compare import load_dataset

        items = [{"text": it.text, "target": it.target} for it in load_dataset(dataset)]
    store = Store(db) if save else None  # a bad database fails before the slow part
    # An endpoint answers prompting methods by itself: no local weights to load.
    lm = (
        getattr(params["llm"], "lm", None)
        if "llm" in params
        else load_model(model, device=device, dtype=dtype, progress=True)
    )
    if items is not None:
        _explain_dataset(lm, items, method, params, store, fmt, out)
        return
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


def _explain_dataset(lm, items, method, params, store, fmt: OutputFormat, out: Path | None):
    """Data-set mode: padded batches across inputs; all saved in one transaction."""
    import json
    import time

    from rich.progress import Progress

    from explainers.attribution.ig_batch import explain_dataset

    start = time.perf_counter()
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(f"{method} on {len(items)} inputs", total=len(items))
        exps = explain_dataset(lm, items, method, on_done=lambda _: bar.advance(task), **params)
    seconds = time.perf_counter() - start
    records = [json.loads(e.to_json()) for e in exps]
    ids = store.save_explanations(records) if store is not None else []
    for exp, exp_id in zip(exps, ids):
        exp.id = exp_id
    if out is not None:
        _write_atomically(out, "".join(e.to_json() + "\n" for e in exps))
    summary = {
        "method": method,
        "count": len(exps),
        "seconds": round(seconds, 3),
        "inputs_per_second": round(len(exps) / seconds, 3),
        "ids": ids,
    }
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        Console().print(
            f"{method}: {len(exps)} inputs in {seconds:.2f} s "
            f"({len(exps) / seconds:.2f} inputs/s)"
            + (f", saved in {store.path}" if store is not None else "")
        )


def _prompting_llm(explainer, spec: str, model: str | None, device: str, dtype: str):
    """The `--llm` a prompting method asks (other methods need the weights themselves)."""
    from workbench.llm import make_llm

    if explainer.category != "prompting":
        raise WorkbenchError(
            f"--llm applies to prompting methods; {explainer.name} needs local weights (--model)"
        )
    return make_llm(spec, model=model, device=device, dtype=dtype)


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
    from workbench.settings import db_path

    ids = run_demo(db)
    Console().print(
        f"\nDone. Open the dashboard on what the demo recorded:\n"
        f"  workbench dashboard --db {db_path(db)}\n"
        f"(run {ids['run']}, episode {ids['episode']}; or in the terminal:"
        f" workbench explanations show {ids['step_explanation']}"
        + (f" --db {db}" if db else "")
        + ")",
        markup=False,
        highlight=False,
    )


games_app = typer.Typer(help="Make and list TextWorld cooking games.", no_args_is_help=True)
app.add_typer(games_app, name="games")


class TableOrJson(str, Enum):
    table = "table"
    json = "json"


@games_app.command("make")
def games_make(
    level: int = typer.Option(..., "--level", help="Difficulty level 1-10 (GATA table)."),
    count: int = typer.Option(1, "--count", help="How many games."),
    seed: int = typer.Option(0, "--seed", help="Base seed; same seed, same games."),
    split: str = typer.Option("train", "--split", help="train, valid or test."),
    out: Path = typer.Option(..., "--out", help="Game-set folder (created; may hold games)."),
    jobs: int = typer.Option(1, "--jobs", help="Games compiled in parallel."),
) -> None:
    """Make tw-cooking games of one level into a game-set folder with a manifest.

    Example: workbench games make --level 3 --count 20 --seed 7 --split train --out games/l3
    """
    from rich.progress import Progress

    import games as game_sets

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task(f"level {level} games", total=max(count, 0))
        result = game_sets.make(
            level, count, seed, split, out, jobs=jobs, on_game=lambda _: bar.advance(task)
        )
    err_console.print(
        f"{len(result.added)} new game(s), {len(result.existing)} already there, in {out}"
    )


@games_app.command("list")
def games_list(
    path: Path = typer.Argument(..., metavar="DIR", help="Game-set folder or one game file."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table or json."),
) -> None:
    """List the games of a game set.

    Example: workbench games list games/l3
    """
    import json

    import games as game_sets

    found = game_sets.list_games(path)
    if fmt is TableOrJson.json:
        sys.stdout.write(json.dumps([g.to_dict() for g in found], indent=1) + "\n")
        return
    table = Table("id", "level", "split", "seed", "max score", "walkthrough", "ingredients")
    table.columns[0].no_wrap = True  # ids are copied into other commands
    for g in found:
        table.add_row(
            g.id,
            str(g.level or "?"),
            g.split or "",
            "" if g.seed is None else str(g.seed),
            str(g.max_score),
            str(g.walkthrough_steps),
            ", ".join(g.ingredients),
        )
    Console().print(table)


@app.command("play")
def play_command(
    games_paths: list[Path] = typer.Option(
        ..., "--games", "-g", help="Game-set folder or game file (repeatable)."
    ),
    agent: str = typer.Option("llm", "--agent", help="llm, random or expert."),
    llm: str = typer.Option("local", "--llm", help="local, or openai:MODEL (OPENAI_BASE_URL)."),
    select: str = typer.Option("choose", "--select", help="choose (rank commands) or generate."),
    score_mode: str = typer.Option(
        "sum", "--score-mode", help="choose: sum, mean or calibrated log-probabilities."
    ),
    trials: int = typer.Option(1, "--trials", help="Episodes per game and condition."),
    parallel: int = typer.Option(8, "--parallel", help="Games stepping (and prompted) together."),
    max_steps: int = typer.Option(50, "--max-steps", help="Commands per episode at most."),
    seed: int = typer.Option(0, "--seed", help="Seeds random choices (and sampling)."),
    run_name: str | None = typer.Option(
        None, "--run-name", help="Name the run; an unfinished run of this name is resumed."
    ),
    conditions: list[str] = typer.Option(
        [], "--condition", help="NAME or NAME=TIPS_FILE (one tip a line); repeatable."
    ),
    prompt: Path | None = typer.Option(
        None, "--prompt", help="Acting-prompt template file (see agents.prompt)."
    ),
    history: int = typer.Option(5, "--history", help="Past steps shown in the prompt."),
    example: Path | None = typer.Option(
        None, "--example", help="A game file whose walkthrough is the prompt's worked example."
    ),
    temperature: float = typer.Option(0.0, "--temperature", help="generate: 0 is greedy."),
    concurrency: int = typer.Option(16, "--concurrency", help="openai: requests in flight."),
    timeout: float = typer.Option(60.0, "--timeout", help="openai: seconds per request."),
    retries: int = typer.Option(4, "--retries", help="openai: retries per call (backoff)."),
    workers: str = typer.Option("auto", "--workers", help="Game processes: auto or a number."),
    tips: str | None = typer.Option(
        None, "--tips", help="none, self, expert, reflexion or general (Introspective Tips)."
    ),
    tipset: str | None = typer.Option(
        None, "--tipset", help="Tip set id: the general set, or the tips learning starts from."
    ),
    max_tips: int = typer.Option(5, "--max-tips", help="Tips per tip set at most."),
    tip_prompts: Path | None = typer.Option(
        None, "--tip-prompts", help="Folder of self/expert/reflexion/merge.txt tip prompts."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Play games with an agent and record every episode, step and LLM call.

    With --tips, trial t+1 of a game plays with the tips the LLM wrote after trial t
    (self, expert, reflexion), or every trial with a general set (--tips general --tipset ID).

    Example: workbench play --games games/l3 --agent llm --trials 3 --parallel 8 --run-name l3-llm
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import agents
    import games as game_sets
    from workbench.llm import LLMUnavailableError, make_llm
    from workbench.store import Store, new_id

    if agent not in agents.AGENTS:
        raise WorkbenchError(f"unknown agent {agent!r}; choose one of {', '.join(agents.AGENTS)}")
    if workers != "auto" and not workers.isdigit():
        raise WorkbenchError(f"--workers takes auto or a number, not {workers!r}")
    tip_options = _check_tip_options(tips, tipset, max_tips, tip_prompts, agent, conditions, db)
    found = [g for p in games_paths for g in game_sets.list_games(p)]
    conds = [_parse_condition(c) for c in conditions] or None
    template = (
        agents.PromptTemplate.from_file(prompt, history)
        if prompt
        else agents.PromptTemplate(history_steps=history)
    )
    store = Store(db)
    run_name = run_name or f"play-{new_id()}"
    options: dict[str, object] = {}
    language_model = None
    if agent == "llm":
        if select not in agents.SELECTIONS:
            raise WorkbenchError(f"unknown --select {select!r}; choose one of choose, generate")
        backend_options = (
            {"concurrency": concurrency, "timeout": timeout, "max_retries": retries}
            if llm.startswith("openai")
            else {}
        )
        language_model = make_llm(llm, model=model, device=device, dtype=dtype, **backend_options)
        shown = game_sets.list_games(example)[0] if example else None
        options = {
            "select": select,
            "score_mode": score_mode,
            "template": template,
            "temperature": temperature,
            "example": agents.worked_example(shown) if shown else "",
        }
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    wins = [0]
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"{run_name}", total=None)

        def started(to_play: int, already: int) -> None:
            bar.update(task, total=to_play)
            if already:
                err_console.print(f"resuming {run_name}: {already} episode(s) already done")

        def finished(episode) -> None:
            wins[0] += episode.won
            bar.update(task, advance=1, description=f"{run_name} (won {wins[0]})")

        try:
            if tip_options is not None:
                from agents.tips import play_tips

                result = play_tips(
                    found,
                    [tips],
                    llm=language_model,
                    store=store,
                    trials=trials,
                    parallel=parallel,
                    max_steps=max_steps,
                    seed=seed,
                    run_name=run_name,
                    workers=workers if workers == "auto" else int(workers),
                    on_episode=finished,
                    **tip_options,
                    **options,
                )
            else:
                result = agents.play(
                    found,
                    agent,
                    llm=language_model,
                    trials=trials,
                    conditions=conds,
                    parallel=parallel,
                    max_steps=max_steps,
                    seed=seed,
                    store=store,
                    run_name=run_name,
                    workers=workers if workers == "auto" else int(workers),
                    on_start=started,
                    on_episode=finished,
                    **options,
                )
        except LLMUnavailableError as exc:
            raise WorkbenchError(
                f"{exc}; finished episodes are saved, resume with --run-name {run_name}"
            ) from exc
    won = sum(e.won for e in result.episodes)
    err_console.print(
        f"run {result.run_name}: played {len(result.episodes)} episode(s), won {won}"
        f" ({result.skipped} done before); {result.steps_per_second:.1f} steps/s."
        f" See: workbench report --run {result.run_name}" + (f" --db {db}" if db else ""),
        markup=False,
        highlight=False,
    )


def _parse_condition(text: str):
    """`NAME` or `NAME=TIPS_FILE` (one tip a line) as an agents.Condition."""
    from agents import Condition

    name, sep, file = text.partition("=")
    if not name:
        raise WorkbenchError(f"--condition takes NAME or NAME=TIPS_FILE, not {text!r}")
    if not sep:
        return Condition(name)
    tips_file = Path(file)
    if not tips_file.is_file():
        raise WorkbenchError(f"tips file {file!r} of condition {name!r} does not exist")
    tips = tuple(t.strip() for t in tips_file.read_text(encoding="utf-8").splitlines() if t.strip())
    return Condition(name, tips)


@app.command("report")
def report_command(
    run: str | None = typer.Option(None, "--run", help="Run name or id (default: latest)."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table or json."),
    db: Path | None = DbOption,
) -> None:
    """Success rate and normalised score per level and condition, with 95% CIs over games.

    Example: workbench report --run l3-llm --format json
    """
    import json

    from agents import report
    from workbench.store import Store

    rep = report(Store(db), run)
    if fmt is TableOrJson.json:
        sys.stdout.write(json.dumps(rep.to_dict(), default=str) + "\n")
        return
    table = Table(
        "level",
        "condition",
        "games",
        "episodes",
        "success [95% CI]",
        "score [95% CI]",
        "moves to win",
        title=f"run {rep.run['name']} ({rep.run['status']})",
    )
    for r in rep.rows:
        table.add_row(
            str(r.level or "?"),
            r.condition,
            str(r.games),
            str(r.episodes),
            r.success.text(),
            r.score.text(),
            "" if r.steps_to_win is None else f"{r.steps_to_win:.1f}",
        )
    Console().print(table)


class MetricFormat(str, Enum):
    table = "table"
    json = "json"


def _method_params_for(methods: list[str], pairs: list[str]) -> dict[str, dict[str, object]]:
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
    return {m: _method_params(get_method(m), {}, p) for m, p in by_method.items() if m != "random"}


def _metric_table(evaluations, title: str) -> Table:
    """One row per metric, one column per method (fits a terminal with many metrics)."""
    from explainers.metrics import HIGHER_IS_BETTER

    names = list(dict.fromkeys(k for e in evaluations for k in e.metrics))
    table = Table("metric", "better", *[e.method for e in evaluations], title=title)
    for name in names:
        cells = [e.metrics.get(name) for e in evaluations]
        better = "higher" if HIGHER_IS_BETTER.get(name, True) else "lower"
        table.add_row(name, better, *["-" if v is None or v != v else f"{v:.4f}" for v in cells])
    return table


def _load_for_explanation(model: str | None, exp_model: str, device: str, dtype: str):
    from workbench.models import DEFAULT_MODEL, load_model

    name = model if model is not None else (None if exp_model == DEFAULT_MODEL else exp_model)
    return load_model(name, device=device, dtype=dtype, progress=True)


@app.command("evaluate")
def evaluate_command(
    explanation: str | None = typer.Option(
        None, "--explanation", help="Evaluate a stored explanation (id from `explanations list`)."
    ),
    method: str = typer.Option(
        "ig", "--method", help="Method to explain with; with --dataset, a comma-separated list."
    ),
    text: str | None = typer.Option(None, "--text", "-t", help="The input to explain and judge."),
    target: str | None = TargetOption,
    rationale: str | None = RationaleOption,
    dataset: Path | None = typer.Option(
        None, "--dataset", help="JSONL file: one {text, target?, rationale?} per line."
    ),
    fmt: MetricFormat = typer.Option(MetricFormat.table, "--format", help="table or json."),
    removal: str = RemovalOption,
    aggregate: Aggregate = AggregateOption,
    random_reference: bool = typer.Option(
        True, "--random/--no-random", help="With --dataset, also summarise a random attribution."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(
        True, "--save/--no-save", help="Store the explanation and its metric values."
    ),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method parameter KEY=VALUE or METHOD.KEY=VALUE (repeatable)."
    ),
) -> None:
    """Say how faithful (and, with --rationale, how plausible) an explanation is.

    Example: workbench evaluate --method occlusion --text "the milk is in the fridge Q"
    --target " milk" --rationale 0,1,0,0,0,0,0 --format json
    """
    from explainers import Explanation
    from explainers import explain as run_explain
    from explainers.metrics import evaluate
    from explainers.metrics.compare import evaluate_dataset, load_dataset, parse_methods
    from explainers.metrics.plausibility import parse_rationale
    from workbench.models import load_model
    from workbench.store import Store

    modes = [
        m
        for m, given in (("--explanation", explanation), ("--text", text), ("--dataset", dataset))
        if given is not None
    ]
    if len(modes) != 1:
        raise WorkbenchError(
            "give one of --explanation ID, --text TEXT (with --method) or --dataset FILE"
            + (f", not {' and '.join(modes)}" if modes else "")
        )
    if removal not in ("delete", "replace"):
        raise WorkbenchError(f"unknown removal {removal!r}; choose delete or replace")
    mask = parse_rationale(rationale) if rationale is not None else None
    if dataset is not None:
        if mask is not None:
            raise WorkbenchError("with --dataset, rationales come from the file's lines")
        methods = parse_methods(method)
        params = _method_params_for(methods, param)
        items = load_dataset(dataset)
        lm = load_model(model, device=device, dtype=dtype, progress=True)
        summaries = evaluate_dataset(
            lm,
            items,
            methods,
            params=params,
            aggregate=aggregate.value,
            removal=removal,
            with_random=random_reference,
        )
        if fmt is MetricFormat.json:
            payload = {
                "dataset": str(dataset),
                "inputs": len(items),
                "methods": [s.to_dict() for s in summaries],
            }
            sys.stdout.write(json.dumps(payload) + "\n")
        else:
            Console().print(_metric_table(summaries, f"{len(items)} inputs from {dataset}"))
        return
    store = Store(db) if (save or explanation is not None) else None
    if explanation is not None:
        exp = Explanation.load(store, explanation)
        lm = _load_for_explanation(model, exp.model, device, dtype)
    else:
        if "," in method:
            raise WorkbenchError(
                "evaluate takes one --method with --text; use `workbench compare` for several"
            )
        explainer = get_method_checked(method)
        params = _method_params(explainer, {}, param)
        lm = load_model(model, device=device, dtype=dtype, progress=True)
        exp = run_explain(
            lm, text, method=method, target=target, aggregate=aggregate.value, **params
        )
        if store is not None:
            exp.save(store)
    result = evaluate(exp, lm, mask, removal=removal)
    if store is not None and save:
        result.explanation_id = exp.id
        result.save(store)
    if fmt is MetricFormat.json:
        sys.stdout.write(result.to_json() + "\n")
        return
    Console().print(_metric_table([result], f"{exp.method} on {exp.input_text!r}"))
    if len(result.rows) > 1:
        rows = Table("target", *result.rows[0].keys(), title="per target token")
        for tok, row in zip(result.target_tokens, result.rows):
            rows.add_row(repr(tok), *[f"{v:.4f}" for v in row.values()])
        Console().print(rows)
    if store is not None and save:
        err_console.print(f"saved metrics of explanation {exp.id} in {store.path}")


def get_method_checked(name: str):
    """The registered attribution method `name` (metrics need per-token attribution scores)."""
    from explainers import get_method
    from explainers.metrics.compare import parse_methods

    parse_methods([name])
    return get_method(name)


@app.command("compare")
def compare_command(
    methods: str = typer.Option(
        "ig,occlusion,lime,shap", "--methods", help="Comma-separated attribution methods."
    ),
    text: str = typer.Option(..., "--text", "-t", help="The input to explain."),
    target: str | None = TargetOption,
    rationale: str | None = RationaleOption,
    plot: Path | None = typer.Option(
        None, "--plot", help="Write deletion/insertion curves of every method to this PNG."
    ),
    fmt: MetricFormat = typer.Option(MetricFormat.table, "--format", help="table or json."),
    removal: str = RemovalOption,
    aggregate: Aggregate = AggregateOption,
    random_reference: bool = typer.Option(
        True, "--random/--no-random", help="Also evaluate a random attribution (the floor)."
    ),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method parameter KEY=VALUE or METHOD.KEY=VALUE (repeatable)."
    ),
) -> None:
    """Run several attribution methods on one input and compare their faithfulness.

    Example: workbench compare --methods ig,occlusion,lime,shap --text "the milk is in the
    fridge Q" --target " milk" --plot curves.png
    """
    from explainers.metrics.compare import compare_methods, parse_methods, plot_comparison
    from explainers.metrics.plausibility import parse_rationale
    from workbench.models import load_model

    names = parse_methods(methods)
    params = _method_params_for(names, param)
    if removal not in ("delete", "replace"):
        raise WorkbenchError(f"unknown removal {removal!r}; choose delete or replace")
    mask = parse_rationale(rationale) if rationale is not None else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise WorkbenchError(f"--plot writes a PNG; name the file *.png, not {plot.name!r}")
    if plot is not None and not plot.parent.exists():
        raise WorkbenchError(f"cannot write {str(plot)!r}: folder does not exist")
    lm = load_model(model, device=device, dtype=dtype, progress=True)
    results = compare_methods(
        lm,
        text,
        names,
        target,
        rationale=mask,
        params=params,
        aggregate=aggregate.value,
        removal=removal,
        with_random=random_reference,
    )
    if plot is not None:
        plot_comparison(results, plot)
        err_console.print(f"wrote {plot}")
    if fmt is MetricFormat.json:
        payload = {
            "text": text,
            "target_tokens": results[0].target_tokens,
            "methods": {r.method: r.to_dict() for r in results},
        }
        sys.stdout.write(json.dumps(payload) + "\n")
        return
    Console().print(_metric_table(results, f"faithfulness on {text!r}"))


class ProbeFormat(str, Enum):
    terminal = "terminal"
    json = "json"


@app.command("probe")
def probe_command(
    task: str | None = typer.Option(
        None, "--task", help="Built-in task: textworld-state:carried, :room or :open."
    ),
    games_dir: Path | None = typer.Option(
        None, "--games", help="Game-set folder (or one game) for textworld-state tasks."
    ),
    dataset: Path | None = typer.Option(
        None,
        "--dataset",
        help="JSONL of {text, label, position?, group?, type?} instead of --task.",
    ),
    layers: str = typer.Option(
        "all", "--layers", help="all, or e.g. 0,6,12 or 10-20 (0 = embeddings)."
    ),
    max_games: int | None = typer.Option(None, "--max-games", help="Use only the first N games."),
    random_episodes: int = typer.Option(
        1, "--random-episodes", help="Random-play episodes per game."
    ),
    max_steps: int = typer.Option(10, "--max-steps", help="Random steps per episode."),
    history: int = typer.Option(2, "--history", help="Previous steps in the agent's text."),
    test_size: float = typer.Option(0.25, "--test-size", help="Held-out fraction (of games)."),
    seed: int = typer.Option(0, "--seed", help="Fixes play, split, control labels and probes."),
    batch_size: int = typer.Option(16, "--batch-size", help="Examples per forward pass."),
    plot: Path | None = typer.Option(None, "--plot", help="Write accuracy by layer to this PNG."),
    fmt: ProbeFormat = typer.Option(ProbeFormat.terminal, "--format", help="terminal or json."),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    save: bool = typer.Option(True, "--save/--no-save", help="Save the result in the store."),
) -> None:
    """Train linear probes per layer, with control tasks (accuracy, control, selectivity).

    Example: workbench probe --task textworld-state:carried --games games/l3 --layers 0,10,20,30
    --plot carried.png
    """
    from explainers.probing.plot import plot_probe
    from explainers.probing.probes import ProbeDataset, parse_layers, run_probe
    from workbench.models import load_model
    from workbench.store import Store

    if (task is None) == (dataset is None):
        raise WorkbenchError("give either --task (a built-in task) or --dataset FILE.jsonl")
    layer_list = parse_layers(layers)
    if plot is not None and not plot.parent.exists():
        raise WorkbenchError(f"cannot write {str(plot)!r}: folder does not exist")
    if dataset is not None:
        data = ProbeDataset.from_jsonl(dataset)
    else:
        from games.probing_data import parse_task, state_records

        parse_task(task)  # an unknown task fails before the games are played
        if games_dir is None:
            raise WorkbenchError(
                f"--task {task} needs --games DIR (make some with `workbench games make`)"
            )
        records = state_records(
            games_dir,
            task,
            max_games=max_games,
            random_episodes=random_episodes,
            max_steps=max_steps,
            history=history,
            seed=seed,
        )
        data = ProbeDataset.from_records(task, records)
    store = Store(db) if save else None
    lm = load_model(model, device=device, dtype=dtype, progress=fmt is ProbeFormat.terminal)
    result = run_probe(lm, data, layer_list, batch_size=batch_size, test_size=test_size, seed=seed)
    if store is not None:
        result.save(store)
    if plot is not None:
        plot_probe(result, plot)
        err_console.print(f"wrote {plot}")
    if fmt is ProbeFormat.json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    table = Table(
        "layer",
        "accuracy",
        "control",
        "selectivity",
        "majority",
        title=(
            f"{result.task} on {result.model}: {result.n_examples} examples, {result.split} split "
            f"({result.layers[0].n_train} train / {result.layers[0].n_test} test)"
        ),
    )
    for r in result.layers:
        table.add_row(
            str(r.layer),
            f"{r.accuracy:.3f}",
            f"{r.control_accuracy:.3f}",
            f"{r.selectivity:+.3f}",
            f"{r.majority:.3f}",
        )
    Console().print(table)
    if store is not None:
        err_console.print(f"saved as probe {result.id} in {store.path}")


@app.command("dashboard")
def dashboard_command(
    db: Path | None = DbOption,
    port: int = typer.Option(8501, "--port", help="TCP port on 127.0.0.1 (1-65535)."),
) -> None:
    """Browse runs, episodes, tips and explanations in a Streamlit app on 127.0.0.1.

    Example: workbench dashboard --db workbench.duckdb --port 8501
    """
    from streamlit_app.launch import serve

    serve(db, port)


def _check_tip_options(
    tips: str | None,
    tipset: str | None,
    max_tips: int,
    tip_prompts: Path | None,
    agent: str,
    conditions: list[str],
    db: Path | None,
) -> dict[str, object] | None:
    """`play --tips ...` checked before any model loads; None when playing without tips."""
    from agents.tips import TIP_MODES

    if tips is None:
        if tipset is not None or tip_prompts is not None:
            raise WorkbenchError("--tipset and --tip-prompts go with --tips MODE")
        return None
    if tips not in TIP_MODES:
        raise WorkbenchError(f"unknown --tips {tips!r}; choose one of {', '.join(TIP_MODES)}")
    if max_tips < 1:
        raise WorkbenchError(f"--max-tips must be at least 1, not {max_tips}")
    if conditions:
        raise WorkbenchError("--tips names the condition itself; leave out --condition")
    if agent != "llm":
        raise WorkbenchError(f"--tips needs the llm agent (the {agent} agent reads no tips)")
    if tips == "general" and tipset is None:
        raise WorkbenchError(
            "--tips general plays with a general tip set: give --tipset ID (see `workbench "
            "tips list`; build one with `workbench tips merge` or `workbench experiment`)"
        )
    from agents.tip_prompts import DEFAULT_TIP_PROMPTS, TipPrompts
    from agents.tips import TipSet
    from workbench.store import Store

    return {
        "tipset": TipSet.load(Store(db), tipset) if tipset else None,
        "max_tips": max_tips,
        "prompts": TipPrompts.from_dir(tip_prompts) if tip_prompts else DEFAULT_TIP_PROMPTS,
    }


tips_app = typer.Typer(
    help="Tip sets written by the LLM (Introspective Tips).", no_args_is_help=True
)
app.add_typer(tips_app, name="tips")


@tips_app.command("list")
def tips_list(
    run: str | None = typer.Option(None, "--run", help="Only the tip sets of this play run."),
    kind: str | None = typer.Option(None, "--kind", help="self, expert, reflexion or general."),
    limit: int = typer.Option(50, "--limit", min=1, help="How many to show."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table or json."),
    db: Path | None = DbOption,
) -> None:
    """List tip sets, newest first, with their provenance.

    Example: workbench tips list --run l1-self
    """
    from workbench.store import Store
    from workbench.store import play as play_store
    from workbench.store import tips as tips_store

    store = Store(db)
    run_id = None
    if run is not None:
        record = play_store.get_play_run(store, run)
        if record is None:
            raise WorkbenchError(f"no play run named {run!r} in {store.path}")
        run_id = record["id"]
    rows = tips_store.list_tipsets(store, run_id=run_id, kind=kind, limit=limit)
    if fmt is TableOrJson.json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    if not rows:
        err_console.print("no tip sets yet; play with `workbench play --tips self ...`")
        return
    table = Table("id", "kind", "scope", "v", "parent", "status", "tips", "run", "trial")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["scope"],
            str(r["version"]),
            r["parent_id"] or "",
            r["status"],
            str(r["n_tips"]),
            r["run_name"] or "",
            "" if r["trial"] is None else str(r["trial"]),
        )
    Console().print(table)


@tips_app.command("show")
def tips_show(
    tipset_id: str = typer.Argument(..., metavar="ID", help="Tip set id (from `tips list`)."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table or json."),
    db: Path | None = DbOption,
) -> None:
    """Show a tip set: its tips with scores, operations and provenance.

    Example: workbench tips show 3f2a9c1b7d10
    """
    from agents.tips import TipSet
    from workbench.store import Store

    tipset = TipSet.load(Store(db), tipset_id)
    if fmt is TableOrJson.json:
        sys.stdout.write(json.dumps(tipset.to_dict(), default=str) + "\n")
        return
    out = Console()
    out.print(
        f"tip set {tipset.id}: {tipset.kind}, {tipset.scope}, version {tipset.version}"
        f" (parent {tipset.parent_id or 'none'}), {tipset.status}"
        + (f": {tipset.error}" if tipset.error else ""),
        markup=False,
        highlight=False,
    )
    out.print(
        f"from episodes {', '.join(tipset.episodes) or 'none'};"
        f" LLM calls {', '.join(tipset.llm_call_ids) or 'none'}",
        markup=False,
        highlight=False,
    )
    table = Table("#", "tip", "score")
    for i, tip in enumerate(tipset.tips, 1):
        table.add_row(str(i), tip.text, str(tip.score))
    out.print(table)
    if tipset.ops:
        ops = Table("op", "tip #", "text", "applied", "note", title="operations")
        for o in tipset.ops:
            ops.add_row(
                o.op,
                "" if o.target is None else str(o.target),
                o.text or o.old_text or "",
                "yes" if o.applied else "no",
                o.note or "",
            )
        out.print(ops)


@tips_app.command("diff")
def tips_diff(
    a: str = typer.Argument(..., metavar="A", help="The older tip set id."),
    b: str = typer.Argument(..., metavar="B", help="The newer tip set id."),
    db: Path | None = DbOption,
) -> None:
    """What changed from tip set A to tip set B: tips removed, added, and rescored.

    Example: workbench tips diff 3f2a9c1b7d10 8e1d0c2b4a55
    """
    from agents.tips import TipSet, diff_tipsets
    from workbench.store import Store

    store = Store(db)
    changes = diff_tipsets(TipSet.load(store, a), TipSet.load(store, b))
    out = Console()
    if not changes:
        out.print(f"{a} and {b} hold the same tips with the same scores")
        return
    for sign, text, note in changes:
        out.print(f"{sign} {text}" + (f"  ({note})" if note else ""), markup=False, highlight=False)


@tips_app.command("merge")
def tips_merge(
    run: str = typer.Option(..., "--run", help="Play run whose games' final tips to merge."),
    max_tips: int = typer.Option(5, "--max-tips", help="Tips in the general set at most."),
    llm: str = typer.Option("local", "--llm", help="local, or openai:MODEL (OPENAI_BASE_URL)."),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Merge the final self/expert tips of a run's games into one general set (ExpeL-style
    ADD/EDIT/AGREE/REMOVE), for `workbench play --tips general --tipset ID`.

    Example: workbench tips merge --run l1-self --max-tips 8
    """
    from agents.tips import TipSet, TipWriter, build_general
    from workbench.llm import make_llm
    from workbench.store import Store
    from workbench.store import play as play_store
    from workbench.store import tips as tips_store

    if max_tips < 1:
        raise WorkbenchError(f"--max-tips must be at least 1, not {max_tips}")
    store = Store(db)
    record = play_store.get_play_run(store, run)
    if record is None:
        raise WorkbenchError(f"no play run named {run!r} in {store.path}")
    sources = sorted(
        (
            TipSet.from_row(t)
            for t in tips_store.final_tipsets(store, record["id"], ["self", "expert"])
        ),
        key=lambda t: (t.game_id or "", t.condition or ""),
    )
    if not sources:
        raise WorkbenchError(f"run {run!r} has no self or expert tips to merge")
    writer = TipWriter(make_llm(llm, model=model, device=device, dtype=dtype), max_tips=max_tips)
    general = build_general(writer, sources, store, run_id=record["id"])
    err_console.print(
        f"general tip set {general.id} ({len(general.tips)} tips, version {general.version});"
        f" play with it: workbench play --tips general --tipset {general.id}",
        markup=False,
        highlight=False,
    )


experiment_app = typer.Typer(help="Run a paper's experiment end to end.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("introspective-tips")
def experiment_introspective_tips(
    train: Path = typer.Option(..., "--train", help="Game-set folder of training games."),
    test: Path = typer.Option(..., "--test", help="Game-set folder of unseen test games."),
    trials: int = typer.Option(3, "--trials", help="Trials per training game and condition."),
    name: str | None = typer.Option(
        None, "--name", help="Experiment name; an unfinished experiment of this name resumes."
    ),
    llm: str = typer.Option("local", "--llm", help="local, or openai:MODEL (OPENAI_BASE_URL)."),
    select: str = typer.Option("choose", "--select", help="choose (rank commands) or generate."),
    max_tips: int = typer.Option(5, "--max-tips", help="Tips per tip set at most."),
    max_steps: int = typer.Option(50, "--max-steps", help="Commands per episode at most."),
    parallel: int = typer.Option(8, "--parallel", help="Games stepping (and prompted) together."),
    seed: int = typer.Option(0, "--seed", help="Seeds random choices."),
    fmt: TableOrJson = typer.Option(TableOrJson.table, "--format", help="table or json."),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Introspective Tips (Chen et al. 2023): none/reflexion/self/expert on the training
    games over K trials, a general tip set merged from them, then none vs general zero-shot
    on the test games; a table of success, normalised score and moves to win with 95% CIs.

    Example: workbench experiment introspective-tips --train games/train --test games/test
    --trials 3 --llm openai:gpt-4o-mini --select generate --format json
    """
    import games as game_sets
    from agents.experiment import introspective_tips
    from workbench.llm import LLMUnavailableError, make_llm
    from workbench.store import Store, new_id

    if trials < 1:
        raise WorkbenchError(f"--trials must be at least 1, not {trials}")
    if max_tips < 1:
        raise WorkbenchError(f"--max-tips must be at least 1, not {max_tips}")
    train_games = game_sets.list_games(train)
    test_games = game_sets.list_games(test)
    store = Store(db)
    name = name or f"introspective-tips-{new_id()}"
    language_model = make_llm(llm, model=model, device=device, dtype=dtype)
    try:
        result = introspective_tips(
            train_games,
            test_games,
            llm=language_model,
            store=store,
            name=name,
            trials=trials,
            max_tips=max_tips,
            parallel=parallel,
            max_steps=max_steps,
            seed=seed,
            select=select,
            on_phase=lambda text: err_console.print(text, markup=False, highlight=False),
        )
    except LLMUnavailableError as exc:
        raise WorkbenchError(f"{exc}; what finished is saved, resume with --name {name}") from exc
    if fmt is TableOrJson.json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    Console().print(experiment_table(result))
    err_console.print(
        f"stored as experiment {name}; general tip set {result.general.id}"
        f" ({result.tip_failures} tip-writing failure(s))",
        markup=False,
        highlight=False,
    )


def experiment_table(result) -> Table:
    """The experiment's rows as a table (phase, level, condition, trial; CIs over games)."""
    from agents.report import Estimate

    table = Table(
        "phase",
        "level",
        "condition",
        "trial",
        "games",
        "success [95% CI]",
        "score [95% CI]",
        "moves to win",
        title=f"Introspective Tips: {result.name}",
    )
    for r in result.rows:
        row = r.row
        table.add_row(
            r.phase,
            str(row.level or "?"),
            row.condition,
            str(r.trial),
            str(row.games),
            Estimate.text(row.success),
            Estimate.text(row.score),
            "" if row.steps_to_win is None else f"{row.steps_to_win:.1f}",
        )
    return table


@app.command("explain-step")
def explain_step_command(
    run: str = typer.Option(..., "--run", help="Play run name or id."),
    episode: str = typer.Option(..., "--episode", help="Episode id (see `workbench report`)."),
    step: int = typer.Option(..., "--step", help="Step number, from 0."),
    method: str = typer.Option("ig", "--method", help="Attribution method (ig, occlusion, ...)."),
    param: list[str] = typer.Option(
        [], "--param", "-p", help="Method parameter KEY=VALUE (repeatable)."
    ),
    fmt: ProbeFormat = typer.Option(ProbeFormat.terminal, "--format", help="terminal or json."),
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Why did the agent take this action? Attribution per prompt segment and per tip, and
    whether removing each tip changes the action.

    Example: workbench explain-step --run l1-self --episode 3f2a9c1b7d10 --step 2 --method ig
    """
    from agents.explain_step import explain_step
    from explainers import get_method
    from workbench.models import load_model
    from workbench.store import Store

    params = _method_params(get_method(method), {}, param)
    store = Store(db)
    lm = load_model(model, device=device, dtype=dtype, progress=True) if model else None
    result = explain_step(store, run, episode, step, method=method, lm=lm, **params)
    if fmt is ProbeFormat.json:
        sys.stdout.write(json.dumps(result.to_dict()) + "\n")
        return
    show_step_explanation(result, Console())
    err_console.print(f"saved as explanation {result.explanation_id} in {store.path}")


def show_step_explanation(result, out: Console) -> None:
    out.print(
        f"step {result.step} of episode {result.episode_id}: action {result.action!r},"
        f" total attribution {result.total:.3f} ({result.method})",
        markup=False,
        highlight=False,
    )
    segments = Table("segment", "attribution", "share of |total|")
    scale = sum(abs(v) for v in result.segments.values()) or 1.0
    for name, value in result.segments.items():
        segments.add_row(name, f"{value:+.3f}", f"{100 * abs(value) / scale:.0f}%")
    out.print(segments)
    if result.tips:
        tips = Table("tip", "attribution", "without it the agent", title="tip ablation")
        for t in result.tips:
            then = f"changes to {t['new_action']!r}" if t["action_changed"] else "does the same"
            tips.add_row(t["tip"], f"{t['mass']:+.3f}", then)
        out.print(tips)


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
