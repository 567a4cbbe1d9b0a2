"""The batch runner on real games: the expert wins everything, random and LLM agents
record complete episodes, and runs resume without loss or duplication."""

from __future__ import annotations

import pytest

import agents
from agents import Condition, PromptTemplate
from tests import store_reads
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.errors import WorkbenchError
from workbench.llm import LLMUnavailableError
from workbench.llm.local import LocalLLM
from workbench.llm.openai_backend import OpenAILLM
from workbench.store import play as play_store
from workbench.store import runs


def test_expert_wins_every_level(level_games, store):
    found = list(level_games.values())
    result = agents.play(found, "expert", parallel=4, max_steps=60, store=store, run_name="ex")
    assert len(result.episodes) == 10
    by_level = {e.spec.game.level: e for e in result.episodes}
    for level, game in level_games.items():
        episode = by_level[level]
        assert episode.won and episode.stop_reason == "won", f"level {level}"
        assert episode.score == episode.max_score == game.max_score
        assert episode.moves == game.walkthrough_steps
    rep = agents.report(store, "ex")
    assert [r.level for r in rep.rows] == list(range(1, 11))
    assert all(r.success.mean == 1.0 and r.score.mean == 1.0 for r in rep.rows)
    assert runs.get_run(store, "ex", kind="play")["status"] == "finished"


def test_random_agent_records_complete_episodes(level1_games, store):
    result = agents.play(
        level1_games,
        "random",
        trials=2,
        parallel=3,
        max_steps=12,
        seed=4,
        store=store,
        run_name="rnd",
    )
    assert len(result.episodes) == 4
    counts = store_reads.count_rows(store, result.run_id)
    assert counts == {"episodes": 4, "steps": sum(e.moves for e in result.episodes), "llm_calls": 0}
    for row in play_store.list_episodes(store, result.run_id):
        steps = play_store.get_steps(store, row["id"])
        assert [s["idx"] for s in steps] == list(range(row["moves"]))
        # An episode ends when the game is won or lost (eating the wrong thing) or at
        # the step budget, and says which.
        expected = "won" if row["won"] else "lost" if row["lost"] else "max_steps"
        assert row["stop_reason"] == expected and (expected != "max_steps" or row["moves"] == 12)
        assert all(s["action"] in s["admissible"] for s in steps)
        assert steps[0]["facts"] and "cookbook" in steps[0]["observation"] + str(steps[0]["facts"])
        assert steps[-1]["score"] == row["score"]
    # Same seed, same choices: a second run plays every episode identically.
    again = agents.play(level1_games, "random", trials=2, parallel=1, max_steps=12, seed=4)
    assert _actions(again) == _actions(result)


def _actions(result) -> dict:
    return {e.spec.key: [s.action for s in e.steps] for e in result.episodes}


@pytest.mark.parametrize("select", ["choose", "generate"])
def test_llm_agent_records_prompts_and_calls(level1_games, store, tiny_causal, select):
    llm = LocalLLM(tiny_causal)
    tips = ("Read the cookbook first.", "Eat the meal at the end.")
    result = agents.play(
        level1_games[:1],
        "llm",
        llm=llm,
        select=select,
        max_steps=3,
        parallel=2,
        trials=1,
        conditions=[Condition("tipped", tips), Condition("plain")],
        store=store,
        run_name=f"llm-{select}",
    )
    assert {e.spec.condition for e in result.episodes} == {"tipped", "plain"}
    for e in result.episodes:
        assert e.moves == 3 and len(e.llm_calls) == 3
        for step in e.steps:
            prompt = step.llm_call.prompt
            assert e.spec.game.max_score and "Goal: You are hungry!" in prompt
            assert all(c in prompt for c in step.admissible)
            assert (tips[0] in prompt) == (e.spec.condition == "tipped")
            if select == "choose":
                assert step.valid and step.action in step.admissible
            else:
                assert step.raw_output is not None and step.llm_call.completion_tokens > 0
                assert step.valid == (step.action in step.admissible)
    counts = store_reads.count_rows(store, result.run_id)
    assert counts == {"episodes": 2, "steps": 6, "llm_calls": 6}
    row = play_store.list_episodes(store, result.run_id)[0]
    stored = play_store.get_steps(store, row["id"])
    assert all(s["prompt"] and s["completion"] for s in stored)
    assert row["tips"] == (list(tips) if row["condition"] == "tipped" else [])


