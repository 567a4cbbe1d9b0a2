"""The random-initialised Llama shapes the benchmarks run on.

Speed does not depend on the weights, and no weights can travel to the GPU machines, so
every benchmark builds its model from one of these shapes with seeded random weights.
"""

from __future__ import annotations

from typing import Any

import torch

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate
    "tiny": (64, 2, 4, 4, 128),  # CPU smoke runs of the scripts
    "smollm": (576, 30, 9, 3, 1536),  # SmolLM2-135M
    "1b": (2048, 16, 32, 8, 8192),  # Llama-3.2-1B
    "1.1b": (2048, 22, 32, 4, 5632),  # TinyLlama-1.1B
    "34b": (8192, 48, 64, 8, 22016),  # CodeLlama-34B (the split-model benchmark's width)
}


def llama_config(shape: str, vocab_size: int, **overrides: Any):
    from transformers import LlamaConfig

    hidden, layers, heads, kv, inter = SHAPES[shape]
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=inter,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def random_llama(
    shape: str, vocab_size: int, device: str, dtype: torch.dtype, **overrides: Any
) -> torch.nn.Module:
    """A Llama of `shape` with seeded random weights, built directly on `device`."""
    from transformers import LlamaForCausalLM

    config = llama_config(shape, vocab_size, **overrides)
    torch.manual_seed(0)
    with torch.device(device):
        return LlamaForCausalLM(config).to(dtype)
