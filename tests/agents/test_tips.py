"""Introspective tips: parsing LLM replies, merging with scores, and tips that really reach
the next trial's prompt, checked exactly with scripted replies over real HTTP."""

from __future__ import annotations

import pytest

from agents.tips import (
    Tip,
    TipOp,
    TipParseError,
    TipSet,
    TipWriter,
    apply_ops,
    diff_tipsets,
    parse_ops,
    parse_reflection,
    parse_tips,
    play_tips,
)
from agents.tips.parsing import is_game_command, is_observation, tip_defect
from tests import store_reads
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.errors import WorkbenchError
from workbench.llm.openai_backend import OpenAILLM
from workbench.store import play as play_store
from workbench.store import runs
from workbench.store import tips as tips_store

GOOD_TIPS = "Here are my tips:\n- Take what the recipe needs.\n- Prepare meal, then eat meal."


def test_parse_tips_reads_bullets_and_drops_noise():
    reply = (
        "Sure! Tips:\n1. Read the cookbook first.\n* Take what the recipe needs\n"
        "- read the cookbook first.\n- = Kitchen =-"
    )
    assert parse_tips(reply, 5).tips == ["Read the cookbook first.", "Take what the recipe needs"]
    assert parse_tips(reply, 1).tips == ["Read the cookbook first."]
    assert parse_tips("Open the fridge before taking food.", 3).tips == [
        "Open the fridge before taking food."
    ]
    for bad in ("", "   \n", "- ok\n- :)"):
        with pytest.raises(TipParseError):
            parse_tips(bad, 3)


def test_parse_tips_drops_a_looping_tip_cut_off_mid_sentence():
    looping = "Take the knife, then take the knife, then take the knife, then take the"
    reply = f"- Read the cookbook first.\n- {looping}"
    parsed = parse_tips(reply, 5)
    assert parsed.tips == ["Read the cookbook first."]
    assert parsed.dropped == [f"repeats itself: {looping[:57] + '...'!r}"]
    assert tip_defect(looping) == "repeats itself"
    # Cut off without looping: the reply's last line stops on a dangling word.
    assert tip_defect("Open the fridge before you take the", last=True) == "cut off mid-sentence"
    assert tip_defect("Open the fridge before you take the", last=False) is None
    assert tip_defect("Open the fridge first", last=True) is None
    assert tip_defect("x" * 301) == "cut off mid-sentence"
    with pytest.raises(TipParseError, match="no usable tip lines; dropped repeats itself"):
        parse_tips(f"- {looping}", 5)


def test_parse_tips_rejects_echoed_commands_and_observations():
    reply = (
        "- > take carrot from fridge\n"
        "- take carrot from fridge\n"
        "- Open the fridge.\n"
        "- At the end of the game, you see a knife on the table.\n"
        "- You see a closed fridge and a counter.\n"
        "- There is a red apple on the counter.\n"
        "- The fridge contains a carrot.\n"
        "- Open the fridge before taking food.\n"
        "- If you see a closed container, open it.\n"
        "- Take what the recipe needs, then prepare meal."
    )
    assert parse_tips(reply, 5).tips == [
        "Open the fridge before taking food.",
        "If you see a closed container, open it.",
        "Take what the recipe needs, then prepare meal.",
    ]
    echoed = "- > take carrot from fridge\n- > open fridge\n- You see a knife on the table."
    with pytest.raises(TipParseError, match="only game commands or observations"):
        parse_tips(echoed, 5)
    for command in (
        "> open fridge",
        "cook carrot with stove",
        "Slice the red apple with the knife",
    ):
        assert is_game_command(command), command
    for advice in ("Eat the meal once it is prepared.", "Prepare meal, then eat meal."):
        assert not is_game_command(advice) and not is_observation(advice), advice
    assert is_observation("In the kitchen, there is a closed fridge.")
    assert not is_observation("You should open the fridge first.")
    # A merge operation that only repeats a command adds nothing.
    assert [
        o.text for o in parse_ops("ADD: take carrot from fridge\nADD: Cook before eating.")
    ] == ["Cook before eating."]


def test_parse_reflection_and_ops():
    assert parse_reflection("Reflection: I looked around. Next: take parsley.") == (
        "I looked around. Next: take parsley."
    )
    with pytest.raises(TipParseError):
        parse_reflection("ok")
    ops = parse_ops(
        "ADD: Eat the meal once it is prepared.\n- EDIT 2: Open containers first.\n"
        "AGREE 1\n**REMOVE** tip 3\nADD\nEDIT: no number\nsome chatter"
    )
    assert [(o.op, o.target, o.text) for o in ops] == [
        ("ADD", None, "Eat the meal once it is prepared."),
        ("EDIT", 2, "Open containers first."),
        ("AGREE", 1, None),
        ("REMOVE", 3, None),
    ]
    with pytest.raises(TipParseError):
        parse_ops("I agree with everything.")


