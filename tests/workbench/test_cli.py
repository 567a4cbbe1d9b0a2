"""The `workbench` CLI as a user runs it: explain, explanations, runs, episodes, export,
help, start-up imports and Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import duckdb
import pytest

from tests.games.compiled import games_base, level1_games  # noqa: F401
from tests.run_cli import run_inprocess
from tests.store_reads import table_rows
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.store import Store
from workbench.store import play as play_store
from workbench.store.explanations import list_explanations
from workbench.store.runs import get_run

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
    umask = os.umask(0)
    os.umask(umask)
    assert page.stat().st_mode & 0o777 == 0o666 & ~umask  # the user's umask, not 0600
    assert "<script>" not in html and "&lt;script&gt;" in html
    exp_id = list_explanations(Store(db))[0]["id"]
    code, out, _ = run_inprocess(
        capsys, "explanations", "show", exp_id, "--format", "json", "--db", str(db)
    )
    assert code == 0 and json.loads(out)["id"] == exp_id
    code, out, _ = run_inprocess(capsys, "explanations", "list", "--db", str(db))
    assert code == 0 and exp_id in out


def test_out_dash_writes_to_stdout_and_the_list_marks_incomplete_rows(
    tiny_model_dir, tmp_path, capsys, monkeypatch
):
    from explainers import Explanation

    monkeypatch.chdir(tmp_path)  # a file named "-" would land here
    db = tmp_path / "wb.duckdb"
    code, out, err = run_inprocess(
        capsys, "explain", "--model", str(tiny_model_dir), "--text", TEXT, "--target", "door",
        "--steps", "4", "--format", "json", "--out", "-", "--db", str(db),
    )  # fmt: skip
    assert code == 0, err
    exp_id = json.loads(out)["id"]  # stdout is the one JSON document
    assert not (tmp_path / "-").exists()
    code, out, _ = run_inprocess(
        capsys, "explanations", "show", exp_id, "--format", "html", "--out", "-", "--db", str(db)
    )
    assert code == 0 and out.lstrip().startswith("<") and not (tmp_path / "-").exists()
    code, out, err = run_inprocess(
        capsys, "export", "--table", "explanations", "--format", "jsonl", "--out", "-",
        "--db", str(db),
    )  # fmt: skip
    assert code == 0 and json.loads(out.splitlines()[0])["id"] == exp_id, err
    code, _, err = run_inprocess(capsys, "games", "make", "--level", "1", "--out", "-")
    assert code == 1 and "names a folder" in err

    # The same explanation with a row that misses completeness by far: marked, and explained.
    store = Store(db)
    broken = Explanation.load(store, exp_id)
    broken.delta = [10.0 + abs(e) * 10 for e in broken.expected]
    broken.id = None
    broken_id = broken.save(store)
    code, out, _ = run_inprocess(capsys, "explanations", "list", "--db", str(db))
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2]}
    marked = [i for i in (exp_id, broken_id) if i in rows and " ! " in rows[i]]
    assert broken_id in marked
    assert (exp_id in marked) == bool(Explanation.load(store, exp_id).incomplete_rows())
    assert "! : a target row misses completeness" in " ".join(out.split())


def test_a_folder_as_dataset_says_it_is_a_folder(tmp_path, capsys):
    code, _, err = run_inprocess(capsys, "explain", "--dataset", str(tmp_path), "--no-save")
    assert code == 1 and "is a folder" in err, err


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
        (["--param", "foo=1"], "ig takes no parameter 'foo'"),
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


def test_help_answers_for_every_command(capsys, monkeypatch):
    """--help of every command and group works, without loading anything heavy; on an
    80-column terminal every option name is shown whole and paragraphs are re-wrapped."""
    import typer

    from workbench.cli import app

    monkeypatch.setenv("COLUMNS", "80")

    def paths(command, prefix):
        yield prefix, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from paths(sub, [*prefix, name])

    found = dict((tuple(p), c) for p, c in paths(typer.main.get_command(app), []))
    assert ("export",) in found and ("runs", "list") in found and ("episodes", "list") in found
    for path, command in found.items():
        code, out, err = run_inprocess(capsys, *path, "--help")
        assert code == 0, (path, err)
        assert "Usage: workbench" in " ".join(out.split()), path
        assert max(len(line) for line in out.splitlines()) <= 80, path
        options = [p for p in command.params if p.param_type_name == "option"]
        for name in (n for p in options for n in p.opts + p.secondary_opts):
            assert name in out.split() or f"{name}," in out, (path, name)  # never cut short
    # The example's quoted text is re-wrapped, not cut by a hard line break of the source.
    _, out, _ = run_inprocess(capsys, "explain", "--help")
    assert "To get the milk, open the" in " ".join(out.split())
    assert not re.search(r"get the *\n *milk", out)


def test_python_dash_m_workbench_and_no_heavy_import_at_start():
    done = run_cli("--help")
    assert done.returncode == 0 and "explain-step" in done.stdout and "export" in done.stdout
    probe = (
        "import sys, workbench.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'shap', 'streamlit', 'captum',"
        " 'duckdb', 'textworld') if m in sys.modules))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"


def test_checks_that_need_no_model_come_before_it(tmp_path, capsys):
    """A bad --out folder, a parameter the method does not take, and an html data set fail
    before the model loads (the model named here does not exist)."""
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "open the box"}\n')
    cases = [
        (["--text", TEXT, "--out", str(tmp_path / "nope" / "x.html")], "folder does not exist"),
        (["--text", TEXT, "--method", "occlusion", "--steps", "8"], "takes no parameter 'steps'"),
        (["--dataset", str(data), "--format", "html"], "--dataset writes JSONL"),
        (["--text", TEXT, "--target", "a", "--generate", "2"], "either target or generate"),
        (["--text", TEXT, "--out", str(tmp_path / "x.txt")], "--out needs --format html or json"),
    ]
    for args, message in cases:
        code, _, err = run_inprocess(
            capsys, "explain", *args, "--model", "/no/such/model", "--no-save"
        )
        assert code == 1 and message in err, err
        assert len(err.strip().splitlines()) == 1


def test_reading_commands_leave_no_database_and_read_a_read_only_one(tmp_path, capsys):
    missing = tmp_path / "missing.duckdb"
    for args in (
        ["report"],
        ["runs", "list"],
        ["episodes", "list", "--run", "x"],
        ["tips", "list"],
        ["explanations", "list"],
        ["export", "--table", "runs", "--out", str(tmp_path / "r.parquet")],
    ):
        code, _, err = run_inprocess(capsys, *args, "--db", str(missing))
        assert code == 1 and "no database at" in err, (args, err)
    assert not missing.exists() and not (tmp_path / "r.parquet").exists()


@pytest.fixture(scope="module")
def played(level1_games, tmp_path_factory):  # noqa: F811
    """A store holding one expert run over the two level-1 games, made read-only."""
    db = tmp_path_factory.mktemp("played") / "w.duckdb"
    folder = str(level1_games[0].path.parent)
    argv = ["play", "--games", folder, "--agent", "expert", "--workers", "0"]
    done = run_cli(*argv, "--run-name", "exp", "--db", str(db))
    assert done.returncode == 0, done.stderr
    db.chmod(0o444)
    return db


def test_runs_episodes_and_report_list_episode_ids(played, capsys):
    store = Store(played, read_only=True)
    episodes = play_store.list_episodes(store, get_run(store, "exp", kind="play")["id"])
    code, out, err = run_inprocess(capsys, "runs", "list", "--format", "json", "--db", str(played))
    assert code == 0, err
    assert [(r["name"], r["episodes"]) for r in json.loads(out)] == [("exp", 2)]
    code, out, _ = run_inprocess(
        capsys, "episodes", "list", "--run", "exp", "--format", "json", "--db", str(played)
    )
    assert [e["id"] for e in json.loads(out)] == [e["id"] for e in episodes]
    code, out, _ = run_inprocess(capsys, "report", "--run", "exp", "--db", str(played))
    assert code == 0 and all(e["id"] in out for e in episodes)
    code, _, err = run_inprocess(capsys, "episodes", "list", "--run", "nope", "--db", str(played))
    assert code == 1 and "no play run named 'nope'" in err


@pytest.mark.parametrize("table", ["runs", "episodes", "steps", "llm_calls", "explanations"])
def test_export_round_trips_through_parquet(played, tmp_path, capsys, table):
    out = tmp_path / f"{table}.parquet"
    argv = ["export", "--table", table, "--run", "exp", "--out", str(out), "--db", str(played)]
    code, _, err = run_inprocess(capsys, *argv)
    assert code == 0, err
    expected = table_rows(Store(played, read_only=True), table, run="exp")
    back = duckdb.sql(f"SELECT * FROM read_parquet('{out}')")
    rows = [dict(zip(back.columns, row)) for row in back.fetchall()]
    assert rows == expected
    assert f"wrote {len(expected)} {table} row(s)" in err
    if table == "steps":
        assert len(rows) > 0


def test_export_jsonl_and_its_errors(played, tmp_path, capsys):
    out = tmp_path / "episodes.jsonl"
    argv = ["export", "--table", "episodes", "--format", "jsonl", "--out", str(out)]
    code, _, err = run_inprocess(capsys, *argv, "--db", str(played))
    assert code == 0, err
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [e["id"] for e in table_rows(Store(played, read_only=True), "episodes")]
    assert [x["id"] for x in lines] == ids and len(ids) == 2
    for args, message in [
        (["--table", "games"], "unknown table 'games'; choose one of runs, episodes"),
        (["--table", "runs", "--format", "csv"], "unknown format 'csv'"),
        (["--table", "runs", "--run", "nope"], "no run named 'nope'"),
    ]:
        target = tmp_path / "x.out"
        code, _, err = run_inprocess(
            capsys, "export", *args, "--out", str(target), "--db", str(played)
        )
        assert code == 1 and message in err and not target.exists(), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes.jsonl"]  # no temp files


def test_ctrl_c_is_one_line_saying_what_was_saved_and_exits_130(level1_games, tmp_path):  # noqa: F811
    """SIGINT while the LLM agent waits for its first reply: nothing is saved yet."""
    asked, answer = threading.Event(), threading.Event()

    def reply(prompt: str) -> str:
        asked.set()
        answer.wait(timeout=120)
        return "look"

    folder = str(level1_games[0].path.parent)
    with ScriptedOpenAIServer(reply) as server:
        play = subprocess.Popen(
            [sys.executable, "-m", "workbench", "play", "--games", folder, "--agent", "llm"]
            + ["--llm", "openai:m", "--select", "generate", "--workers", "0", "--trials", "2"]
            + ["--max-steps", "2", "--run-name", "c", "--db", str(tmp_path / "w.duckdb")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "k"},
        )
        try:
            assert asked.wait(timeout=120), "the agent never asked the LLM"
            play.send_signal(signal.SIGINT)
            line = play.stderr.readline()
        finally:
            answer.set()  # let the requests in flight finish, so the process can exit
            out, rest = play.communicate(timeout=120)
    assert line.strip() == "interrupted: 0 of 4 episodes saved; run the same command to resume"
    assert play.returncode == 130 and rest.strip() == "" and "Traceback" not in rest


def test_probe_intervene_reads_the_model_once(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Amnesic probing reuses the features and probes `probe` just computed."""
    import explainers.causal.amnesic as amnesic
    import explainers.probing.probes as probes

    reads: list[int] = []
    real = probes.extract_features

    def counted(lm, examples, *args, **kwargs):
        reads.append(len(examples))
        return real(lm, examples, *args, **kwargs)

    monkeypatch.setattr(probes, "extract_features", counted)
    monkeypatch.setattr(amnesic, "extract_features", counted)
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"text": f"the {w} is in the {v}", "label": w}) + "\n"
            for w in ("milk", "apple", "key", "box")
            for v in ("fridge", "kitchen", "box", "oven")
        )
    )
    code, out, err = run_inprocess(
        capsys, "probe", "--dataset", str(data), "--model", str(tiny_model_dir), "--layers",
        "1,2", "--intervene", "--random-directions", "2", "--format", "json", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert reads == [16]  # one pass over the 16 examples
    result = json.loads(out)
    amnesic_layers = result["params"]["intervene"]["layers"]
    assert [r["accuracy"] for r in amnesic_layers] == [r["accuracy"] for r in result["layers"]]


def test_progress_without_a_terminal_prints_tenths_and_the_end(capsys):
    from workbench.cli.render import progress

    with progress("working") as update:
        update(0, 40)
        for done in range(1, 41):
            update(done, description="working (won 0)" if done < 30 else "working (won 1)")
        update(40, 50)  # a total that grows (adaptive IG) goes on from there
        update(50, 50)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "working (won 0): 1/40"  # nothing before the first unit is done
    assert "working (won 0): 4/40" in lines and "working (won 1): 40/40" in lines
    assert lines[-1] == "working: 50/50"
    assert len(lines) <= 16  # tenths, not every update
