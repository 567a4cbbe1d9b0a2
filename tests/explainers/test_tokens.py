"""Tokens a person can read: byte-level pieces shown as the characters they form."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.tokens import display_tokens, merge_pieces, token_labels
from workbench.settings import cache_dir

TEXTS = [
    "the milk is in the fridge",
    "I love pizza so much",
    "the fridge is cold and the milk is cold",
]
EMOJI = "the milk 😀 is cold 👍🏽 café e\u0301 日本 👩\u200d👩\u200d👧!"


@pytest.fixture(scope="module")
def byte_bpe():
    """A byte-level BPE trained here on a few sentences without emoji, so that every
    emoji and accented letter of EMOJI is split into byte pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


def test_byte_pieces_are_shown_as_the_characters_they_form(byte_bpe):
    ids = byte_bpe(EMOJI)["input_ids"]
    assert "\ufffd" in "".join(byte_bpe.decode([i]) for i in ids)  # what a reader saw before
    labels, groups = display_tokens(byte_bpe, ids)
    assert "".join(labels) == EMOJI and "\ufffd" not in "".join(labels)
    assert [p for g in groups for p in g] == list(range(len(ids)))
    # Emoji, a skin tone, a ZWJ family and a combining accent each are one cell.
    cells = [label.strip() for label in labels]
    for char in ("😀", "👍🏽", "👩\u200d👩\u200d👧", "e\u0301", "é", "日"):
        assert char in cells, (char, labels)
    assert max(len(g) for g in groups) > 4  # the family spans many tokens


def test_per_token_labels_join_to_the_text_and_merge_with_summed_scores(byte_bpe):
    ids = byte_bpe("pizza 😀 so")["input_ids"]
    labels, pieces = token_labels(byte_bpe, ids)
    assert len(labels) == len(ids) and "".join(labels) == "pizza 😀 so"
    assert len(pieces) == 1
    first, end = pieces[0]
    assert labels[first].strip() == "😀" and labels[first + 1 : end] == [""] * (end - first - 1)
    scores = np.arange(2 * len(ids), dtype=float).reshape(2, len(ids))
    merged, summed = merge_pieces(labels, scores, pieces)
    assert merged == [t for t in labels if t]
    column = merged.index(labels[first])
    assert summed[:, column].tolist() == scores[:, first:end].sum(axis=1).tolist()
    assert summed.sum() == scores.sum()


def test_a_piece_that_never_completes_keeps_its_replacement_character(byte_bpe):
    ids = byte_bpe("the 😀")["input_ids"][:-1]  # the emoji's last byte cut off
    labels, groups = display_tokens(byte_bpe, ids)
    assert "".join(labels).startswith("the") and labels[-1].endswith("\ufffd")
    assert [p for g in groups for p in g] == list(range(len(ids)))


@pytest.mark.slow
def test_the_default_models_tokenizer_shows_emoji():
    directory = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if not (directory / "tokenizer.json").exists():
        pytest.skip("the default model is not cached")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(directory)
    text = "I love pizza 🍕 and 日本語 👩\u200d👩\u200d👧"
    labels, groups = display_tokens(tok, tok(text)["input_ids"])
    assert "".join(labels) == text
    assert " 🍕" in labels and "語" in labels and " 👩\u200d👩\u200d👧" in labels


@pytest.fixture(scope="module")
def byte_model(byte_bpe):
    """A randomly initialised 2-layer Llama that reads the byte-level BPE above."""
    import torch
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_llama_config
    from workbench.models import from_pretrained_objects

    torch.manual_seed(0)
    config = tiny_llama_config(len(byte_bpe), pad_token_id=0, eos_token_id=0, bos_token_id=0)
    return from_pretrained_objects(LlamaForCausalLM(config), byte_bpe, name="tiny-bytes")


def test_explanations_show_emoji_in_the_terminal_table_html_and_words(byte_model):
    from rich.console import Console

    from explainers import explain

    text = "the milk 😀 is cold"
    exp = explain(byte_model, text, method="occlusion", target=" cold")
    assert "".join(exp.input_tokens) == text and len(exp.input_tokens) > 5  # token columns
    [[first, end]] = exp.extras["character_pieces"]
    assert exp.input_tokens[first].strip() == "😀"
    console = Console(record=True, width=100)  # not a terminal: a plain table
    exp.show(console=console)
    table = console.export_text()
    row = next(line for line in table.splitlines() if "😀" in line)
    assert float(row.split()[-1]) == pytest.approx(exp.scores[0, first:end].sum(), abs=1e-4)
    assert "\ufffd" not in table and table.count("\n") < 20
    assert "😀" in exp.to_html() and "\ufffd" not in exp.to_html()
    words = explain(byte_model, text, method="occlusion", target=" cold", aggregate="word")
    assert words.input_tokens == ["the", " milk", " 😀", " is", " cold"]
