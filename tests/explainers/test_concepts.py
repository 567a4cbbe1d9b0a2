"""Concepts on a model trained in the test, where one fact carries the decision.

The tiny Llama learns: if "key" is in the prompt, answer "open door", else "take knife".
The class-mean direction of "key is present" at a middle layer therefore carries the
decision: TCAV must find it and random directions of the same norm must not, steering
along it must move the choice monotonically, and the random direction must not.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers.choice import prepare_choice
from explainers.concepts.directions import (
    ConceptDirection,
    actadd_direction,
    bootstrap_directions,
    caa_direction,
    concept_direction,
    random_like,
    random_vectors,
)
from explainers.concepts.rsa import rsa, state_matrix
from explainers.concepts.steering import added, check_alphas, dose_response, steered
from explainers.concepts.tcav import decision_gradient, decision_gradients, tcav_test
from explainers.probing.features import extract_features
from explainers.probing.probes import ProbeExample
from tests.explainers.conftest import CANDIDATES, LAYER
from workbench.errors import WorkbenchError


def _features(lm, prompts, layers):
    feats, _ = extract_features(lm, [ProbeExample(p, "", -1) for p in prompts], layers)
    return feats


def _direction(lm, prompts, labels, source="means") -> ConceptDirection:
    feats = _features(lm, prompts, [LAYER])[:, 0]
    return concept_direction(
        feats, labels, concept="key", layer=LAYER, model=lm.name, source=source
    )


def test_the_planted_model_decides_by_the_key(planted):
    lm, prompts, labels = planted
    chosen = [prepare_choice(lm, p, CANDIDATES).chosen for p in prompts[:20]]
    assert chosen == [0 if y else 1 for y in labels[:20]]


def test_tcav_finds_the_planted_direction_and_random_directions_do_not(planted):
    lm, prompts, labels = planted
    layers = [LAYER, 2]
    feats = _features(lm, prompts, layers)
    vectors = np.stack(
        [bootstrap_directions(feats[:, k], labels, "means", 10, seed=1) for k in range(2)], 1
    )
    norms = np.linalg.norm(vectors[0], axis=-1)
    randoms = random_vectors(vectors.shape[1:], norms, 26, seed=2)
    decisions = [prepare_choice(lm, p, CANDIDATES, "open door") for p in prompts[:16]]
    grads = decision_gradients(decisions, layers)
    result = tcav_test(grads, layers, vectors, randoms)
    for layer in result:
        assert layer.score > 0.9  # "key" raises the choice of "open door" in nearly every decision
        assert layer.significant
        assert 0.05 < layer.random_mean < 0.95
    # Random directions posing as the concept are not significant against the others.
    fake = tcav_test(grads, layers, randoms[:5], randoms[5:])
    assert not any(r.significant for r in fake)


def test_tcav_sensitivity_is_the_slope_of_steering(planted):
    lm, prompts, labels = planted
    direction = _direction(lm, prompts, labels)
    obj = prepare_choice(lm, prompts[0], CANDIDATES, "open door")
    grad = decision_gradient(obj, [LAYER], positions="last")[0]
    eps = 1e-3
    curve = dose_response(obj, [direction], [-eps, eps], positions="last")
    logp = np.log(curve.of()[0])
    slope = (logp[1] - logp[0]) / (2 * eps)
    assert slope == pytest.approx(float(grad @ direction.vector), rel=2e-2, abs=1e-4)


def test_steering_moves_the_choice_monotonically_and_random_does_not(planted):
    lm, prompts, labels = planted
    direction = _direction(lm, prompts, labels)
    (control,) = random_like(direction, 1, seed=3)
    assert control.norm == pytest.approx(direction.norm, rel=1e-5)
    negative = next(p for p, y in zip(prompts, labels) if not y)
    obj = prepare_choice(lm, negative, CANDIDATES, "take knife")
    alphas = [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    curve = dose_response(obj, [direction, control], alphas, positions="all")
    p_open = curve.of("open door")
    assert np.all(np.diff(p_open[0]) > 0)  # more "key", more "open door"
    assert p_open[0, -1] - p_open[0, 2] > 0.5
    random_move = np.abs(p_open[1] - p_open[1, 2]).max()
    assert random_move < 0.25 * (p_open[0].max() - p_open[0].min())


def test_steered_adds_at_every_position_and_removes_its_hook(planted):
    lm, prompts, labels = planted
    direction = _direction(lm, prompts, labels)
    ids = torch.tensor([lm.tokenizer(prompts[0])["input_ids"]])
    with torch.no_grad():
        before = lm.model(input_ids=ids).logits
        with steered(lm, direction, 1.0):
            during = lm.model(input_ids=ids).logits
        after = lm.model(input_ids=ids).logits
    assert not torch.allclose(before, during)
    assert torch.equal(before, after)


def test_caa_and_actadd_match_a_hand_computed_reference(planted):
    lm, prompts, _ = planted
    from workbench.anatomy import residuals

    pairs = [("the milk is key", "the milk is box"), ("red apple key", "red apple table")]
    caa = caa_direction(lm, pairs, LAYER)
    by_hand = []
    for pos, neg in pairs:
        states = [
            residuals(lm, [LAYER], input_ids=torch.tensor([lm.tokenizer(t)["input_ids"]]))[LAYER]
            for t in (pos, neg)
        ]
        by_hand.append((states[0][0, -1] - states[1][0, -1]).numpy())
    np.testing.assert_allclose(caa.vector, np.mean(by_hand, 0), rtol=1e-4, atol=1e-5)

    act = actadd_direction(lm, "key door", "box", LAYER)
    space = lm.tokenizer(" ", add_special_tokens=False)["input_ids"] or [0]
    a = lm.tokenizer("key door")["input_ids"]
    b = lm.tokenizer("box")["input_ids"] + space[-1:] * (len(a) - 1)
    sa = residuals(lm, [LAYER], input_ids=torch.tensor([a]))[LAYER][0]
    sb = residuals(lm, [LAYER], input_ids=torch.tensor([b]))[LAYER][0]
    np.testing.assert_allclose(act.vector, (sa - sb).numpy(), rtol=1e-4, atol=1e-5)
    # ActAdd goes at the prompt's front: one step of alpha changes the first positions only.
    obj = prepare_choice(lm, prompts[0], CANDIDATES)
    curve = dose_response(obj, [act], [0.0, 4.0], positions="front")
    assert curve.probs.shape == (1, 2, 2)
    with pytest.raises(WorkbenchError, match="front"):
        dose_response(obj, [act], [1.0], positions="all")


def test_directions_save_load_and_refuse_another_width(planted, tmp_path, tiny_causal):
    lm, prompts, labels = planted
    direction = _direction(lm, prompts, labels, source="probe")
    path = direction.save(tmp_path / "key.npz")
    loaded = ConceptDirection.load(path)
    np.testing.assert_array_equal(loaded.vector, direction.vector)
    assert loaded.to_dict() == direction.to_dict()
    loaded.vector = np.zeros(7, np.float32)
    with pytest.raises(WorkbenchError, match="width 7"):
        loaded.check_model(lm)
    with pytest.raises(WorkbenchError, match="layer 9"):
        ConceptDirection("x", 9, np.zeros(32, np.float32), "means", "m").check_model(lm, 4)


def test_bad_concepts_and_alphas_get_one_line(planted):
    lm, prompts, labels = planted
    feats = _features(lm, prompts[:8], [LAYER])[:, 0]
    with pytest.raises(WorkbenchError, match="at least 5 of each"):
        concept_direction(feats, [True] * 2 + [False] * 6, concept="k", layer=1, model="m")
    with pytest.raises(WorkbenchError, match="not a number"):
        check_alphas(["1", "x"])
    with pytest.raises(WorkbenchError, match="finite"):
        check_alphas(["nan"])
    with pytest.raises(WorkbenchError, match="out of range"):
        with added(lm, {99: torch.zeros(32)}):
            pass


def test_rsa_is_one_for_the_state_itself_and_chance_when_shuffled():
    rng = np.random.default_rng(0)
    names = [f"f{k}" for k in range(12)]
    facts = [[n for n in names if rng.random() < 0.4] for _ in range(40)]
    facts += facts[:10]  # repeated states, for the noise ceiling
    x = state_matrix(facts).astype(np.float32)
    features = np.stack([x, x[rng.permutation(len(x))]], 1)
    result = rsa(features, facts, [0, 1], metric="jaccard", permutations=200, seed=0)
    same, shuffled = result.layers
    assert same.rho == pytest.approx(1.0)
    assert same.p_value <= 1 / 201 + 1e-12
    assert same.ceiling == pytest.approx(1.0)
    assert abs(shuffled.rho) < 0.15
    assert shuffled.p_value > 0.05
    assert result.n_repeated == 10


def test_rsa_refuses_mismatched_or_constant_input():
    with pytest.raises(WorkbenchError, match="do not match"):
        rsa(np.zeros((5, 2, 3)), [["a"]] * 4, [0, 1])
    with pytest.raises(WorkbenchError, match="same facts"):
        rsa(np.zeros((5, 1, 3)), [["a"]] * 5, [0])


def test_the_registered_tcav_method_sums_to_the_prompt_sensitivity(planted, tmp_path):
    from explainers import explain

    lm, prompts, labels = planted
    path = _direction(lm, prompts, labels).save(tmp_path / "key.npz")
    exp = explain(
        lm, prompts[1], "tcav", target="open door", candidates=CANDIDATES, direction=str(path)
    )
    obj = prepare_choice(lm, prompts[1], CANDIDATES, "open door")
    grad = decision_gradient(obj, [LAYER], positions="prompt")[0]
    vector = ConceptDirection.load(path).vector
    assert exp.scores.shape == (1, obj.prompt_ids.numel())
    assert exp.scores.sum() == pytest.approx(float(grad @ vector), rel=1e-4, abs=1e-6)
    assert exp.extras["layer"] == LAYER and exp.extras["concept"] == "key"
    with pytest.raises(WorkbenchError, match="direction is required"):
        explain(lm, prompts[1], "tcav")
