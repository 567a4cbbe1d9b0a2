"""Decision features: computed per recorded decision, stored, resumed, and what they say
agrees with the explain-step analysis they summarise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.decision_features import (
    compute_run_features,
    decision_features,
    decision_spec,
    decisions,
    feature_frame,
)
from agents.mistakes import mine_run
from agents.recorded_step import recorded_step
from tests.agents.conftest import tipped_run
from workbench.errors import WorkbenchError
from workbench.llm.local import LocalLLM
from workbench.store import runs


@pytest.fixture(scope="module")
def played(level1_games, tiny_causal, tmp_path_factory):
    return tipped_run(
        tmp_path_factory.mktemp("features") / "w.duckdb", level1_games[:2], tiny_causal
    )


def test_features_are_stored_once_and_resume(played, tiny_causal):
    store = played
    keys = decisions(store, "g")
    first = compute_run_features(store, "g", lm=tiny_causal)
    assert (first.computed, first.stored) == (len(keys), 0)
    again = compute_run_features(store, "g", lm=tiny_causal)
    assert (again.computed, again.stored) == (0, len(keys))
    mine_run(store, "g")
    frame = feature_frame(store, "g")
    assert len(frame) == len(keys)
    assert set(frame["game_id"]) and frame["mistake"].dtype == bool
    assert frame["attention_summary"].between(0, 1).all()
    assert (frame["margin"] >= -1e-6).all()  # the agent chose its top-scoring command


def test_features_and_verdicts_export_per_run(played, tiny_causal, tmp_path):
    from workbench.store.export import export_table

    store = played
    keys = decisions(store, "g")
    compute_run_features(store, "g", lm=tiny_causal)
    mine_run(store, "g")
    assert export_table(store, "decision_features", tmp_path / "f.jsonl", run="g") == len(keys)
    assert export_table(store, "step_mistakes", tmp_path / "m.jsonl", run="g") == len(keys)


def test_occlusion_masses_are_what_removing_each_segment_does(played, tiny_causal):
    from explainers.choice import prepare_choice

    store = played
    episode_id, step = decisions(store, "g")[2]
    recorded = recorded_step(store, "g", episode_id, step, tiny_causal)
    spec = decision_spec(tiny_causal, recorded)
    assert spec.names[0] == "tips" and "history" in spec.names
    features = decision_features(tiny_causal, spec)
    obj = prepare_choice(tiny_causal, spec.text, spec.candidates, spec.chosen, offsets=spec.offsets)
    full = float(obj.row_values()[0])
    assert features["choice"] == pytest.approx(full, abs=1e-5)
    # Removing the history by hand: the prompt's tokens without its positions.
    ids = obj.prompt_ids.numpy()
    history = set(spec.groups[spec.names.index("history")])
    kept = np.array([t for i, t in enumerate(ids) if i not in history])
    with torch.no_grad():
        without = obj.values_from_log_probs(obj.log_probs_for_ids([kept], 0))[0, 0]
    assert features["seg_history"] == pytest.approx(full - float(without), abs=1e-4)
    # The agent's own ranking gives the margin and the entropy.
    (ranking,) = recorded.agent.rank([recorded.turn])
    scores = np.array(ranking.scores)
    k = ranking.candidates.index(spec.chosen)
    p = np.exp(scores - np.logaddexp.reduce(scores))
    assert features["margin"] == pytest.approx(scores[k] - np.delete(scores, k).max(), abs=1e-4)
    assert features["entropy"] == pytest.approx(-(p * np.log(p)).sum(), abs=1e-4)


def test_runs_without_choices_are_refused(played, tiny_causal):
    store = played
    with pytest.raises(WorkbenchError, match="no play run"):
        compute_run_features(store, "nope", lm=tiny_causal)
    with pytest.raises(WorkbenchError, match="feature method"):
        compute_run_features(store, "g", lm=tiny_causal, method="lime")
    record = runs.require_run(store, "g", kind="play")
    assert record["name"] == "g"


def test_the_prediction_report_runs_on_a_recorded_run(
    compiled_sets, tiny_causal, tiny_model_dir, tmp_path, capsys
):
    """Features of every decision, the mistake verdicts, and the grouped cross-validation
    on top: the folds never split a game."""
    import json

    from agents.mistake_prediction import predict_mistakes
    from agents.runner import play
    from tests.run_cli import run_inprocess
    from workbench.store import Store

    store = Store(tmp_path / "w.duckdb")
    chosen = [*compiled_sets[1], compiled_sets[2][0], compiled_sets[3][0]]
    play(
        chosen,
        "llm",
        llm=LocalLLM(tiny_causal),
        max_steps=5,
        store=store,
        run_name="tiny",
        workers=0,
    )
    compute_run_features(store, "tiny", lm=tiny_causal)
    mine_run(store, "tiny")
    frame = feature_frame(store, "tiny")
    assert frame["mistake"].any() and not frame["mistake"].all()
    report = predict_mistakes(frame, folds=3, n_boot=50)
    assert report.decisions == len(frame) and report.games == len(chosen)
    for game in frame["game_id"].unique():
        assert len(set(report.fold[frame["game_id"].to_numpy() == game])) == 1
    assert 0.0 <= report.explanation.mean <= 1.0
    code, out, err = run_inprocess(
        capsys, "mistakes", "--run", "tiny", "--db", str(store.path), "--predict",
        "--folds", "3", "--format", "json", "--model", str(tiny_model_dir), "--device", "cpu",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["decisions"] == len(frame)


def test_a_run_without_llm_decisions_is_refused_before_any_work(level1_games, tmp_path, capsys):
    from agents.runner import play
    from tests.run_cli import run_inprocess
    from workbench.store import Store

    store = Store(tmp_path / "w.duckdb")
    play(level1_games[:1], "expert", max_steps=3, store=store, run_name="e", workers=0)
    code, out, err = run_inprocess(
        capsys, "mistakes", "--run", "e", "--db", str(store.path), "--predict", "--device", "cpu"
    )
    assert code == 1 and err.strip().splitlines() == [
        "error: run 'e' has no llm decisions to explain"
    ]
