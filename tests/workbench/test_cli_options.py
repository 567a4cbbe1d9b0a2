"""No option is dropped silently: every option of every command is read by the mode it is
given in, or refused in one line before any model loads.

The mode -> options table (workbench.cli.modes) is the one source the commands check and
this test walks: a new option that is not in the table fails here, and an option a mode does
not read must be refused in that mode.
"""

from __future__ import annotations

import enum
import inspect
import typing
from itertools import product
from pathlib import Path

import pytest
import typer

from tests.run_cli import run_inprocess
from workbench.cli import app
from workbench.cli.modes import TABLES


def commands() -> dict[str, object]:
    """Every command of the app by its path ("tips merge"), through click's introspection."""
    found = {}

    def walk(command, path: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            found[" ".join(path)] = command
            return
        for name, sub in subcommands.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def options(command) -> dict[str, object]:
    return {p.name: p for p in command.params if p.param_type_name == "option"}


def test_every_option_of_every_command_is_in_the_table():
    found = commands()
    assert set(found) == set(TABLES), "a command without a row in workbench.cli.modes.TABLES"
    for path, command in found.items():
        read = set().union(*(mode.uses for mode in TABLES[path].values()))
        assert read == set(options(command)), (
            f"{path}: options not in the table {sorted(set(options(command)) - read)}, "
            f"in the table but not options {sorted(read - set(options(command)))}"
        )


# How the test selects each mode: the arguments every mode needs, then one list per axis
# of the table's keys (in the order of the key's parts).
MISSING = "no-such-file.jsonl"
SAVE = {"save": [], "no-save": ["--no-save"]}
BACKEND = {"local": [], "openai": ["--llm", "openai:m"]}
SELECT = {
    "explain": (
        [],
        {"text": ["--text", "t"], "dataset": ["--dataset", MISSING]},
        SAVE,
        BACKEND,
    ),
    "evaluate": (
        [],
        {
            "explanation": ["--explanation", "e"],
            ("text", "save"): ["--text", "t"],
            ("text", "no-save"): ["--text", "t", "--no-save"],
            "dataset": ["--dataset", MISSING],
        },
    ),
    "probe": (
        [],
        {"task": ["--task", "t"], "dataset": ["--dataset", MISSING]},
        SAVE,
        {"intervene": ["--intervene"], "plain": []},
    ),
    "patch": (
        ["--clean", "c"],
        {
            "exact": ["--corrupt", "x"],
            "attribution": ["--corrupt", "x", "--method", "attribution"],
            "attribution-exact": ["--corrupt", "x", "--method", "attribution", "--compare-exact"],
            "tracing": ["--noise-tokens", "1"],
        },
        SAVE,
    ),
    "play": (
        ["--games", "{dir}"],
        {
            ("llm", "local", "choose"): [],
            ("llm", "local", "generate"): ["--select", "generate"],
            ("llm", "openai", "choose"): ["--llm", "openai:m"],
            ("llm", "openai", "generate"): ["--llm", "openai:m", "--select", "generate"],
            ("random",): ["--agent", "random"],
            ("expert",): ["--agent", "expert"],
        },
    ),
    "explain-step": (
        ["--run", "r", "--episode", "e", "--step", "0"],
        {"attribution": [], "patch": ["--patch", "a=>b"]},
    ),
    "mistakes": (["--run", "r"], {"list": [], "predict": ["--predict"]}),
    "steer": (
        ["--run", "r"],
        {
            "file": ["--direction", "d.npz"],
            "means": [],
            "probe": ["--source", "probe"],
            "caa": ["--source", "caa"],
            "actadd": ["--source", "actadd"],
        },
        {"episodes": ["--games", "1"], "decisions": []},
    ),
    "sae train": (
        ["--layer", "1", "--out", "{dir}/sae"],
        {
            "runs": ["--runs", "r"],
            "dataset": ["--dataset", MISSING],
            "both": ["--runs", "r", "--dataset", MISSING],
        },
    ),
    "tips merge": (["--run", "r"], BACKEND),
    "experiment introspective-tips": (["--train", "{dir}", "--test", "{dir}"], BACKEND),
}


# Options that choose between exclusive modes: given in another mode, the command says it
# cannot take both ("give either --text or --dataset").
SELECTORS = {
    "explain": ("text", "dataset"),
    "evaluate": ("explanation", "text", "dataset"),
    "probe": ("task", "dataset"),
    "patch": ("corrupt", "noise_tokens"),
    "steer": ("direction_file", "source"),
}


# Options that add a source to one another (`sae train --runs R --dataset F` reads both):
# given in the other's mode, they select the mode that reads both, which is tested on its own.
COMBINED = {"sae train": ("runs", "dataset")}


def mode_args(path: str) -> dict[object, list[str]]:
    """Each mode of the command `path` -> the arguments that select it."""
    base, *axes = SELECT[path]
    table = {}
    for combo in product(*(axis.items() for axis in axes)):
        key = combo[0][0] if len(combo) == 1 else tuple(name for name, _ in combo)
        table[key] = [*path.split(), *base, *(arg for _, args in combo for arg in args)]
    return table


def test_every_mode_has_a_way_to_select_it():
    for path, table in TABLES.items():
        if len(table) > 1:
            assert set(mode_args(path)) == set(table), path


def other_value(command, option, where: Path) -> list[str]:
    """`option` set to a value other than its default, as command-line arguments."""
    flag = max(option.opts, key=len)
    if option.is_flag:
        return [option.secondary_opts[0] if option.default else flag]
    if isinstance(option.default, enum.Enum):
        other = next(m for m in type(option.default) if m != option.default)
        return [flag, other.value]
    info = inspect.signature(command.callback).parameters[option.name].default
    kind = typing.get_type_hints(command.callback)[option.name]
    kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if typing.get_origin(kind) is list:
        kind = typing.get_args(kind)[0]
    if kind is Path:
        if getattr(info, "exists", False) and not getattr(info, "dir_okay", True):
            return [flag, str(where / "file.txt")]
        return [flag, str(where)]
    if kind is int:
        low = option.min if option.min is not None else 0
        return [flag, str(max(option.default or 0, low) + 1)]
    if kind is float:
        if option.max is not None:
            return [flag, str((option.min + option.max) / 2)]
        return [flag, str((option.default or 0.0) + 0.5)]
    return [flag, "k=1" if option.name == "param" else "other"]


@pytest.fixture
def no_model(monkeypatch) -> list[str]:
    """Every model loader replaced: a call is recorded, and fails the command."""
    import workbench.llm
    import workbench.models

    loads: list[str] = []

    def loader(name: str):
        def load(*args, **kwargs):
            loads.append(name)
            raise AssertionError(f"{name} called")

        return load

    monkeypatch.setattr(workbench.models, "load_model", loader("load_model"))
    monkeypatch.setattr(workbench.llm, "make_llm", loader("make_llm"))
    if hasattr(workbench.models, "load_identity"):
        monkeypatch.setattr(workbench.models, "load_identity", loader("load_identity"))
    return loads


def refused(capsys, args: list[str], message: str, loads: list[str]) -> None:
    """`workbench ARGS` fails with one line holding `message`, and loads no model."""
    code, out, err = run_inprocess(capsys, *args)
    shown = " ".join(args)
    assert code == 1, f"`workbench {shown}` exited {code}: {err or out}"
    assert err.startswith("error: ") and err.count("\n") == 1, f"{shown}: {err!r}"
    assert message in err, f"`workbench {shown}` does not say {message!r}: {err}"
    assert not loads, f"`workbench {shown}` loaded a model before refusing"


@pytest.mark.parametrize("path", [p for p, t in TABLES.items() if len(t) > 1])
def test_an_option_a_mode_does_not_read_is_refused(path, tmp_path, capsys, no_model):
    (tmp_path / "file.txt").write_text("x\n")
    command = commands()[path]
    for key, args in mode_args(path).items():
        args = [a.replace("{dir}", str(tmp_path)) for a in args]
        mode = TABLES[path][key]
        for name, option in options(command).items():
            if name in mode.uses or name in COMBINED.get(path, ()):
                continue
            flag = max(option.opts, key=len)
            if name in SELECTORS.get(path, ()):  # it selects another mode: a conflict
                expected = flag
            else:  # the message names the mode, which proves the arguments selected it
                expected = f"{flag} does not apply to {mode.labels.get(name, mode.label)}"
            refused(capsys, [*args, *other_value(command, option, tmp_path)], expected, no_model)


@pytest.mark.parametrize(
    "args, message",
    [
        # Review 5a: the twelve sites, one line each, before a model loads.
        (
            ["evaluate", "--dataset", MISSING, "--db", "x.duckdb"],
            "--db does not apply to evaluate --dataset (nothing is stored)",
        ),
        (
            ["evaluate", "--dataset", MISSING, "--target", " milk"],
            "--target does not apply to evaluate --dataset (the targets come from the file)",
        ),
        (
            ["evaluate", "--explanation", "e", "--aggregate", "word"],
            "--aggregate does not apply to evaluate --explanation",
        ),
        (["evaluate", "--text", "t", "--no-random"], "--random does not apply to evaluate --text"),
        (
            ["explain-step", "--run", "r", "--episode", "e", "--step", "0", "--patch", "a=>b"]
            + ["--method", "lime"],
            "--method does not apply to explain-step --patch",
        ),
        (
            ["play", "--games", ".", "--agent", "random", "--model", "m"],
            "--model does not apply to play --agent random (this agent uses no LLM)",
        ),
        (
            ["play", "--games", ".", "--concurrency", "4"],
            "--concurrency does not apply to play --llm local",
        ),
        (
            ["probe", "--dataset", MISSING, "--max-games", "3"],
            "--max-games does not apply to probe --dataset",
        ),
        (
            ["explain", "--text", "t", "--llm", "openai:m", "--device-map", "auto"],
            "--device-map does not apply to explain --llm openai:MODEL",
        ),
        (
            ["patch", "--clean", "c", "--corrupt", "x", "--method", "attribution"]
            + ["--batch-size", "4"],
            "--batch-size does not apply to patch --method attribution",
        ),
        (
            ["compare", "--text", "t", "--run-name", "r"],
            "--run-name names the stored comparison",
        ),
    ],
)
def test_the_reviewed_drops_are_refused(args, message, capsys, no_model, monkeypatch):
    monkeypatch.delenv("WORKBENCH_DB", raising=False)
    refused(capsys, args, message, no_model)


def test_make_llm_refuses_two_model_names(monkeypatch):
    import workbench.models
    from workbench.errors import WorkbenchError
    from workbench.llm import make_llm

    monkeypatch.setattr(
        workbench.models, "load_model", lambda *a, **k: pytest.fail("loaded a model")
    )
    with pytest.raises(WorkbenchError, match="name two models"):
        make_llm("local:a", model="b")


@pytest.mark.parametrize(
    "args, message",
    [
        (["play", "--games", ".", "--trials", "0"], "'--trials'"),
        (["play", "--games", ".", "--parallel", "0"], "'--parallel'"),
        (["games", "make", "--level", "11", "--out", "new"], "'--level'"),
        (["games", "make", "--level", "1", "--count", "0", "--out", "new"], "'--count'"),
        (["probe", "--dataset", MISSING, "--test-size", "1.5"], "'--test-size'"),
        (["explain", "--dataset", MISSING, "--gpus", "0"], "'--gpus'"),
    ],
)
def test_numbers_out_of_range_are_usage_errors_naming_the_flag(args, message, capsys, no_model):
    code, _, err = run_inprocess(capsys, *args)
    assert code == 2 and err.count("\n") == 1, err
    assert f"Invalid value for {message}" in err, err
    assert not no_model


def test_every_number_option_declares_its_range():
    """A number option validates its range where it is declared, so an error names the flag
    (not the library's parameter); --port is checked by the dashboard, which names it."""
    for path, command in commands().items():
        hints = typing.get_type_hints(command.callback)
        for name, option in options(command).items():
            kind = next(a for a in (*typing.get_args(hints[name]), hints[name]) if a is not None)
            if kind in (int, float) and (path, name) != ("dashboard", "port"):
                assert option.min is not None or option.max is not None, (path, name)
