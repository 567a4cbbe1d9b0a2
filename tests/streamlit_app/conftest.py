"""A database filled the way a user fills one: real short runs on compiled level-1 games
(random, expert, an LLM agent behind the scripted OpenAI-compatible server whose replies
are HTML, and an LLM agent on a tiny local model that ranks the admissible commands), a
run still running, a stored explanation with faithfulness metrics, an attention
explanation, a probe, tip sets, an explained step (integrated gradients with too few steps
to converge), a stored method comparison, an activation-patching result and one concept
result of each kind (TCAV, steering, RSA). Built once per session; the page tests only read
it.

The tiny model's vocabulary is the words of the games' texts and of the acting prompt, so
its explanations of an agent step read like the prompt (few `<unk>`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import agents
from agents import Condition
from agents.concepts import AlphaEffect, EpisodeOutcome, SteeringResult
from agents.explain_step import explain_step
from agents.prompt import DEFAULT_TEMPLATE, PromptTemplate
from agents.runner import episode_specs, run_episodes, run_params
from explainers import explain
from explainers.concepts.rsa import LayerRSA, RSAResult
from explainers.concepts.tcav import LayerTCAV, TCAVResult
from explainers.explanation import Explanation
from explainers.metrics.compare import compare_methods, save_comparison
from tests.conftest import WORDS, tiny_llama_config, tiny_tokenizer
from tests.games.compiled import (  # noqa: F401
    compiled_sets,
    games_base,
    level1_games,
    level_games,
)
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.llm.local import LocalLLM
from workbench.llm.openai_backend import OpenAILLM
from workbench.models import LoadedModel, from_pretrained_objects
from workbench.store import Store, new_id, runs
from workbench.store import play as play_store
from workbench.store.concepts import save_concept_result
from workbench.store.metrics import save_metrics
from workbench.store.probes import save_probe
from workbench.store.tips import save_tipset

# The model of the stored probe and explanation: the tiny model with an adapter, so pages
# must show more than "tiny-llama".
ADAPTED_MODEL = {
    "base": "tiny-llama",
    "dtype": "float32",
    "adapter": "/adapters/l1-3",
    "adapter_sha256": "1a2b3c4d" + "0" * 56,
    "device": "cpu",
}
SCRIPT = "<script>alert('xss')</script>"
SCRIPT_TIP = f"{SCRIPT} Read the cookbook before cooking."
SCRIPT_OBSERVATION = f"You see a fridge. {SCRIPT} <b>bold</b> [link](javascript:alert(1))"
TIPS = ("Read the cookbook before cooking.", "Open the fridge first.", "Eat the meal last.")
EXPLAINED_STEP = 2  # of the tiny model's episode: its prompt has about 300 tokens


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
    tiny_run: str  # llm agent on the tiny model, ranking commands ("choose")
    tiny_episode: str
    step_explanation: str  # explanation id of its step EXPLAINED_STEP (IG, not converged)
    comparison: str  # run id of a stored method comparison
    patching: str
    live_run: str  # a play run still running (1 of 4 planned episodes recorded)
    model_dir: Path  # the tiny model, saved for pages that load one
    concepts: dict[str, str]  # kind (tcav, steer, rsa) -> id of its stored result


def tiny_model(texts: list[str]) -> LoadedModel:
    """A randomly initialised 2-layer Llama whose whole-word vocabulary covers `texts`,
    the acting prompt's own words and the test words (seeded: the same in every run)."""
    rendered = PromptTemplate().render(
        objective="x", observation="x", commands=["x"], tips=["x"], history=[("x", "x")]
    )
    words = set(WORDS) | set(DEFAULT_TEMPLATE.split()) | set(rendered.split())
    for text in texts:
        words |= set(text.split())
    tokenizer = tiny_tokenizer(sorted(words))
    torch.manual_seed(0)
    config = tiny_llama_config(len(tokenizer), max_position_embeddings=512)
    from transformers import LlamaForCausalLM

    return from_pretrained_objects(LlamaForCausalLM(config), tokenizer, name="tiny-llama")


