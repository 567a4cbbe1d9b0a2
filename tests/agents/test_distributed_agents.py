"""Games split over torchrun ranks (gloo on the CPU, as CI runs it): `experiment` on two
processes stores the episodes, actions and tips that one process stores, and a run whose
rank 1 is killed mid-way resumes with nothing lost or duplicated. An error in rank 0's own
work (the store is rank 0's) stops every rank with one line.

The acting and tip-writing LLM is the scripted OpenAI-compatible server of the experiment
tests (deterministic replies over real HTTP), reached by every rank. Tips are written on
rank 0 between trials and handed to every rank: the trial-1 episodes win only with them.
The kill is deterministic: with one episode a rank per chunk, `torchrun(crash="1:1")`
makes rank 1 SIGKILL itself after playing chunk 1 of the first trial (one game under four
conditions), when rank 0 has stored chunk 0 (two episodes).
"""

from __future__ import annotations

import pytest

from tests import store_reads
from tests.agents.test_tips import scripted_actor
from tests.games.compiled import compiled
from tests.gpu.launch import torchrun
from tests.run_cli import run_inprocess
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench import distributed
from workbench.store import Store, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store

GLOO = {"CUDA_VISIBLE_DEVICES": ""}  # the CPU path even on a machine with GPUs


@pytest.fixture(scope="module")
def test_games(games_base):
    return compiled(games_base, 1, 1, seed=3, split="test")


def stored(db, name: str) -> dict:
    """What an experiment stored, free of ids and clocks: per play run its episodes (with
    their tips and actions) and tip sets, its row counts, and the experiment's table."""
    store = Store(db, read_only=True)
    found: dict = {}
    for phase in ("train", "test"):
        run = runs.get_run(store, f"{name}-{phase}", kind="play")
        assert run["status"] == "finished"
        episodes = play_store.list_episodes(store, run["id"])
        by_key = {
            (e["game"], e["trial"], e["condition"]): (
                e["won"],
                e["score"],
                e["tips"],
                [s["action"] for s in play_store.get_steps(store, e["id"])],
            )
            for e in episodes
        }
        assert len(by_key) == len(episodes)  # each episode once
        tipsets = []
        for row in tips_store.list_tipsets(store, run_id=run["id"], limit=100_000):
            full = tips_store.get_tipset(store, row["id"])
            texts = [(t["text"], t["score"]) for t in full["tips"]]
            keys = ("kind", "game_id", "condition", "trial", "version", "status")
            tipsets.append((*(row[k] for k in keys), texts))
        found[phase] = {
            "episodes": by_key,
            "tipsets": sorted(tipsets, key=repr),
            "rows": store_reads.count_rows(store, run["id"]),
        }
    experiment = runs.get_run(store, name, kind="experiment")
    assert experiment["status"] == "finished"
    found["table"] = store_reads.get_experiment_results(store, experiment["id"])
    return found


def test_experiment_on_two_ranks_killed_then_resumed_stores_what_one_process_stores(
    capsys, monkeypatch, tmp_path, level1_games, test_games
):
    args = [
        "experiment", "introspective-tips",
        "--train", str(level1_games[0].path), "--test", str(test_games[0].path),
        "--trials", "2", "--max-steps", "6", "--parallel", "2", "--name", "it",
        "--llm", "openai:scripted", "--select", "generate", "--format", "json",
    ]  # fmt: skip
    one_db, two_db = tmp_path / "one.duckdb", tmp_path / "two.duckdb"
    with ScriptedOpenAIServer(scripted_actor()) as server:
        endpoint = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test-key"}
        for key, value in endpoint.items():
            monkeypatch.setenv(key, value)
        code, _, err = run_inprocess(capsys, *args, "--db", str(one_db))
        assert code == 0, err

        env = {**endpoint, **GLOO}
        one_a_chunk = {distributed.CHUNK_ENV: "1"}
        killed = torchrun(*args, "--db", str(two_db), env={**env, **one_a_chunk}, crash="1:1")
        assert killed.returncode != 0
        # torchrun stops rank 0 at once (SIGTERM); if rank 0 saw the loss first, it said so
        # in one line. (`--gpus` has the launcher name the lost rank in one line.)
        errors = [line for line in killed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) <= 1 and all("run the same command again" in e for e in errors)
        store = Store(two_db, read_only=True)
        train = runs.get_run(store, "it-train", kind="play")
        assert len(play_store.list_episodes(store, train["id"])) == 2  # chunk 0, whole
        del store

        resumed = torchrun(*args, "--db", str(two_db), env=env)
        assert resumed.returncode == 0, resumed.stderr
        # An error in rank 0's own work (here the experiment run, opened on rank 0 alone)
        # stops every rank, and only rank 0 says why: one line.
        again = torchrun(*args, "--db", str(two_db), env=env)
    assert again.returncode == 1
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: experiment 'it' has already finished; pick another name"]

    one, two = stored(one_db, "it"), stored(two_db, "it")
    assert len(one["train"]["episodes"]) == 8 and len(one["test"]["episodes"]) == 2
    # Tips were written between trials (on rank 0) and reached the next trial's prompts.
    assert any(e[2] and e[0] for k, e in two["train"]["episodes"].items() if k[1] == 1)
    # self and expert after each trial, reflexion after the lost trial 0, and the general
    # set (an empty first version, then one a merged set): 5 + 3 versions.
    assert len(two["train"]["tipsets"]) == 8
    assert two == one
