"""`workbench games|play|report` as a user runs them: subprocesses, exit codes, one-line
errors, and a run killed with SIGKILL that resumes to the same results."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

import agents
import games
from tests import store_reads
from tests.run_cli import run_inprocess
from workbench.store import Store, runs
from workbench.store import play as play_store


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def level1_dir(level1_games):
    return str(level1_games[0].path.parent)


def test_games_list_shows_the_manifest(level1_dir, level1_games):
    done = cli("games", "list", level1_dir, "--format", "json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    assert [g["id"] for g in listed] == [g.id for g in level1_games]
    assert {g["level"] for g in listed} == {1} and {g["max_score"] for g in listed} == {3}
    table = cli("games", "list", level1_dir)
    assert level1_games[0].id in table.stdout


def test_play_and_report_json(level1_dir, tmp_path, capsys):
    db = str(tmp_path / "w.duckdb")
    done = cli(
        "play",
        "--games",
        level1_dir,
        "--agent",
        "expert",
        "--trials",
        "2",
        "--parallel",
        "2",
        "--workers",
        "0",
        "--run-name",
        "exp",
        "--db",
        db,
    )
    assert done.returncode == 0, done.stderr
    assert "played 4 episode(s), won 4" in done.stderr
    code, out, _ = run_inprocess(capsys, "report", "--run", "exp", "--format", "json", "--db", db)
    data = json.loads(out)
    assert len(data["episodes"]) == 4
    for e in data["episodes"]:
        assert {"game", "trial", "condition", "won", "score", "max_score", "moves"} <= set(e)
        assert e["won"] and e["score"] == e["max_score"] == 3 and e["condition"] == "default"
    assert data["rows"][0]["success"]["mean"] == 1.0 and data["rows"][0]["games"] == 2
    code, table, _ = run_inprocess(capsys, "report", "--db", db)  # the latest run by default
    assert code == 0 and "100%" in table and "exp" in table


def _unreachable_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["play", "--games", "{tmp}/missing"], "does not exist"),
        (["play", "--games", "{tmp}/empty"], "no games in"),
        (["play", "--games", "{tmp}/notes.txt"], "not a compiled TextWorld game"),
        (["play", "--games", "{games}", "--agent", "smart"], "unknown agent 'smart'"),
        (["play", "--games", "{games}", "--llm", "gpt:4"], "unknown LLM backend 'gpt'"),
        (
            [
                "play",
                "--games",
                "{games}",
                "--llm",
                "openai:m",
                "--select",
                "generate",
                "--retries",
                "1",
            ],
            "unreachable",
        ),
        (["report", "--run", "nope"], "no database at"),  # reading commands create none
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    args, message, tmp_path, level1_dir, capsys, monkeypatch
):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a game")
    db = tmp_path / "w.duckdb"
    argv = [a.format(tmp=tmp_path, games=level1_dir) for a in args] + ["--db", str(db)]
    if args[0] == "games":
        argv = argv[:-2]
    monkeypatch.setenv("OPENAI_BASE_URL", _unreachable_url())
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    code, _, err = run_inprocess(capsys, *argv)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "new").exists()
    if db.exists():
        assert runs.count_runs(Store(db, read_only=True)) == 0


def _episodes(db, name) -> list[tuple]:
    store = Store(db)
    run = runs.get_run(store, name, kind="play")
    rows = play_store.list_episodes(store, run["id"]) if run else []
    out = []
    for r in rows:
        actions = [s["action"] for s in play_store.get_steps(store, r["id"])]
        out.append((r["game"], r["trial"], r["won"], r["score"], r["moves"], tuple(actions)))
    return sorted(out)


# A play killed with SIGKILL right after its second episode is saved: nothing runs after the
# kill (no finally, no atexit), as when a machine dies; the kill comes from inside the run, so
# the test needs no polling or timing.
KILLED_PLAY = """
import os, signal, sys
import agents, games
from workbench.store import Store

saved = []

def kill_after_two(episode):
    saved.append(episode)
    if len(saved) == 2:
        os.kill(os.getpid(), signal.SIGKILL)

folder, db = sys.argv[1:]
agents.play(games.list_games(folder), "random", trials=3, max_steps=10, parallel=1, seed=3,
            store=Store(db), run_name="k", workers=0, on_episode=kill_after_two)
"""


def test_sigkill_then_resume_loses_and_duplicates_nothing(level1_dir, tmp_path):
    db = tmp_path / "w.duckdb"
    args = [
        "play",
        "--games",
        level1_dir,
        "--agent",
        "random",
        "--trials",
        "3",
        "--max-steps",
        "10",
        "--parallel",
        "1",
        "--seed",
        "3",
        "--workers",
        "0",
    ]
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_PLAY, level1_dir, str(db)], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    before = _episodes(db, "k")
    assert len(before) == 2
    resumed = cli(*args, "--run-name", "k", "--db", str(db))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} episode(s) already done" in resumed.stderr
    after = _episodes(db, "k")
    assert len(after) == 6 and len({(g, t) for g, t, *_ in after}) == 6
    assert set(before) <= set(after)
    store = Store(db)
    agents.play(
        games.list_games(level1_dir),
        "random",
        trials=3,
        max_steps=10,
        seed=3,
        store=store,
        run_name="uninterrupted",
        workers=0,
    )
    assert after == _episodes(db, "uninterrupted")
    run = runs.get_run(store, "k", kind="play")
    assert run["status"] == "finished"
    counts = store_reads.count_rows(store, run["id"])
    assert counts["steps"] == sum(moves for *_, moves, _ in after)
