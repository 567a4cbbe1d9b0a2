"""Concepts on CUDA at the precision `--dtype auto` picks, against float32 on the CPU, on the
real default model ($WORKBENCH_TEST_MODEL: its .gguf or folder).

The decisions are kitchen prompts where the knife is carried or not; the concept is "the
knife is carried" (class means at each layer, read on the CPU in float32 and used on both
devices). TCAV's sensitivities, steering's choice distributions and RSA's rho must agree
within the thresholds used for the other methods (r >= 0.99, the same choices)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.concepts import state_features
from explainers.choice import prepare_choice
from explainers.concepts.directions import ConceptDirection, mean_difference, random_like
from explainers.concepts.rsa import rsa
from explainers.concepts.steering import dose_response
from explainers.concepts.tcav import decision_gradient

pytestmark = pytest.mark.gpu

ROOMS = ["kitchen", "pantry", "backyard", "living room"]
THINGS = ["a carrot", "a red apple", "a yellow potato", "some salt"]
LAYERS = [4, 10, 16, 22, 28]


def kitchen(room: str, thing: str, carried: bool) -> tuple[str, list[str], list[str]]:
    """(prompt, candidates, true facts) of one state."""
    inventory = "You are carrying a knife." if carried else "You are carrying nothing."
    where = "" if carried else " On the table you see a knife."
    text = (
        f"You are in the {room}. The fridge contains {thing}.{where} {inventory}\n"
        "What do you do next? Answer with one command."
    )
    commands = ["open fridge", "examine cookbook", "go east"]
    commands += ["drop knife"] if carried else ["take knife from table"]
    facts = [f"at(P, {room})", f"in({thing.split(' ', 1)[1]}, fridge)"]
    facts += ["in(knife, I)"] if carried else ["on(knife, table)"]
    return text, commands, facts


STATES = [kitchen(r, t, c) for r in ROOMS for t in THINGS for c in (True, False)]


@pytest.fixture(scope="module")
def models(real_models):
    _, cpu, gpu = real_models
    return cpu, gpu


def chat(lm, text: str) -> str:
    return lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )


def test_concepts_at_auto_precision_agree_with_cpu_float32(models):
    cpu, gpu = models
    texts = [chat(cpu, s[0]) for s in STATES]
    carried = np.array(["in(knife, I)" in s[2] for s in STATES])
    on_cpu = state_features(cpu, texts, LAYERS)
    on_gpu = state_features(gpu, texts, LAYERS)

    # RSA: the same rho per layer.
    facts = [s[2] for s in STATES]
    a = rsa(on_cpu, facts, LAYERS, permutations=200)
    b = rsa(on_gpu, facts, LAYERS, permutations=200)
    for x, y in zip(a.layers, b.layers):
        assert abs(x.rho - y.rho) <= 0.02, (x.layer, x.rho, y.rho)

    # TCAV: the sensitivities of "take knife from table" along the concept and random
    # directions, on both devices.
    layer = LAYERS[2]
    k = LAYERS.index(layer)
    concept = ConceptDirection(
        "in(knife, I)", layer, mean_difference(on_cpu[:, k], carried), "means", cpu.name
    )
    directions = [concept, *random_like(concept, 5, seed=0)]
    vectors = np.stack([d.vector for d in directions])
    sens = {}
    for name, lm in (("cpu", cpu), ("gpu", gpu)):
        grads = [
            decision_gradient(prepare_choice(lm, chat(lm, t), c, c[-1]), [layer])[0]
            for t, c, f in STATES
            if "in(knife, I)" not in f
        ]
        sens[name] = np.stack(grads) @ vectors.T  # [decisions, directions]
    r = np.corrcoef(sens["cpu"].ravel(), sens["gpu"].ravel())[0, 1]
    assert r >= 0.99, r
    assert ((sens["cpu"] > 0) == (sens["gpu"] > 0)).mean() >= 0.95

    # Steering: the same choice distributions along the concept and a random direction.
    text, commands, _ = STATES[1]  # the knife not carried
    alphas = [-2.0, -1.0, 0.0, 1.0, 2.0]
    curves = [
        dose_response(prepare_choice(lm, chat(lm, text), commands), directions[:2], alphas)
        for lm in (cpu, gpu)
    ]
    np.testing.assert_allclose(curves[1].probs, curves[0].probs, atol=0.03)
    assert (curves[1].probs.argmax(-1) == curves[0].probs.argmax(-1)).all()
