"""The model anatomy: hook names and layer numbering on Llama, GPT-2 and BERT, the one
residual reader against the models' own outputs, interventions against the sum done by
hand, an architecture described once, and the prompt-prefix cache against full forwards."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from explainers import explain
from tests.conftest import tiny_llama_config
from workbench.anatomy import (
    ARCHITECTURES,
    LLAMA,
    Hooks,
    capture,
    model_anatomy,
    register_architecture,
    residuals,
)
from workbench.errors import WorkbenchError
from workbench.models import from_pretrained_objects
from workbench.prefix_cache import cache_argument, compute_prefix, verdict

IDS = torch.tensor([[3, 4, 5, 6, 7, 8, 9]])
CLEAN = "the milk is in the fridge"
CORRUPT = "the apple is in the fridge"


# -- names and numbering --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_gpt2", "tiny_bert"])
def test_hook_names_and_layer_numbering(request, model):
    lm = request.getfixturevalue(model)
    anatomy = model_anatomy(lm)
    assert anatomy is model_anatomy(lm)  # found once per model
    assert anatomy.n_layers == 2 and anatomy.layers("resid") == [0, 1, 2]
    assert anatomy.names("resid") == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_post",
    ]
    assert anatomy.names("mlp") == ["blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    assert anatomy.head_dim == 8 and anatomy.point("blocks.1.attn.hook_z").groups == 4
    assert anatomy.check_layers("resid", [-1, 0, 0]) == [0, 2]
    with pytest.raises(WorkbenchError, match="layer 3 is out of range: resid has layers 0 .. 2"):
        anatomy.check_layers("resid", [3])
    with pytest.raises(WorkbenchError, match="unknown hook name 'blocks.0.hook_x'"):
        anatomy.point("blocks.0.hook_x")
    with pytest.raises(WorkbenchError, match="the model has 2 blocks"):
        anatomy.point("blocks.2.hook_resid_pre")


def test_each_architecture_names_its_own_modules(tiny_causal, tiny_gpt2, tiny_bert):
    llama, gpt2, bert = (model_anatomy(lm) for lm in (tiny_causal, tiny_gpt2, tiny_bert))
    block = tiny_causal.model.model.layers[1]
    assert llama.point("blocks.1.attn_out").module is block.self_attn.o_proj  # an alias
    assert llama.point("blocks.1.hook_mlp_out").module is block.mlp
    assert llama.point("blocks.1.attn.hook_v").module is block.self_attn.v_proj
    assert (
        gpt2.point("blocks.0.hook_attn_out").module is tiny_gpt2.model.transformer.h[0].attn.c_proj
    )
    assert bert.point("blocks.0.hook_mlp_out").module is (
        tiny_bert.model.bert.encoder.layer[0].output.dense
    )
    assert bert.final_norm is None and bert.unembed is None  # post-LN; a classifier
    # GPT-2 computes queries, keys and values in one fused projection.
    with pytest.raises(WorkbenchError, match="cannot find a separate value projection"):
        gpt2.point("blocks.0.attn.hook_v")


# -- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_gpt2"])
def test_the_residual_stream_ends_in_the_models_logits(request, model):
    lm = request.getfixturevalue(model)
    anatomy = model_anatomy(lm)
    states = residuals(lm, input_ids=IDS)
    with torch.no_grad():
        out = lm.model(IDS, output_hidden_states=True)
        # Layer L through the final norm and unembedding is the model's own output...
        lens = anatomy.unembed(anatomy.final_norm(states[2]))
    torch.testing.assert_close(lens, out.logits, rtol=0, atol=1e-6)
    # ...and layers before it are Hugging Face's hidden states (whose last has the norm).
    for layer in (0, 1):
        torch.testing.assert_close(states[layer], out.hidden_states[layer], rtol=0, atol=0)


def test_capture_stops_after_the_deepest_block_it_needs(tiny_causal):
    ran = []
    last = model_anatomy(tiny_causal).blocks[1]
    handle = last.register_forward_hook(lambda *_: ran.append(1))
    try:
        acts = capture(
            tiny_causal, ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_pre"], input_ids=IDS
        )
    finally:
        handle.remove()
    assert not ran  # block 1 never ran
    assert acts.activations["blocks.1.hook_resid_pre"].shape == (1, 7, 32)
    assert acts.logits is None
    # Asked for logits, the whole model runs: the same activations, and its last rows.
    names = list(acts.activations)
    full = capture(tiny_causal, names, inputs_embeds=tiny_causal.embeddings(IDS), logits=2)
    for name in names:
        torch.testing.assert_close(full.activations[name], acts.activations[name])
    with torch.no_grad():
        torch.testing.assert_close(full.logits, tiny_causal.model(IDS).logits[:, -2:])


# -- writing --------------------------------------------------------------------------------


def test_replacing_an_activation_changes_the_output_as_computed_by_hand(tiny_causal):
    anatomy = model_anatomy(tiny_causal)
    read = capture(
        tiny_causal, ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out"], input_ids=IDS
    )
    stream, attn = (
        read.activations[n] for n in ("blocks.1.hook_resid_pre", "blocks.1.hook_attn_out")
    )
    with Hooks() as hooks, torch.no_grad():
        hooks.add(anatomy.point("blocks.1.hook_mlp_out"), torch.zeros_like)
        patched = tiny_causal.model(IDS).logits
        # Without the last MLP, the stream leaving the model is what entered its last block
        # plus what that block's attention added.
        by_hand = anatomy.unembed(anatomy.final_norm(stream + attn))
    torch.testing.assert_close(patched, by_hand, rtol=0, atol=1e-5)
    with torch.no_grad():  # the hooks are gone
        assert not torch.allclose(tiny_causal.model(IDS).logits, patched)


# -- an architecture described once ---------------------------------------------------------


@pytest.fixture(scope="module")
def stacked(tiny_causal, tokenizer):
    """The tiny Llama's weights in a model whose block list is a child called `stack`, a
    name discovery does not know, and its plain twin."""
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel

    class StackedConfig(LlamaConfig):
        model_type = "stacked-llama"

    class StackedModel(LlamaModel):
        def __init__(self, config):
            super().__init__(config)
            self.stack = self._modules.pop("layers")

        @property
        def layers(self):  # what LlamaModel.forward iterates
            return self.stack

    class StackedLlama(LlamaForCausalLM):
        def __init__(self, config):
            super().__init__(config)
            self.model = StackedModel(config)

    settings = tiny_llama_config(len(tokenizer)).to_dict()
    del settings["model_type"]  # the class's own: "stacked-llama"
    config = StackedConfig(**settings)
    assert config.model_type == "stacked-llama"
    model = StackedLlama(config)
    weights = {
        k.replace(".layers.", ".stack."): v for k, v in tiny_causal.model.state_dict().items()
    }
    model.load_state_dict(weights)
    return from_pretrained_objects(model, tokenizer, name="stacked")


def test_a_new_architecture_is_described_once(stacked, tiny_causal):
    with pytest.raises(WorkbenchError, match=r"register_architecture\('stacked-llama'"):
        model_anatomy(stacked)
    register_architecture("stacked-llama", replace(LLAMA, blocks="stack"))
    try:
        anatomy = model_anatomy(stacked)
        assert anatomy.blocks is stacked.model.model.stack
        states = residuals(stacked, input_ids=IDS)
        torch.testing.assert_close(states[1], residuals(tiny_causal, input_ids=IDS)[1])
        lens = explain(stacked, CLEAN, method="logit_lens", target="to")
        assert (
            lens.extras["target_prob"]
            == explain(tiny_causal, CLEAN, method="logit_lens", target="to").extras["target_prob"]
        )
        kwargs = dict(method="activation_patching", target="to", corrupt=CORRUPT, component="mlp")
        np.testing.assert_allclose(
            explain(stacked, CLEAN, **kwargs).scores,
            explain(tiny_causal, CLEAN, **kwargs).scores,
            atol=1e-6,
        )
    finally:
        del ARCHITECTURES["stacked-llama"]


def test_a_model_without_known_blocks_is_a_one_line_error(tokenizer):
    class NoBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(len(tokenizer), 8)

        def get_input_embeddings(self):
            return self.embed

    lm = from_pretrained_objects(NoBlocks(), tokenizer, name="no-blocks")
    with pytest.raises(WorkbenchError) as error:
        model_anatomy(lm)
    message = str(error.value)
    assert "cannot find the transformer blocks of NoBlocks" in message and "\n" not in message
    assert "register_architecture('NoBlocks', Architecture(blocks=" in message


# -- the prompt-prefix cache ----------------------------------------------------------------


def test_a_batch_of_suffixes_over_the_prefix_cache_equals_full_forwards(tiny_causal):
    model = tiny_causal.model
    prefix_ids, suffixes = IDS[:, :5], torch.tensor([[10, 11, 12], [13, 3, 4], [5, 6, 14]])
    with torch.no_grad():
        prefix, _ = compute_prefix(model, input_ids=prefix_ids)
        assert prefix is not None and prefix.length == 5
        cached = model(input_ids=suffixes, **prefix.arguments(len(suffixes))).logits
        full = model(torch.cat([prefix_ids.expand(3, -1), suffixes], 1)).logits[:, 5:]
        torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5)
        # The first 3 positions only, for the suffixes' continuation from there.
        rest = torch.cat([prefix_ids[:, 3:].expand(3, -1), suffixes], 1)
        cut = model(input_ids=rest, **prefix.arguments(3, length=3)).logits
        torch.testing.assert_close(cut[:, 2:], full, rtol=1e-5, atol=1e-5)
    # The prefix is shared, not copied: the batches above left it as it was.
    assert prefix.length == 5


def test_cache_arguments_and_verdicts_are_found_once(tiny_causal, tiny_gpt2):
    assert cache_argument(tiny_causal.model) in ("cache", "past_key_values")
    assert cache_argument(torch.nn.Linear(2, 2)) is None
    runs = []

    def check() -> bool:
        runs.append(1)
        return True

    assert verdict(tiny_gpt2.model, "test: once", check) and verdict(
        tiny_gpt2.model, "test: once", check
    )
    assert len(runs) == 1
