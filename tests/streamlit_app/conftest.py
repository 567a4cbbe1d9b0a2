"""A database filled the way a user fills one: real short runs on compiled level-1 games
(random, expert, and an LLM agent behind the scripted OpenAI-compatible server whose
replies are HTML), a stored explanation with faithfulness metrics, an attention
explanation and a probe. Built once per session; the page tests only read it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import agents
from agents import Condition
from explainers.base import Explanation
from tests.games.compiled import (  # noqa: F401
    compiled_sets,
    games_base,
    level1_games,
    level_games,
)
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.llm.openai_backend import OpenAILLM
from workbench.store import Store, new_id
from workbench.store import play as play_store
from workbench.store.metrics import save_metrics
from workbench.store.probes import save_probe
from workbench.store.tips import save_tipset

SCRIPT = "<script>alert('xss')</script>"
SCRIPT_TIP = f"{SCRIPT} Read the cookbook before cooking."
SCRIPT_OBSERVATION = f"You see a fridge. {SCRIPT} <b>bold</b> [link](javascript:alert(1))"


@dataclass
class Filled:
    path: Path
    random_run: str
    expert_run: str
    llm_run: str
    script_episode: str  # an episode whose observation and tip carry <script>
    explanation: str
    attention: str
    probe: str
    tipsets: tuple[str, str]  # a first version and the one merged from it


def fill(store: Store, games: list) -> Filled:
    random = agents.play(
        games,
        "random",
        trials=2,
        parallel=2,
        max_steps=6,
        seed=3,
        store=store,
        run_name="random-l1",
        workers=0,
    )
    expert = agents.play(games, "expert", parallel=2, store=store, run_name="expert-l1", workers=0)
    with ScriptedOpenAIServer(reply=lambda prompt: SCRIPT) as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        played = agents.play(
            games[:1],
            "llm",
            llm=llm,
            select="generate",
            max_steps=2,
            store=store,
            run_name="llm-l1",
            conditions=[Condition("tipped", (SCRIPT_TIP,))],
            workers=0,
        )
    # Real games never show HTML, so one episode of the LLM run is written with an
    # observation that does, through the same store call the runner uses.
    game = games[0]
    script_episode = new_id()
    play_store.save_episode(
        store,
        {"id": played.run_id, "name": "llm-l1", "params": {}},
        game.to_dict(),
        {
            "id": script_episode,
            "trial": 1,
            "condition": "tipped",
            "agent": "llm",
            "tips": [SCRIPT_TIP],
            "won": False,
            "lost": False,
            "score": 0,
            "max_score": 3,
            "moves": 1,
            "stop_reason": "max_steps",
            "invalid_actions": 1,
            "prompt_tokens": 5,
            "completion_tokens": 2,
            "seconds": 0.1,
        },
        [
            {
                "idx": 0,
                "observation": SCRIPT_OBSERVATION,
                "admissible": ["look"],
                "facts": [],
                "action": SCRIPT,
                "raw_output": SCRIPT,
                "valid": False,
                "reward": 0,
                "score": 0,
                "feedback": SCRIPT,
                "done": False,
                "llm_call_id": None,
            }
        ],
        [],
    )
    exp = Explanation(
        method="ig",
        category="attribution",
        model="tiny-llama",
        input_text=f"{SCRIPT} the milk is in the",
        input_tokens=[SCRIPT, " the", " milk", " is", " in", " the"],
        target_tokens=[" fridge", "<b>"],
        scores=[[0.1, 0.0, 0.9, -0.2, 0.1, 0.05], [0.3, 0.1, -0.4, 0.0, 0.2, 0.1]],
        params={"steps": 32},
        baseline="pad",
        expected=[0.95, 0.3],
        delta=[0.0, 0.0],
    )
    exp_id = exp.save(store)
    curve = {"fractions": [0.0, 0.5, 1.0], "values": [0.9, 0.4, 0.1]}
    save_metrics(
        store,
        exp_id,
        [
            {"name": "comprehensiveness", "value": 0.42, "row": None},
            {"name": "comprehensiveness", "value": 0.5, "row": 0, "details": {"target": " fridge"}},
            {"name": "deletion_auc", "value": 0.45, "row": None},
            {"name": "deletion_auc", "value": 0.45, "row": 0, "details": {"curve": curve}},
        ],
    )
    tokens = ["the", SCRIPT, "fridge"]
    attention = Explanation(
        method="attention",
        category="attention",
        model="tiny-llama",
        input_text="the fridge",
        input_tokens=tokens,
        target_tokens=[],
        scores=[[0.2, 0.3, 0.5]],
        extras={
            "tokens": tokens,
            "rows": [2],
            "n_layers": 1,
            "n_heads": 1,
            "map": [[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]],
            "layers": None,
            "heads": None,
            "omitted": [],
        },
    ).save(store)
    probe = save_probe(
        store,
        {
            "task": "textworld-state:carried",
            "model": "tiny-llama",
            "n_examples": 40,
            "labels": ["no", "yes"],
            "split": "group",
            "layers": [
                {
                    "layer": i,
                    "accuracy": a,
                    "control_accuracy": 0.5,
                    "selectivity": a - 0.5,
                    "majority": 0.55,
                    "n_train": 30,
                    "n_test": 10,
                }
                for i, a in enumerate([0.6, 0.8, 0.7])
            ],
        },
    )
    tipsets = (new_id(), new_id())
    call = {
        "id": new_id(),
        "run_id": played.run_id,
        "purpose": "tips",
        "backend": "openai",
        "model": "scripted",
        "prompt": "Write tips for this trajectory.",
        "completion": f"1. {SCRIPT_TIP}",
        "prompt_tokens": 5,
        "completion_tokens": 5,
    }
    base = {
        "run_id": played.run_id,
        "kind": "self",
        "scope": f"game:{game.id}",
        "condition": "tipped",
        "game_id": game.id,
        "status": "ok",
    }
    save_tipset(
        store,
        {
            **base,
            "id": tipsets[0],
            "trial": 0,
            "version": 1,
            "episodes": [played.episodes[0].id],
            "llm_call_ids": [call["id"]],
        },
        [{"text": SCRIPT_TIP, "score": 1}, {"text": "Open the fridge.", "score": 1}],
        [],
        [call],
    )
    save_tipset(
        store,
        {
            **base,
            "id": tipsets[1],
            "trial": 1,
            "version": 2,
            "parent_id": tipsets[0],
            "episodes": [script_episode],
            "llm_call_ids": [],
        },
        [{"text": SCRIPT_TIP, "score": 2}, {"text": "Eat the meal last.", "score": 1}],
        [
            {"op": "AGREE", "target": 1, "applied": True},
            {"op": "REMOVE", "target": 2, "old_text": "Open the fridge.", "applied": True},
            {"op": "ADD", "text": "Eat the meal last.", "applied": True},
        ],
        [],
    )
    return Filled(
        store.path,
        random.run_id,
        expert.run_id,
        played.run_id,
        script_episode,
        exp_id,
        attention,
        probe,
        tipsets,
    )


@pytest.fixture(scope="session")
def filled(tmp_path_factory, level1_games) -> Filled:  # noqa: F811
    store = Store(tmp_path_factory.mktemp("dashboard") / "filled.duckdb")
    return fill(store, level1_games)


@pytest.fixture
def filled_env(filled, monkeypatch) -> Filled:
    """Point the app (run in-process by AppTest) at the filled database."""
    monkeypatch.setenv("WORKBENCH_DB", str(filled.path))
    return filled
