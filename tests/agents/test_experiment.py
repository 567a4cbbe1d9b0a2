"""The Introspective Tips experiment end to end with scripted replies: the table is exact."""

from __future__ import annotations

import json

import pytest

from agents.experiment import introspective_tips
from tests import store_reads
from tests.agents.test_tips import scripted_actor
from tests.games.compiled import compiled
from tests.run_cli import run_inprocess
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.errors import WorkbenchError
from workbench.llm.openai_backend import OpenAILLM
from workbench.store import runs
from workbench.store import tips as tips_store


@pytest.fixture(scope="module")
def test_games(games_base):
    return compiled(games_base, 1, 1, seed=3, split="test")


def test_experiment_table_is_exact(level1_games, test_games, store):
    with ScriptedOpenAIServer(scripted_actor()) as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        result = introspective_tips(
            level1_games,
            test_games,
            llm=llm,
            store=store,
            name="it",
            trials=2,
            max_steps=6,
            parallel=4,
            select="generate",
            workers=0,
        )
        with pytest.raises(WorkbenchError, match="already finished"):
            introspective_tips(level1_games, test_games, llm=llm, store=store, name="it")
    table = {(r["phase"], r["condition"], r["trial"]): r for r in result.to_dict()["rows"]}
    # Trial 0: nobody has tips, nobody wins; trial 1: every learning condition does.
    for cond in ("none", "reflexion", "self", "expert"):
        assert table[("train", cond, 0)]["success"] == 0.0
        assert table[("train", cond, 1)]["success"] == (0.0 if cond == "none" else 1.0)
        assert table[("train", cond, 1)]["games"] == 2
    assert table[("test", "none", 0)]["success"] == 0.0
    won = table[("test", "general", 0)]
    assert won["success"] == 1.0 and won["score"] == 1.0 and won["steps_to_win"] > 0
    # The general set, merged from 2 games x (self, expert) by the scripted reply "ADD: X /
    # AGREE 1": the first merge adds X at 2 (AGREE 1 names no tip yet), each of the three
    # later merges repeats X (counted as AGREE) and agrees with it: 2 + 3 x 2.
    assert [(t.text, t.score) for t in result.general.tips] == [
        ("Take the ingredient, prepare the meal, then eat it.", 8)
    ]
    first = tips_store.get_tipset(store, result.general.parent_id)
    assert first["parent_id"] is not None and first["ops"][0]["op"] == "ADD"
    assert result.general.version == 5 and len(result.general.episodes) == 4
    stored = store_reads.get_experiment_results(store, result.run_id)
    assert len(stored) == len(result.rows) == 10
    assert json.loads(json.dumps(result.to_dict()))["general_tipset"]["id"] == result.general.id


def test_experiment_bad_input(level1_games, store):
    llm = OpenAILLM("never-called", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(WorkbenchError, match="no test games"):
        introspective_tips(level1_games, [], llm=llm, store=store, name="x")
    with pytest.raises(WorkbenchError, match="unseen"):
        introspective_tips(level1_games, level1_games, llm=llm, store=store, name="x")
    assert runs.get_run(store, "x") is None  # nothing half-written


def test_experiment_cli_json(level1_games, test_games, tmp_path, capsys, monkeypatch):
    """`workbench experiment introspective-tips --format json` against the scripted endpoint."""
    db = tmp_path / "exp.duckdb"
    with ScriptedOpenAIServer(scripted_actor()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        code, out, err = run_inprocess(
            capsys,
            "experiment",
            "introspective-tips",
            "--train",
            str(level1_games[0].path.parent),
            "--test",
            str(test_games[0].path.parent),
            "--trials",
            "2",
            "--max-steps",
            "6",
            "--llm",
            "openai:scripted",
            "--select",
            "generate",
            "--name",
            "cli-exp",
            "--format",
            "json",
            "--db",
            str(db),
        )
    assert code == 0, err
    data = json.loads(out)
    rows = {(r["phase"], r["condition"], r["trial"]): r for r in data["rows"]}
    assert rows[("test", "general", 0)]["success"] == 1.0
    assert rows[("train", "none", 1)]["success"] == 0.0
    assert rows[("train", "self", 1)]["success"] == 1.0
    # Paired with no tips on the same games: every game flips from lost to won.
    assert rows[("train", "self", 1)]["success_diff"] == 1.0
    assert rows[("train", "none", 1)]["success_p"] is None  # the baseline itself
    assert "test-key" not in db.read_bytes().decode("latin-1")
