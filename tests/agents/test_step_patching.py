"""Activation patching on a recorded step: the observation is edited, the agent chooses
again, the residual stream is patched layer by layer, and the result is stored linked to
the step; bad input is a one-line error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from agents.step_patching import parse_patch, patch_step
from agents.tips import Tip, TipSet, play_tips
from explainers.causal.result import PatchingExplanation
from explainers.explanation import Explanation
from tests.conftest import WORDS
from tests.run_cli import run_inprocess
from workbench.errors import WorkbenchError
from workbench.llm.local import LocalLLM
from workbench.store import play as play_store
from workbench.store import runs
from workbench.store import tips as tips_store


def _played(games, lm, store, name: str):
    tipset = TipSet("general", "general", [Tip("Open the fridge first.")])
    tipset.save(store)
    play_tips(
        games[:1],
        ["general"],
        llm=LocalLLM(lm),
        store=store,
        tipset=tipset,
        max_steps=2,
        run_name=name,
        workers=0,
    )
    return play_store.list_episodes(store, runs.get_run(store, name, kind="play")["id"])[0]


@pytest.fixture(scope="module")
def played(level1_games, tiny_causal, tmp_path_factory):
    from workbench.store import Store

    store = Store(tmp_path_factory.mktemp("patch-step") / "w.duckdb")
    return store, _played(level1_games, tiny_causal, store, "g")


def _edit(observation: str) -> str:
    """An OLD=>NEW that occurs in the observation and changes its tokens: the first word
    the tiny tokenizer knows, replaced by another it knows."""
    words = observation.split()
    word = (
        next((w for w in words if w in WORDS), None) or re.search(r"[A-Za-z]{3,}", observation)[0]
    )
    return f"{word}=>{'apple' if word != 'apple' else 'milk'}"


def _check_invariants(result, tolerance: float = 1e-4) -> None:
    """What holds for any model: at layer 0 (the embeddings) an unedited token is the same
    in both runs, so patching it restores nothing; a one-token command is decided at the
    last position, so patching it after the last block restores everything."""
    exp = result.explanation
    unedited = [
        j
        for j, p in enumerate(exp.positions)
        if len(exp.corrupt_tokens) == len(exp.input_tokens)
        and exp.corrupt_tokens[p] == exp.input_tokens[p]
    ]
    for j in unedited:
        assert exp.scores[0, j] == pytest.approx(0.0, abs=tolerance)
    if len(exp.extras["target_ids"]) == 1:
        assert exp.scores[-1, -1] == pytest.approx(1.0, abs=tolerance)


def test_patching_a_step_is_stored_linked_to_it(played, tiny_causal):
    store, episode = played
    steps = play_store.get_steps(store, episode["id"])
    patch = _edit(steps[1]["observation"])
    result = patch_step(store, "g", episode["id"], 1, patch, lm=tiny_causal)
    exp = result.explanation
    assert result.action == steps[1]["action"]
    assert result.clean_action in steps[1]["admissible"]
    assert result.corrupt_action in steps[1]["admissible"]
    assert exp.layers == list(range(3))  # the tiny model: 2 blocks, layers 0 .. 2
    last = len(exp.input_tokens) - 1
    assert exp.positions[-1] == last and len(exp.positions) >= 2
    _check_invariants(result)
    stored = tips_store.list_step_explanations(store, episode["id"], 1)
    assert stored[0]["explanation_id"] == result.explanation_id
    assert stored[0]["params"]["patch"] == patch
    loaded = Explanation.load(store, result.explanation_id)
    assert isinstance(loaded, PatchingExplanation)
    np.testing.assert_allclose(loaded.scores, exp.scores)
    assert loaded.extras["step"]["step"] == 1


def test_last_position_mode_has_one_column(played, tiny_causal):
    store, episode = played
    steps = play_store.get_steps(store, episode["id"])
    result = patch_step(
        store,
        "g",
        episode["id"],
        1,
        _edit(steps[1]["observation"]),
        lm=tiny_causal,
        positions="last",
    )
    assert result.explanation.scores.shape == (3, 1)


def test_a_patch_edits_the_game_replies_the_history_shows(played, tiny_causal):
    import copy
    import dataclasses

    from agents.recorded_step import recorded_step
    from agents.step_patching import _edited_turn

    store, episode = played
    recorded = recorded_step(store, "g", episode["id"], 1, tiny_causal)
    turn = recorded.turn
    earlier = dataclasses.replace(turn.steps[0], feedback="The recipe says: slice the apple.")
    turn = dataclasses.replace(turn, steps=[earlier])
    prompt = recorded.agent.prompt(turn)
    assert "slice the apple" in prompt and "slice the apple" not in turn.state.observation
    edited = _edited_turn(turn, prompt, "slice the apple", "dice the apple", 1)
    assert edited.steps[0].feedback == "The recipe says: dice the apple."
    assert edited.state.observation == turn.state.observation
    assert "dice the apple" in recorded.agent.prompt(edited)
    # A reply the prompt does not show (here: no history window) is not edited text.
    agent = copy.copy(recorded.agent)
    agent.template = dataclasses.replace(agent.template, history_steps=0)
    without = agent.prompt(turn)
    with pytest.raises(WorkbenchError, match="replies of its history"):
        _edited_turn(turn, without, "slice the apple", "dice the apple", 1)


def test_bad_patches_are_one_line_errors(played, tiny_causal, tiny_classifier):
    store, episode = played
    with pytest.raises(WorkbenchError, match="does not occur in the observation of step 1"):
        patch_step(store, "g", episode["id"], 1, "zebra crossing=>road", lm=tiny_causal)
    with pytest.raises(WorkbenchError, match="OLD=>NEW"):
        parse_patch("no arrow here")
    with pytest.raises(WorkbenchError, match="empty OLD"):
        parse_patch("=>x")
    with pytest.raises(WorkbenchError, match="needs a causal LM"):
        patch_step(store, "g", episode["id"], 1, "a=>b", lm=tiny_classifier)
    with pytest.raises(WorkbenchError, match="positions must be"):
        patch_step(store, "g", episode["id"], 1, "a=>b", lm=tiny_causal, positions="some")


@pytest.mark.slow
def test_step_patching_on_the_default_model(level1_games, store):
    from workbench.models import load_model

    # float32: bf16 rounding alone moves a patched value by ~0.1, which the normalised
    # restoration divides by the (here small) clean-corrupted difference.
    lm = load_model(dtype="float32", progress=False)
    episode = _played(level1_games, lm, store, "smol")
    steps = play_store.get_steps(store, episode["id"])
    observation = steps[0]["observation"]
    result = patch_step(
        store, "smol", episode["id"], 0, _edit(observation), lm=lm, layers=[0, 15, 30]
    )
    exp = result.explanation
    assert result.clean_action == steps[0]["action"]  # the prompt was rebuilt exactly
    assert exp.layers == [0, 15, 30] and exp.scores.shape == (3, len(exp.positions))
    _check_invariants(result, tolerance=0.05)
    assert tips_store.list_step_explanations(store, episode["id"], 0)


def test_explain_step_patch_command(played, tiny_model_dir, capsys):
    store, episode = played
    steps = play_store.get_steps(store, episode["id"])
    patch = _edit(steps[1]["observation"])
    base = ["explain-step", "--run", "g", "--episode", episode["id"], "--step", "1"]
    base += ["--model", str(tiny_model_dir), "--db", str(store.path), "--dtype", "float32"]
    code, out, err = run_inprocess(capsys, *base, "--patch", patch, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["patch"] == patch and data["action"] == steps[1]["action"]
    assert data["explanation"]["component"] == "resid"
    code, out, err = run_inprocess(capsys, *base, "--patch", patch, "--positions", "last")
    assert code == 0 and "choice" in out and "saved as explanation" in err
    code, out, err = run_inprocess(capsys, *base, "--patch", "zebra crossing=>road")
    assert code == 1 and "does not occur in the observation" in err
    assert len(err.strip().splitlines()) == 1
    code, out, err = run_inprocess(capsys, *base, "--patch", "no arrow")
    assert code == 1 and "OLD=>NEW" in err


def test_the_explain_step_page_links_a_stored_patching(played, tiny_causal, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    store, episode = played
    steps = play_store.get_steps(store, episode["id"])
    result = patch_step(
        store, "g", episode["id"], 1, _edit(steps[1]["observation"]), lm=tiny_causal
    )
    monkeypatch.setenv("WORKBENCH_DB", str(store.path))
    app = Path(__file__).parents[2] / "streamlit_app" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60)
    at.query_params["episode"] = episode["id"]
    at.query_params["step"] = "1"
    at.run()
    at.switch_page("views/explain_step.py").run()
    assert not at.exception, [e.message for e in at.exception]
    shown = "\n".join(t.value for t in at.text)
    assert f"activation patching with the edit {result.patch}" in shown
    at.switch_page("views/patching.py").run()
    assert not at.exception and at.get("vega_lite_chart")
