"""Fixtures for the explainer tests: models with a known answer, and one CPU thread.

The test machines are shared: with several torch threads per process, tiny-model forwards
fight over cores and run ~50x slower than with one thread, so these tests use one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_llama_config
from tests.explainers.test_ig import FILLERS, OBJECTS, train_copy_model

# The planted "key" model (the concepts and SAE tests): "key" in the prompt decides.
KEY_FILLER = "the milk is in fridge apple on table kitchen red blue green box".split()
CANDIDATES = ["open door", "take knife"]
LAYER = 1  # the resid layer where its directions and features are read


@pytest.fixture(scope="session")
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained_copy_model(tokenizer, single_thread):
    """test_ig's copy model: repeats after Q the one object word among filler words."""
    from workbench.models import from_pretrained_objects

    model, accuracy = train_copy_model(tokenizer)
    assert accuracy > 0.9, f"copy model only reached {accuracy:.2f}"
    return from_pretrained_objects(model, tokenizer, name="copy-model")


def copy_inputs(n: int, seed: int = 123) -> list[tuple[str, str]]:
    """n inputs (text, answer) for the copy model: 8 fillers, one replaced by an object, then Q."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        words = [FILLERS[i] for i in torch.randint(len(FILLERS), (8,), generator=gen)]
        answer = OBJECTS[int(torch.randint(len(OBJECTS), (1,), generator=gen))]
        words[int(torch.randint(8, (1,), generator=gen))] = answer
        out.append((" ".join(words + ["Q"]), answer))
    return out


def key_prompt(rng: np.random.Generator, with_key: bool) -> str:
    words = list(rng.choice(KEY_FILLER, 6))
    if with_key:
        words[int(rng.integers(0, 6))] = "key"
    return " ".join(words)


@pytest.fixture(scope="session")
def planted(tokenizer):
    """(lm, prompts, labels): a tiny Llama trained so that "key" in the prompt decides the
    command: "open door" with it, "take knife" without."""
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), num_hidden_layers=3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        labels = rng.random(32) < 0.5
        texts = [f"{key_prompt(rng, y)} {CANDIDATES[0 if y else 1]}" for y in labels]
        ids = torch.tensor([tokenizer(t)["input_ids"] for t in texts])
        logits = model(input_ids=ids).logits[:, -3:-1]  # predicts the two command words
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), ids[:, -2:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    lm = from_pretrained_objects(model, tokenizer, name="planted-llama")
    labels = [bool(y) for y in rng.random(60) < 0.5]
    prompts = [key_prompt(rng, y) for y in labels]
    return lm, prompts, labels
