"""Explaining one recorded decision: the exact prompt is rebuilt, segment masses add up to
the action's attribution, tips are ablated, and the CLI refuses bad input in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agents.explain_step import SEGMENTS, explain_step
from agents.recorded_step import recorded_step
from tests.agents.conftest import tipped_run
from workbench.errors import WorkbenchError
from workbench.store import explanations, runs
from workbench.store import play as play_store
from workbench.store import tips as tips_store


@pytest.fixture(scope="module")
def played(level1_games, tiny_causal, tmp_path_factory):
    store = tipped_run(
        tmp_path_factory.mktemp("explain") / "w.duckdb", level1_games[:1], tiny_causal
    )
    episode = play_store.list_episodes(store, runs.get_run(store, "g", kind="play")["id"])[0]
    return store, episode


def test_segments_sum_to_the_total_and_tips_are_ablated(played, tiny_causal):
    store, episode = played
    result = explain_step(
        store, "g", episode["id"], 2, method="ig", objective="logprob", lm=tiny_causal, steps=4
    )
    steps = play_store.get_steps(store, episode["id"])
    assert result.action == steps[2]["action"] and result.prompt == steps[2]["prompt"]
    assert set(SEGMENTS) <= set(result.segments)
    assert sum(result.segments.values()) == pytest.approx(result.total, abs=1e-6)
    assert result.total == pytest.approx(float(result.explanation.scores.sum()), abs=1e-6)
    assert result.segments["history"] != 0.0 and result.segments["tips"] != 0.0
    assert [t["tip"] for t in result.tips] == ["Take the fridge food.", "Eat the meal."]
    assert all(t["new_action"] in steps[2]["admissible"] for t in result.tips)
    assert sum(t["mass"] for t in result.tips) != 0.0
    # Spans come from the template: the tips span holds the tips, the admissible span the list.
    ((start, end),) = result.spans["tips"]
    assert "Take the fridge food." in result.prompt[start:end]
    ((start, end),) = result.spans["admissible"]
    assert result.prompt[start:end] == "\n".join(steps[2]["admissible"])
    stored = tips_store.list_step_explanations(store, episode["id"], 2)[0]
    assert stored["explanation_id"] == result.explanation_id
    assert stored["segments"] == pytest.approx(result.segments)
    assert explanations.get_explanation(store, result.explanation_id)["target_tokens"]


def test_tip_masses_and_the_tips_scaffold_add_up_to_the_tips_segment(played, tiny_causal):
    store, episode = played
    result = explain_step(
        store, "g", episode["id"], 1, method="ig", objective="logprob", lm=tiny_causal, steps=4
    )
    masses = result.explanation.scores.sum(axis=0)
    # The scaffold, found independently: tokens of the tips section outside every tip's
    # text (the "Tips:" header and the bullets).
    ((start, end),) = result.spans["tips"]
    section = result.prompt[start:end]
    tips = [(start + section.index(t), start + section.index(t) + len(t)) for t in
            ["Take the fridge food.", "Eat the meal."]]  # fmt: skip
    enc = tiny_causal.tokenizer(result.prompt, return_offsets_mapping=True)
    scaffold, scaffold_tokens = 0.0, []
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if start <= a and b <= end and not any(s <= a and b <= e for s, e in tips):
            scaffold += masses[i]
            scaffold_tokens.append(result.prompt[a:b])
    assert scaffold_tokens == ["Tips:", "-", "-"]
    assert result.tip_scaffold == pytest.approx(scaffold, abs=1e-9)
    tip_total = sum(t["mass"] for t in result.tips)
    assert tip_total + result.tip_scaffold == pytest.approx(result.segments["tips"], abs=1e-9)
    # Each token's segment and tip travel with the explanation, for heatmaps by section.
    extras = result.explanation.extras
    assert len(extras["token_segments"]) == len(masses) == len(extras["token_tips"])
    assert {i for i, s in enumerate(extras["token_segments"]) if s == "tips"} >= {
        i for i, t in enumerate(extras["token_tips"]) if t is not None
    }


def test_bad_steps_are_one_line_errors(played, tiny_causal, tmp_path):
    store, episode = played
    with pytest.raises(WorkbenchError, match="no play run"):
        explain_step(store, "nope", episode["id"], 0, lm=tiny_causal)
    with pytest.raises(WorkbenchError, match="has no episode"):
        explain_step(store, "g", "nope", 0, lm=tiny_causal)
    with pytest.raises(WorkbenchError, match="there is no step 99"):
        explain_step(store, "g", episode["id"], 99, lm=tiny_causal)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "explain-step",
            "--run",
            "nope",
            "--episode",
            "x",
            "--step",
            "0",
            "--db",
            str(store.path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"error: no play run named 'nope' in {store.path}"]
    tips = subprocess.run(
        [
            sys.executable,
            "-m",
            "workbench.cli",
            "play",
            "--games",
            str(tmp_path),
            "--tips",
            "self",
            "--max-tips",
            "0",
            "--db",
            str(tmp_path / "n.duckdb"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Typer checks the range: a usage error naming the option, before anything loads.
    assert tips.returncode == 2 and "--max-tips" in tips.stderr and "Traceback" not in tips.stderr
    assert not (tmp_path / "n.duckdb").exists()


@pytest.mark.parametrize("objective", ["choice", "margin"])
def test_the_default_explains_the_choice_with_exact_segment_shapley_values(
    played, tiny_causal, objective
):
    store, episode = played
    result = explain_step(store, "g", episode["id"], 2, lm=tiny_causal, objective=objective)
    assert result.method == "segment_shapley" and result.objective == objective
    check = result.check
    assert check["exact"] and check["status"] == "ok"
    # Complete by construction: the masses add up to v(all) - v(none).
    assert result.total == pytest.approx(check["expected"], abs=1e-5)
    assert abs(check["delta"]) < 1e-5
    assert result.segments["instructions"] == 0.0  # the frame is not a player
    assert sum(result.segments.values()) == pytest.approx(result.total, abs=1e-6)
    assert [t["tip"] for t in result.tips] == ["Take the fridge food.", "Eat the meal."]
    assert result.tip_scaffold == 0.0
    # The objective is the run's own choice: its value is the log-softmax of the agent's
    # ranking scores (or the margin) at the recorded action.
    recorded = recorded_step(store, "g", episode["id"], 2, tiny_causal)
    (ranking,) = recorded.agent.rank([recorded.turn])
    scores = np.array(ranking.scores)
    k = ranking.candidates.index(result.action)
    expected = (
        scores[k] - np.logaddexp.reduce(scores)
        if objective == "choice"
        else scores[k] - np.delete(scores, k).max()
    )
    assert result.value == pytest.approx(expected, abs=1e-4)
    assert result.explanation.target_tokens == [f"{objective} of {result.action!r}"]
    # Each tip's ablation effect is in the objective's units.
    assert all(isinstance(t["effect"], float) for t in result.tips)
    stored = tips_store.list_step_explanations(store, episode["id"], 2)[0]
    assert stored["params"]["objective"] == objective
    assert stored["params"]["check"]["exact"]


def test_the_cli_reports_the_objective_its_check_and_progress(played, tiny_model_dir, capsys):
    import json

    from tests.run_cli import run_inprocess

    store, episode = played
    where = ["--run", "g", "--episode", episode["id"], "--db", str(store.path)]
    model = ["--model", str(tiny_model_dir), "--device", "cpu"]
    code, out, err = run_inprocess(
        capsys, "explain-step", *where, "--step", "1", *model, "--format", "json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "segment_shapley" and data["objective"] == "choice"
    assert data["check"]["exact"] and abs(data["check"]["delta"]) < 1e-5
    assert {"effect", "disagrees"} <= set(data["tips"][0])
    # Progress reaches stderr without a terminal, ending at the work's total.
    lines = [line for line in err.splitlines() if line.startswith("explaining step 1")]
    assert lines and lines[-1].endswith("/" + lines[-1].rsplit("/", 1)[1])
    done, total = lines[-1].rsplit(": ", 1)[1].split("/")
    assert done == total

    code, out, err = run_inprocess(
        capsys, "explain-step", *where, "--step", "1", *model, "--method", "ig",
        "--objective", "margin", "--param", "steps=4",
    )  # fmt: skip
    assert code == 0, err
    assert "completeness with 5 knots" in " ".join(out.split())
    assert "|segment| / sum of |segments|" in out

    for args, message in [
        (["--objective", "best"], "objective must be"),
        (["--objective", "margin", "--patch", "a=>b"], "--objective"),
        (["--method", "attention"], "cannot explain a step"),
    ]:
        code, out, err = run_inprocess(capsys, "explain-step", *where, "--step", "1", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
