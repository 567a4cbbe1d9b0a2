"""Fine-tuning on CUDA: `--precision auto` trains under bf16 autocast with float32 LoRA
weights, the loss falls as on the CPU, and the adapter trained on the GPU loads on the GPU
and on the CPU and moves the agent's choices towards the expert's on both.

Model: test_finetune's tiny game Llama (a word-level vocabulary over the level-1 games'
words), random-initialised and saved in the test; games: $WORKBENCH_TEST_GAMES or compiled.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch

from agents.finetune import demonstrations, finetune, imitation_accuracy
from agents.finetune.training import autocast_dtype
from tests.agents.test_finetune import (
    TINY,
    build_game_llama,
    encoded_extremes,
    padding_changes_nothing,
)
from workbench.llm.local import LocalLLM
from workbench.models import load_model

DEVICE = os.environ.get("WORKBENCH_GPU_TEST_DEVICE", "cuda")


@pytest.fixture(scope="module")
def demos(level1_games):
    return demonstrations(level1_games, workers=0)


@pytest.fixture(scope="module")
def model_dir(demos, tmp_path_factory):
    return build_game_llama(demos, tmp_path_factory.mktemp("models") / "tiny-game-llama")


def test_finetune_on_cuda_autocasts_to_bf16_and_moves_the_choices(
    model_dir, level1_games, demos, tmp_path
):
    from safetensors.torch import load_file

    lm = load_model(str(model_dir), device=DEVICE, dtype="float32")
    result = finetune(lm, level1_games, tmp_path / "adapter", replace(TINY, precision="auto"))
    manifest = result.manifest
    assert manifest["device"].startswith(DEVICE)
    wanted = autocast_dtype("auto", lm.device)
    assert manifest["autocast"] == (str(wanted).removeprefix("torch.") if wanted else None)
    if DEVICE == "cuda":
        assert manifest["autocast"] == "bfloat16"
    history = manifest["history"]
    assert history[-1]["train_loss"] < 0.5 * history[1]["train_loss"]
    assert result.heldout_loss < manifest["loss"]["heldout_before"]
    # Mixed precision: the trained weights (and AdamW's state) stayed float32.
    weights = load_file(str(result.out / "adapter_model.safetensors"))
    assert weights and {w.dtype for w in weights.values()} == {torch.float32}
    assert all(torch.isfinite(w).all() for w in weights.values())
    # Training gave the base model back: no LoRA layers, nothing trainable added.
    assert not any("lora" in n for n, _ in lm.model.named_parameters())

    trained = [d for d in demos if d.game in manifest["train_games"]]
    base = imitation_accuracy(LocalLLM(lm), trained)
    for device, dtype in ((DEVICE, "bfloat16"), ("cpu", "float32")):
        tuned = load_model(str(model_dir), device=device, dtype=dtype, adapter=result.out)
        now = imitation_accuracy(LocalLLM(tuned), trained)
        # The expert's command gains on the best other command, on the whole, wherever the
        # GPU-trained adapter is loaded.
        assert sum(c.margin for c in now.choices) > sum(c.margin for c in base.choices) + len(
            trained
        ), device
        assert now.accuracy >= base.accuracy


def test_padded_batches_train_on_cuda_as_their_rows_alone(model_dir, demos):
    lm = load_model(str(model_dir), device=DEVICE, dtype="float32")
    padding_changes_nothing(lm, encoded_extremes(lm, demos))


def test_padded_batches_of_smollm2s_attention_shape_have_finite_gradients():
    """The batch that broke fine-tuning SmolLM2-135M's shape on an H200 (torch 2.11): rows
    of 439-448 tokens trained finitely alone but gave NaN gradients together while they
    were left-padded. Four blocks of SmolLM2's attention shape (9 heads, 3 key-value heads,
    head size 64), bf16 weights, the last two adapted, random weights and token ids."""
    from transformers import LlamaForCausalLM

    from agents.finetune.training import _Example
    from tests.conftest import WORDS, tiny_llama_config, tiny_tokenizer
    from workbench.models import from_pretrained_objects

    tokenizer = tiny_tokenizer([*WORDS, *(f"w{i}" for i in range(400))])
    config = tiny_llama_config(
        len(tokenizer),
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        num_hidden_layers=4,
        max_position_embeddings=1024,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(DEVICE, torch.bfloat16)
    lm = from_pretrained_objects(model, tokenizer, name="smollm2-attention-shape")
    ids = torch.Generator().manual_seed(1)
    rows = [
        _Example(torch.randint(3, len(tokenizer), (n,), generator=ids).tolist(), answer)
        for n, answer in ((439, 3), (443, 3), (444, 2), (448, 7))
    ]
    settings = replace(TINY, target_modules="all-linear", top_layers=2, precision="auto")
    padding_changes_nothing(lm, rows, settings)
