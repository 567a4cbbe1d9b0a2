"""Every tips condition end to end with the default model (SmolLM2-135M) on a level-1 game.

The model is too weak to win or to write useful tips; what is checked is the plumbing a
researcher relies on: each condition plays, tips (or recorded failures) are written between
trials with their LLM calls, and a general set merged from them is used zero-shot.
"""

from __future__ import annotations

import pytest

from agents.tips import TipWriter, build_general, play_tips
from tests import store_reads
from workbench.llm.local import LocalLLM
from workbench.models import load_model


@pytest.mark.slow
def test_every_condition_on_the_default_model(level1_games, store):
    llm = LocalLLM(load_model(dtype="float32", progress=False))  # shared (cached) with other tests
    game = level1_games[:1]
    result = play_tips(
        game,
        ["none", "self", "expert", "reflexion"],
        llm=llm,
        store=store,
        trials=2,
        max_steps=2,
        parallel=4,  # the four conditions step (and prompt the model) together
        run_name="smol",
        workers=0,
        writer=TipWriter(llm, max_tokens=40, retries=0),
        write_after_last=False,
    )
    assert sorted((e.spec.condition, e.spec.trial) for e in result.episodes) == sorted(
        (c, t) for c in ("none", "self", "expert", "reflexion") for t in (0, 1)
    )
    written = {(t.condition, t.trial): t for t in result.tipsets}
    # self and expert write after every trial but the last; reflexion after a loss (2 steps
    # are too few to win); none never writes.
    assert {("self", 0), ("expert", 0), ("reflexion", 0)} <= set(written)
    assert not any(c == "none" for c, _ in written)
    for tipset in written.values():
        assert tipset.llm_call_ids, "every tip set names the LLM call that made it"
        assert tipset.status in ("ok", "failed")
    # Trial 1 of each learning condition played with what trial 0 wrote.
    for mode in ("self", "expert"):
        second = next(e for e in result.episodes if e.spec.condition == mode and e.spec.trial == 1)
        assert second.spec.tips == [t.text for t in written[(mode, 0)].tips]
    calls = store_reads.list_llm_calls(store, written[("self", 0)].episodes[0])
    assert any(c["purpose"].startswith("tips:") for c in calls)

    general = build_general(
        TipWriter(llm, max_tokens=40, retries=0),
        [written[("self", 0)], written[("expert", 0)]],
        store,
    )
    zero = play_tips(
        game,
        ["general"],
        llm=llm,
        store=store,
        tipset=general,
        max_steps=2,
        run_name="smol-general",
        workers=0,
    )
    assert [e.spec.tips for e in zero.episodes] == [[t.text for t in general.tips]]
