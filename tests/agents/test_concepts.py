"""TCAV, steering and RSA over a recorded run (the tiny model playing two level-1 games)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from agents.concepts import run_decisions, run_direction, run_rsa, run_steering, run_tcav
from explainers.concepts.directions import ConceptDirection
from tests.run_cli import run_inprocess
from workbench.store.concepts import get_concept_result, list_concept_results

pytestmark = pytest.mark.slow  # compiles and plays games


@pytest.fixture(scope="module")
def played(played_run, tiny_causal):
    """(store, concept): run "c", and a fact that held in some of its decisions."""
    items = run_decisions(played_run, "c", tiny_causal)
    counts = Counter(f for item in items for f in set(item.facts))
    n = len(items)
    varying = sorted(f for f, k in counts.items() if 5 <= k <= n - 5)
    assert varying, f"no fact varies enough over {n} decisions"
    return played_run, varying[0]


def test_tcav_over_a_run_is_stored_and_reproducible(played, tiny_causal):
    store, concept = played
    first = run_tcav(store, "c", concept, lm=tiny_causal, n_random=20, resamples=3)
    again = run_tcav(store, "c", concept, lm=tiny_causal, layers=[1], n_random=20, resamples=3)
    assert [r.layer for r in first.layers] == [0, 1, 2]
    assert first.layers[1].scores == again.layers[0].scores  # the same seeds, layer by layer
    assert first.n_decisions == len(first.decisions) == len(first.sensitivities)
    assert first.model_info["base"] == tiny_causal.identity.to_dict()["base"]
    for r in first.layers:
        assert 0.0 <= r.score <= 1.0 and len(r.random_scores) == 20
        assert r.p_corrected == pytest.approx(min(1.0, 3 * r.p_value))
    rid = first.save(store)
    stored = get_concept_result(store, rid)
    assert stored["kind"] == "tcav" and stored["concept"] == concept
    assert stored["result"]["layers"][0]["scores"] == first.layers[0].scores
    assert any(row["id"] == rid for row in list_concept_results(store, "tcav"))


def test_steering_over_a_run_where_the_concept_is_false_and_its_episodes(played, tiny_causal):
    store, concept = played
    direction = run_direction(store, "c", concept, 1, lm=tiny_causal)
    assert direction.layer == 1 and direction.n_positive >= 5
    false = sum(1 for d in run_decisions(store, "c", tiny_causal) if concept not in d.facts)
    result = run_steering(
        store, "c", direction, [-4, 4], lm=tiny_causal, where="false", n_random=2, games=1,
        episode_alphas=[0, 4],
    )  # fmt: skip
    assert result.n_decisions == false
    assert result.alphas == [-4.0, 0.0, 4.0]
    assert [e.alpha for e in result.effects] == [-4.0, 4.0]
    curve = result.decisions[0]
    assert len(curve["concept"]) == 3 and curve["concept"][1] == pytest.approx(curve["random"][1])
    assert [(o.direction, o.alpha) for o in result.episodes] == [
        ("concept", 0.0),
        ("concept", 4.0),
        ("random", 4.0),
    ]
    assert all(o.episodes == 1 and 0 <= o.low <= o.win_rate <= o.high for o in result.episodes)
    rid = result.save(store)
    assert get_concept_result(store, rid)["result"]["effects"][0]["alpha"] == -4.0


def test_rsa_over_recorded_states(played, tiny_causal):
    store, _ = played
    result = run_rsa(store, ["c"], lm=tiny_causal, permutations=50)
    assert [r.layer for r in result.layers] == [0, 1, 2]
    assert result.n_states == len(run_decisions(store, "c", tiny_causal))
    assert all(np.isfinite(r.rho) and 0 < r.p_value <= 1 for r in result.layers)
    assert get_concept_result(store, result.save(store))["kind"] == "rsa"


# -- the commands -----------------------------------------------------------------------------


def test_tcav_and_rsa_commands(played, tiny_model_dir, capsys):
    store, concept = played
    before = len(list_concept_results(store))
    common = ["--model", str(tiny_model_dir), "--db", str(store.path), "--format", "json"]
    code, out, err = run_inprocess(
        capsys, "tcav", "--run", "c", "--concept", concept, "--layers", "1", *common
    )
    assert code == 0, err
    assert [r["layer"] for r in json.loads(out)["layers"]] == [1]
    code, out, err = run_inprocess(
        capsys, "rsa", "--runs", "c", "--permutations", "20", "--no-save", *common
    )
    assert code == 0, err
    assert len(list_concept_results(store)) == before + 1  # rsa --no-save stored nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tcav", "--run", "nope", "--concept", "in(knife, I)"], "no play run"),
        (["tcav", "--run", "c", "--concept", "knife"], "not a fact pattern"),
        (["tcav", "--run", "c", "--concept", "in(unicorn, I)"], "at least 5 of each"),
        (["tcav", "--run", "c", "--concept", "in(knife, I)", "--layers", "9"], "out of range"),
        (["steer", "--run", "c", "--concept", "in(knife, I)", "--alphas", "1,x"], "not a number"),
        (["steer", "--run", "c", "--concept", "in(knife, I)", "--layer", "7"], "out of range"),
        (["steer", "--run", "c", "--source", "actadd", "--layer", "1"], "--plus and --minus"),
        (
            ["steer", "--run", "c", "--source", "actadd", "--layer", "1", "--plus", "a"]
            + ["--minus", "b"],
            "--positions front",
        ),
        (["steer", "--run", "c", "--direction", "d.npz", "--layer", "1"], "does not apply"),
        (["rsa", "--runs", "c", "--metric", "jaccard"], "--metric"),
    ],
)
def test_bad_input_gets_one_line_and_stores_nothing(played, tiny_model_dir, capsys, args, message):
    store, _ = played
    before = len(list_concept_results(store))
    code, out, err = run_inprocess(
        capsys, *args, "--model", str(tiny_model_dir), "--db", str(store.path)
    )
    assert code != 0 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0], err
    assert len(list_concept_results(store)) == before


def test_a_direction_of_another_width_is_refused(played, tiny_model_dir, tmp_path, capsys):
    store, concept = played
    path = ConceptDirection(concept, 1, np.ones(7, np.float32), "means", "other").save(
        tmp_path / "other.npz"
    )
    code, _, err = run_inprocess(
        capsys,
        "steer",
        "--run",
        "c",
        "--direction",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--db",
        str(store.path),
    )
    assert code != 0 and "width 7" in err


def test_tcav_on_two_ranks_gives_what_one_process_gives(played, tiny_model_dir, capsys):
    from tests.gpu.launch import torchrun

    store, concept = played
    args = ["tcav", "--run", "c", "--concept", concept, "--model", str(tiny_model_dir)]
    args += ["--device", "cpu", "--dtype", "float32", "--resamples", "2", "--layers", "1"]
    args += ["--no-save"]
    args += ["--format", "json", "--db", str(store.path)]
    code, out, err = run_inprocess(capsys, *args)
    assert code == 0, err
    one = json.loads(out)
    two = torchrun(*args, env={"CUDA_VISIBLE_DEVICES": ""})  # gloo: the CPU path
    assert two.returncode == 0, two.stderr
    got = json.loads(two.stdout)  # rank 0 alone prints
    assert got["decisions"] == one["decisions"]
    np.testing.assert_allclose(got["sensitivities"], one["sensitivities"], rtol=1e-4, atol=1e-7)
    assert [r["scores"] for r in got["layers"]] == [r["scores"] for r in one["layers"]]