def fill(store: Store, games: list, model_dir: Path) -> Filled:
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
    texts = [*TIPS]
    for e in random.episodes + expert.episodes:
        for s in e.steps:
            texts += [s.observation, s.feedback, *s.admissible]
    lm = tiny_model(texts)
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    tiny = agents.play(
        games[:1],
        "llm",
        llm=LocalLLM(lm),
        max_steps=4,
        store=store,
        run_name="tiny-llm-l1",
        conditions=[Condition("tipped", TIPS)],
        workers=0,
    )
    tiny_episode = tiny.episodes[0].id
    step = explain_step(
        store, "tiny-llm-l1", tiny_episode, EXPLAINED_STEP, method="ig", lm=lm, steps=4
    )
    pairs: list = []
    compare_methods(
        lm,
        "the milk is in the fridge Q",
        ["occlusion", "saliency"],
        "milk",
        on_explained=lambda exp, evaluation: pairs.append((exp, evaluation)),
    )
    comparison = save_comparison(
        store, pairs, text="the milk is in the fridge Q", target="milk", name="milk-methods"
    )
    patching = explain(
        lm,
        "the milk is in the fridge",
        method="activation_patching",
        target="to",
        corrupt="the apple is in the fridge",
    ).save(store)
    # A run caught while it runs: one episode of the four it plans is recorded (what a
    # resumed `workbench play` of four episodes records before its first one ends).
    live_specs = episode_specs(games, trials=2)
    random_agent = agents.make_agent("random")
    params = run_params(
        games,
        random_agent,
        trials=2,
        conditions=[Condition()],
        max_steps=3,
        seed=5,
        parallel=1,
    )
    live = run_episodes(
        live_specs[:1],
        random_agent,
        params=params,
        max_steps=3,
        seed=5,
        store=store,
        run_name="live-l1",
        workers=0,
        finish=False,
    )
    runs.start_play_run(
        store, {"id": live.run_id, "name": "live-l1", "params": params}, len(live_specs)
    )
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
        model_info=ADAPTED_MODEL,
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
            "model_info": ADAPTED_MODEL,
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
                for i, a in enumerate([0.45, 0.8, 0.7])
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
        tiny.run_id,
        tiny_episode,
        step.explanation_id,
        comparison,
        patching,
        live.run_id,
        model_dir,
        concept_results(store, tiny.run_id),
    )


def concept_results(store: Store, run_id: str) -> dict[str, str]:
    """One stored TCAV, steering and RSA result of the tiny LLM run, with small numbers:
    TCAV differs from random at layer 1 only (its t there infinite, stored as null), the
    steering result played episodes, RSA has a noise ceiling at two of three layers."""
    nan, inf = float("nan"), float("inf")
    tcav = TCAVResult(
        concept="has:key",
        model="tiny-llama",
        model_info=ADAPTED_MODEL,
        layers=[
            LayerTCAV(0, 0.5, [0.5, 0.5], 0.5, 0.05, [0.5] * 20, 0.0, 1.0, 1.0, False, 0.0),
            LayerTCAV(1, 0.9, [0.8, 1.0], 0.5, 0.1, [0.5] * 20, inf, 0.0, 0.0, True, 0.3),
            LayerTCAV(2, 0.6, [0.5, 0.7], 0.5, 0.1, [0.5] * 20, 1.2, 0.3, 0.9, False, 0.1),
        ],
        n_decisions=4,
        n_positive=2,
        n_negative=3,
        params={"run": "tiny-llm-l1", "n_random": 20},
    )
    steer = SteeringResult(
        concept="has:key",
        model="tiny-llama",
        layer=1,
        alphas=[-2.0, 0.0, 2.0],
        effects=[
            AlphaEffect(-2.0, -0.2, -0.01, -0.19, -0.3, -0.08, 0.01, 2),
            AlphaEffect(2.0, 0.3, 0.02, 0.28, 0.1, 0.46, 0.02, 2),
        ],
        n_decisions=2,
        direction={"concept": "has:key", "layer": 1, "source": "means"},
        params={"run": "tiny-llm-l1", "n_random": 4},
        decisions=[
            {"command": "open door", "concept": [0.1, 0.3, 0.6], "random": [0.3, 0.3, 0.32]},
            {"command": "take knife", "concept": [0.2, 0.4, 0.7], "random": [0.4, 0.4, 0.41]},
        ],
        episodes=[
            EpisodeOutcome("concept", 0.0, 2, 1, 0.5, 0.09, 0.91, 0.5),
            EpisodeOutcome("concept", 2.0, 2, 2, 1.0, 0.34, 1.0, 1.0),
            EpisodeOutcome("random", 2.0, 2, 0, 0.0, 0.0, 0.66, nan),
        ],
    )
    rsa = RSAResult(
        model="tiny-llama",
        layers=[
            LayerRSA(0, 0.05, 0.4, 0.6),
            LayerRSA(1, 0.3, 0.01, 0.7),
            LayerRSA(2, 0.2, 0.03, None),
        ],
        n_states=12,
        n_unique=6,
        n_repeated=4,
        metric="cosine",
        params={"runs": ["tiny-llm-l1", "random-l1"], "permutations": 100},
    )
    return {
        kind: save_concept_result(store, kind, result.to_dict(), run_id=run_id)
        for kind, result in (("tcav", tcav), ("steer", steer), ("rsa", rsa))
    }


@pytest.fixture(scope="session")
def filled(tmp_path_factory, level1_games) -> Filled:  # noqa: F811
    folder = tmp_path_factory.mktemp("dashboard")
    return fill(Store(folder / "filled.duckdb"), level1_games, folder / "tiny-model")


@pytest.fixture
def filled_env(filled, monkeypatch) -> Filled:
    """Point the app (run in-process by AppTest) at the filled database."""
    monkeypatch.setenv("WORKBENCH_DB", str(filled.path))
    return filled
