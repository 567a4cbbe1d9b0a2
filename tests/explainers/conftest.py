"""Fixtures for the attribution-family tests: a model with a known answer, and one CPU thread.

The test machines are shared: with several torch threads per process, tiny-model forwards
fight over cores and run ~50x slower than with one thread, so these tests use one.
"""

from __future__ import annotations

import pytest
import torch

from tests.explainers.test_ig import FILLERS, OBJECTS, train_copy_model


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