def test_apply_ops_scores_removes_and_caps():
    tips = [Tip("Read the cookbook.", 1), Tip("Look around.", 1), Tip("Cook food.", 3)]
    ops = [
        TipOp("AGREE", 1),
        TipOp("EDIT", 2, "Look for the ingredients."),
        TipOp("REMOVE", 3),
        TipOp("AGREE", 9),
        TipOp("ADD", None, "Eat the meal."),
        TipOp("ADD", None, "read the cookbook"),
    ]
    after = apply_ops(tips, ops, max_tips=3)
    assert [(t.text, t.score) for t in after] == [
        ("Read the cookbook.", 3),  # AGREE, then an ADD of the same tip
        ("Look for the ingredients.", 2),
        ("Eat the meal.", 2),
    ]
    assert [o.applied for o in ops] == [True, True, True, False, True, True]
    assert ops[3].note == "there is no tip 9" and ops[2].old_text == "Cook food."
    # Over the cap, the lowest score leaves (earlier tips win ties).
    capped = apply_ops(after, [TipOp("ADD", None, "Open the fridge.")], max_tips=3)
    assert [t.text for t in capped] == [
        "Read the cookbook.",
        "Look for the ingredients.",
        "Eat the meal.",
    ]
    a, b = TipSet("general", "general", after), TipSet("general", "general", capped)
    assert diff_tipsets(a, b) == []
    b.tips[0].score = 5
    assert diff_tipsets(a, b) == [("~", "Read the cookbook.", "score 3 -> 5")]


def scripted_actor(tip_reply: str | list[str] = GOOD_TIPS):
    """Tip prompts get `tip_reply` (a list is consumed one reply per call); acting prompts
    without tips answer "look", with tips they cook: take, prepare meal, eat meal."""
    queue = list(tip_reply) if isinstance(tip_reply, list) else None

    def reply(prompt: str) -> str:
        if "Update the list with operations" in prompt:
            return "ADD: Take the ingredient, prepare the meal, then eat it.\nAGREE 1"
        if 'Start with "Reflection:"' in prompt:
            return "Reflection: I only looked around. Next time: take it, prepare meal, eat meal."
        if "Write at most" in prompt:
            return queue.pop(0) if queue is not None else tip_reply
        commands = prompt.split("Valid commands:\n")[1].split("\n\nAnswer")[0].splitlines()
        if "Tips:\n" not in prompt:
            return "look"
        for want in ("eat meal", "prepare meal"):
            if want in commands:
                return want
        takes = [c for c in commands if c.startswith("take") and "cookbook" not in c]
        opens = [c for c in commands if c.startswith("open")]
        return (takes or opens or ["look"])[0]

    return reply


def test_self_tips_reach_the_next_trial_with_provenance(level1_games, store):
    with ScriptedOpenAIServer(scripted_actor()) as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        result = play_tips(
            level1_games,
            ["self"],
            llm=llm,
            store=store,
            trials=2,
            max_steps=8,
            parallel=2,
            run_name="self",
            select="generate",
            workers=0,
            write_after_last=False,
        )
    episodes = play_store.list_episodes(store, result.run_id)
    by_trial = {t: [e for e in episodes if e["trial"] == t] for t in (0, 1)}
    assert all(not e["tips"] and not e["won"] for e in by_trial[0])
    assert all(
        e["tips"] == ["Take what the recipe needs.", "Prepare meal, then eat meal."] and e["won"]
        for e in by_trial[1]
    )
    assert len(result.tipsets) == 2 and result.failures == 0
    for tipset in result.tipsets:
        stored = tips_store.get_tipset(store, tipset.id)
        source = next(e for e in by_trial[0] if e["game"] == tipset.game_id)
        assert stored["episodes"] == [source["id"]] and stored["scope"] == f"game:{source['game']}"
        calls = store_reads.list_llm_calls(store, source["id"])
        tip_calls = [c for c in calls if c["purpose"] == "tips:self"]
        assert [c["id"] for c in tip_calls] == stored["llm_call_ids"]
        assert (
            "> look" in tip_calls[0]["prompt"] and "You had no tips yet." in tip_calls[0]["prompt"]
        )
    assert runs.get_run(store, "self", kind="play")["status"] == "finished"


