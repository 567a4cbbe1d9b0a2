"""GPU tests: skipped without CUDA; the multi-GPU ones need two GPUs.

Every test here carries the `gpu` marker (`pytest -m gpu`). Models are built in the test
(random-initialised or trained for a few seconds), so nothing is fetched on the GPU machine.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.gpu)
            # WORKBENCH_GPU_TEST_DEVICE=cpu: a dry run of the single-device tests' logic.
            dry = os.environ.get("WORKBENCH_GPU_TEST_DEVICE") == "cpu"
            if not torch.cuda.is_available() and not dry:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))


@pytest.fixture(scope="session")
def level1_games(tmp_path_factory) -> list:
    """Two level-1 games: from $WORKBENCH_TEST_GAMES (a compiled game-set folder, so that
    the GPU machine need not compile), else the tests' own, compiled here."""
    import games

    given = os.environ.get("WORKBENCH_TEST_GAMES")
    if given:
        return games.list_games(Path(given))[:2]
    from tests.games.compiled import compiled

    return compiled(tmp_path_factory.getbasetemp(), 1, 2)


@pytest.fixture(scope="session")
def real_models():
    """(path, the default model in float32 on the CPU, and on CUDA at `--dtype auto`): the
    real weights, from $WORKBENCH_TEST_MODEL (its .gguf or folder)."""
    path = os.environ.get("WORKBENCH_TEST_MODEL")
    if not path:
        pytest.skip("set WORKBENCH_TEST_MODEL to the default model (.gguf or folder)")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    from workbench.models import load_model

    cpu = load_model(path, device="cpu", dtype="float32")
    return path, cpu, load_model(path, device="cuda", dtype="auto")


@pytest.fixture(scope="session")
def two_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")


def on_gpu(lm, dtype=torch.bfloat16, device: str = "cuda:0"):
    """A copy of a CPU LoadedModel on the GPU in `dtype`."""
    from workbench.models import from_pretrained_objects

    model = copy.deepcopy(lm.model).to(device=device, dtype=dtype)
    return from_pretrained_objects(model, lm.tokenizer, name=lm.name)


@pytest.fixture(scope="session")
def copy_lm(tokenizer):
    """test_ig's copy model (a 2-layer Llama that repeats the one object word after Q),
    trained on the CPU in float32: a model with a known answer, so that bf16 noise is small
    next to the signal the methods attribute."""
    from tests.explainers.test_ig import train_copy_model
    from workbench.models import from_pretrained_objects

    torch.manual_seed(0)
    model, accuracy = train_copy_model(tokenizer)
    assert accuracy > 0.9
    return from_pretrained_objects(model, tokenizer, name="copy-model")


@pytest.fixture(scope="session")
def copy_lm_dir(tmp_path_factory, copy_lm) -> Path:
    path = tmp_path_factory.mktemp("models") / "copy-model"
    copy_lm.model.save_pretrained(path)
    copy_lm.tokenizer.save_pretrained(path)
    return path
