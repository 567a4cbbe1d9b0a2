"""`workbench explain` and `workbench explanations` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.run_cli import run_inprocess
from workbench.store import Store
from workbench.store.explanations import list_explanations

TEXT = "the milk is in the fridge to get the milk open the"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real console script in a subprocess (what a user types)."""
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_json_output_is_one_object_with_the_documented_fields(tiny_model_dir, tmp_path):
    db = tmp_path / "wb.duckdb"
    result = run_cli(
        "explain",
        "--model",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--target",
        "door open",
        "--steps",
        "8",
        "--format",
        "json",
        "--db",
        str(db),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # fails if stdout holds anything but one JSON object
    assert data["method"] == "ig" and data["model"] == str(tiny_model_dir)
    assert data["target_tokens"] == ["door", "open"]
    assert len(data["scores"]) == 2 and all(
        len(r) == len(data["input_tokens"]) for r in data["scores"]
    )
    assert len(data["expected"]) == len(data["delta"]) == 2
    stored = list_explanations(Store(db))
    assert [r["id"] for r in stored] == [data["id"]]


def test_terminal_output_shows_tokens_and_completeness(tiny_model_dir, tmp_path):
    result = run_cli(
        "explain",
        "--model",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--target",
        "door",
        "--db",
        str(tmp_path / "wb.duckdb"),
    )
    assert result.returncode == 0, result.stderr
    assert "fridge" in result.stdout and "completeness" in result.stdout


def test_html_is_escaped_and_explanations_read_back(tiny_model_dir, tmp_path, capsys):
    db, page = tmp_path / "wb.duckdb", tmp_path / "exp.html"
    text = "the <script> milk"
    code, _, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_model_dir),
        "--text",
        text,
        "--target",
        "door",
        "--steps",
        "4",
        "--format",
        "html",
        "--out",
        str(page),
        "--db",
        str(db),
    )
    assert code == 0, err
    html = page.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html
    exp_id = list_explanations(Store(db))[0]["id"]
    code, out, _ = run_inprocess(
        capsys, "explanations", "show", exp_id, "--format", "json", "--db", str(db)
    )
    assert code == 0 and json.loads(out)["id"] == exp_id
    code, out, _ = run_inprocess(capsys, "explanations", "list", "--db", str(db))
    assert code == 0 and exp_id in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope"], "unknown method 'nope'; known methods: "),
        (["--steps", "0"], "steps must be"),
        (["--steps", "many"], "steps must be"),
        (["--text", "   "], "text is empty"),
        (["--target", " "], "tokenizes to nothing"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--dtype", "int3"], "unknown dtype 'int3'"),
        (["--baseline", "mean"], "baseline must be one of zero, pad, eos, not 'mean'"),
        (["--model", "/no/such/model"], "does not exist"),
        (["--model", "/no/such/model.gguf"], "does not exist"),
        (["--param", "foo=1"], "ig has no parameter 'foo'"),
    ],
)
def test_bad_input_is_one_line_and_stores_nothing(tiny_model_dir, tmp_path, capsys, args, message):
    db = tmp_path / "wb.duckdb"
    options = {"--text": TEXT, "--target": "door", "--model": str(tiny_model_dir), "--db": str(db)}
    options.update(zip(args[::2], args[1::2]))
    code, out, err = run_inprocess(capsys, "explain", *[x for kv in options.items() for x in kv])
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if db.exists():
        assert list_explanations(Store(db)) == []


def test_unknown_format_is_a_usage_error(capsys):
    from typer.testing import CliRunner

    from workbench.cli import app

    result = CliRunner().invoke(app, ["explain", "--text", "x", "--format", "pdf"])
    assert result.exit_code == 2 and "pdf" in result.output


def test_classifier_label_errors(tiny_classifier_dir, tmp_path, capsys):
    db = tmp_path / "wb.duckdb"
    code, _, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_classifier_dir),
        "--text",
        "the apple is red",
        "--target",
        "happy",
        "--db",
        str(db),
    )
    assert code == 1 and "no label 'happy'; its labels: neg, neu, pos" in err
    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_classifier_dir),
        "--text",
        "the apple is red",
        "--target",
        "pos",
        "--format",
        "json",
        "--db",
        str(db),
    )
    assert code == 0, err
    assert json.loads(out)["target_tokens"] == ["pos"]


def test_bad_databases(tiny_model_dir, tmp_path, capsys):
    not_duck = tmp_path / "notes.duckdb"
    not_duck.write_text("these are my notes, not a database" * 10)
    code, _, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--target",
        "door",
        "--db",
        str(not_duck),
    )
    assert code == 1 and "is not a DuckDB database" in err
    assert not_duck.read_text().startswith("these are my notes")

    missing = tmp_path / "missing.duckdb"
    code, _, err = run_inprocess(capsys, "explanations", "list", "--db", str(missing))
    assert code == 1 and "no database at" in err and not missing.exists()


def test_dataset_mode_explains_every_line(tiny_model_dir, tmp_path, capsys):
    db, data, out = tmp_path / "wb.duckdb", tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    data.write_text(
        '{"text": "the milk is in the fridge", "target": "door"}\n'
        '{"text": "open the box", "target": "key"}\n'
    )
    code, stdout, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(data),
        "--steps",
        "4",
        "--format",
        "json",
        "--out",
        str(out),
        "--db",
        str(db),
    )
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["count"] == 2 and len(summary["ids"]) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["input_text"] for x in lines] == ["the milk is in the fridge", "open the box"]
    assert len(list_explanations(Store(db))) == 2
    code, _, err = run_inprocess(capsys, "explain", "--model", str(tiny_model_dir), "--db", str(db))
    assert code == 1 and "give either --text or --dataset" in err