def _self_tips_from(replies, games, store, run_name: str, faults=()):
    """Two trials with self tips, the tip-writing LLM answering `replies` in turn."""
    with ScriptedOpenAIServer(scripted_actor(replies)) as server:
        server.faults.extend(faults)
        return play_tips(
            games,
            ["self"],
            llm=OpenAILLM("scripted", base_url=server.base_url, backoff=0.01),
            store=store,
            trials=2,
            max_steps=3,
            parallel=1,
            run_name=run_name,
            select="generate",
            workers=0,
            write_after_last=False,
        )


def test_unusable_replies_are_retried_then_recorded_as_failures(level1_games, store):
    # Both games ask at once: one gets the usable reply, the other an empty one and then
    # two more unusable ones (1 try + 2 retries).
    replies = ["", "- Take what the recipe needs, then cook.", "ok", ":)", "no"]
    # A broken HTTP reply is retried by the backend.
    result = _self_tips_from(replies, level1_games, store, "flaky", faults=["garbage"])
    assert sorted(t.status for t in result.tipsets) == ["failed", "ok"]
    failed = next(t for t in result.tipsets if t.status == "failed")
    assert failed.tips == [] and "unusable reply" in failed.error
    assert len(failed.llm_call_ids) == 3
    ok = next(t for t in result.tipsets if t.status == "ok")
    assert len(ok.llm_call_ids) == 1
    episodes = play_store.list_episodes(store, result.run_id)
    second = {e["game"]: e["tips"] for e in episodes if e["trial"] == 1}
    assert second[failed.game_id] == [] and second[ok.game_id] == ok.texts
    assert len(episodes) == 4  # the run went on


def test_a_reply_with_a_looping_tip_is_kept_partial_not_ok(level1_games, store):
    looping = "- Go east, then go east, then go east, then go east, then go"
    replies = [f"- Read the cookbook first.\n{looping}", "- Take what the recipe needs."]
    result = _self_tips_from(replies, level1_games, store, "looping")
    assert sorted(t.status for t in result.tipsets) == ["ok", "partial"]
    partial = next(t for t in result.tipsets if t.status == "partial")
    assert partial.texts == ["Read the cookbook first."]
    assert partial.error.startswith("dropped 1: repeats itself: 'Go east, then go east")
    episodes = play_store.list_episodes(store, result.run_id)
    second = {e["game"]: e["tips"] for e in episodes if e["trial"] == 1}
    assert second[partial.game_id] == ["Read the cookbook first."]  # its usable tip is used


def test_reflexion_and_expert_and_general(level1_games, store):
    with ScriptedOpenAIServer(scripted_actor()) as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        result = play_tips(
            level1_games[:1],
            ["reflexion", "expert", "none"],
            llm=llm,
            store=store,
            trials=3,
            max_steps=6,
            run_name="mix",
            select="generate",
            workers=0,
            write_after_last=False,
        )
        by = {(t.condition, t.trial): t for t in result.tipsets}
        # Reflexion reflects on the failed trial 0 only: trial 1 is won, nothing to reflect.
        assert [k for k in by if k[0] == "reflexion"] == [("reflexion", 0)]
        expert_prompt = store_reads.list_llm_calls(store, by[("expert", 0)].episodes[0])[-1]
        assert "The expert's game:" in expert_prompt["prompt"]
        assert "> eat meal" in expert_prompt["prompt"]  # the walkthrough, replayed
        assert by[("expert", 1)].parent_id == by[("expert", 0)].id
        assert by[("expert", 1)].version == 2
        general = TipSet("general", "general", [Tip("Cook, then eat.", 2)])
        general.save(store)
        zero = play_tips(
            level1_games,
            ["general"],
            llm=llm,
            store=store,
            tipset=general,
            max_steps=6,
            run_name="zero",
            select="generate",
            workers=0,
        )
    assert all(e.spec.tips == ["Cook, then eat."] and e.won for e in zero.episodes)
    assert zero.tipsets == []
    with pytest.raises(WorkbenchError, match="general tip set: give its id as tipset"):
        play_tips(level1_games, ["general"], llm=llm, store=store)
    with pytest.raises(WorkbenchError, match="max_tips must be at least 1, not 0"):
        TipWriter(llm, max_tips=0)
    with pytest.raises(WorkbenchError, match="max_steps must be at least 1, not 0"):
        play_tips(level1_games, ["self"], llm=llm, store=store, max_steps=0)
    with pytest.raises(WorkbenchError, match="no tip set"):
        TipSet.load(store, "missing")