def test_history_in_the_prompt_is_the_last_k_steps(level1_games, tiny_causal):
    template = PromptTemplate(history_steps=2)
    result = agents.play(
        level1_games[:1], "llm", llm=LocalLLM(tiny_causal), template=template, max_steps=4
    )
    steps = result.episodes[0].steps
    last_prompt = steps[3].llm_call.prompt
    assert last_prompt.count("\n> ") == 2
    assert f"> {steps[2].action}" in last_prompt and f"> {steps[1].action}" in last_prompt


def test_llm_agent_over_openai_generates_and_maps_commands(level1_games, store):
    def reply(prompt: str) -> str:
        commands = prompt.split("Valid commands:\n")[1].split("\n\n")[0].splitlines()
        return f"> {commands[0].upper()}."  # mapped despite case, prompt sign and period

    with ScriptedOpenAIServer(reply=reply) as server:
        server.faults.extend(["429", "500"])
        llm = OpenAILLM("scripted", base_url=server.base_url, api_key="sk-hidden", backoff=0.01)
        result = agents.play(
            level1_games,
            "llm",
            llm=llm,
            select="generate",
            max_steps=2,
            parallel=2,
            store=store,
            run_name="oa",
        )
    steps = [s for e in result.episodes for s in e.steps]
    assert len(steps) == 4 and all(s.valid and s.action in s.admissible for s in steps)
    assert all(s.llm_call.prompt_tokens > 0 for s in steps)
    # Neither the run's record nor its LLM calls hold the key.
    dump = str(runs.get_run(store, "oa"))
    dump += str([store_reads.list_llm_calls(store, e.id) for e in result.episodes])
    assert "sk-hidden" not in dump and "scripted" in dump


def test_unmappable_output_is_an_invalid_action(level1_games):
    with ScriptedOpenAIServer(reply=lambda p: "I think I should dance") as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        result = agents.play(level1_games[:1], "llm", llm=llm, select="generate", max_steps=2)
    steps = result.episodes[0].steps
    assert [s.valid for s in steps] == [False, False]
    assert steps[0].action == "I think I should dance" and steps[0].reward == 0
    assert result.episodes[0].to_row()["invalid_actions"] == 2


def test_endpoint_failure_stops_cleanly_and_the_run_resumes(level1_games, store):
    with ScriptedOpenAIServer(reply=lambda p: "inventory") as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, max_retries=1, backoff=0.01)
        # One game at a time: the first episode's two calls succeed, then the endpoint
        # fails twice in a row (the call and its retry) in the second episode.
        server.faults.extend([None, None, None, "500", "500"])
        with pytest.raises(LLMUnavailableError, match="failed after retries"):
            agents.play(
                level1_games,
                "llm",
                llm=llm,
                select="generate",
                max_steps=2,
                store=store,
                run_name="flaky",
                parallel=1,
            )
        run = runs.get_run(store, "flaky", kind="play")
        assert run["status"] == "failed"  # not shown as running forever; still resumable
        assert store_reads.count_rows(store, run["id"]) == {
            "episodes": 1,
            "steps": 2,
            "llm_calls": 2,
        }
        resumed = agents.play(
            level1_games,
            "llm",
            llm=llm,
            select="generate",
            max_steps=2,
            store=store,
            run_name="flaky",
            parallel=1,
        )
    assert resumed.skipped == 1 and len(resumed.episodes) == 1
    assert store_reads.count_rows(store, run["id"]) == {"episodes": 2, "steps": 4, "llm_calls": 4}
    assert runs.get_run(store, "flaky", kind="play")["status"] == "finished"


def test_resume_refuses_different_options_and_finished_runs(level1_games, store):
    agents.play(level1_games[:1], "random", max_steps=2, store=store, run_name="r")
    with pytest.raises(WorkbenchError, match="already finished"):
        agents.play(level1_games[:1], "random", max_steps=2, store=store, run_name="r")
    with pytest.raises(WorkbenchError, match="trials must be at least 1"):
        agents.play(level1_games, "random", trials=0, store=store)
    with pytest.raises(WorkbenchError, match="unknown agent 'smart'"):
        agents.play(level1_games, "smart", store=store)
    with pytest.raises(WorkbenchError, match="needs an llm"):
        agents.play(level1_games, "llm", store=store)
