"""Shared fixtures: tiny models built from a config (seconds, no hub) and a temporary store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = (
    "the milk is in fridge to get open a an apple on table take from kitchen door red blue "
    "green key box cut cook eat knife oven M Q <script>"
).split()


def tiny_tokenizer(words: tuple[str, ...] | list[str] = tuple(WORDS)):
    """A whole-word tokenizer over `words` plus <pad>, <eos> and <unk>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def tiny_llama_config(vocab_size: int, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """streamlit's AppTest runs a page as `__main__` and leaves it in sys.modules; a later
    test that spawns a process (the games' batched environment) would then re-run that page
    in the child, which fails. Each test gets the `__main__` it started with back."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_causal(tokenizer):
    """A randomly initialised 2-layer Llama, wrapped as a LoadedModel (float32, CPU)."""
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer)))
    return from_pretrained_objects(model, tokenizer, name="tiny-llama")


@pytest.fixture(scope="session")
def tiny_classifier(tokenizer):
    from transformers import LlamaForSequenceClassification

    from workbench.models import from_pretrained_objects

    torch.manual_seed(1)
    config = tiny_llama_config(
        len(tokenizer),
        num_labels=3,
        id2label={0: "neg", 1: "neu", 2: "pos"},
        label2id={"neg": 0, "neu": 1, "pos": 2},
    )
    model = LlamaForSequenceClassification(config)
    return from_pretrained_objects(model, tokenizer, name="tiny-classifier")


@pytest.fixture(scope="session")
def tiny_gpt2(tokenizer):
    """A randomly initialised 2-layer GPT-2 (fused query/key/value, Conv1D projections)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.models import from_pretrained_objects

    torch.manual_seed(2)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=64,
        bos_token_id=1,
        eos_token_id=1,
    )
    return from_pretrained_objects(GPT2LMHeadModel(config), tokenizer, name="tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_bert(tokenizer):
    """A randomly initialised 2-layer BERT classifier (post-LN, no final norm)."""
    from transformers import BertConfig, BertForSequenceClassification

    from workbench.models import from_pretrained_objects

    torch.manual_seed(3)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=2,
        pad_token_id=0,
    )
    return from_pretrained_objects(BertForSequenceClassification(config), tokenizer, "tiny-bert")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_causal) -> Path:
    """The tiny causal LM saved as a local model directory (for --model DIR)."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny_causal.model.save_pretrained(path)
    tiny_causal.tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_classifier) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny-classifier"
    tiny_classifier.model.save_pretrained(path)
    tiny_classifier.tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def store(tmp_path):
    from workbench.store import Store

    return Store(tmp_path / "test.duckdb")
