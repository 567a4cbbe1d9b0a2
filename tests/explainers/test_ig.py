"""Integrated gradients: agreement with captum, completeness, and a model with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.objective import prepare
from workbench.errors import WorkbenchError

TEXT = "the milk is in the fridge to get the milk open the"


def captum_ig(lm, text: str, target: str, baseline_id: int, n_steps: int) -> np.ndarray:
    """captum's LLMGradientAttribution(LayerIntegratedGradients) on the embedding layer."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    lig = LayerIntegratedGradients(lm.model, lm.model.get_input_embeddings())
    llm_attr = LLMGradientAttribution(lig, lm.tokenizer)
    inp = TextTokenInput(text, lm.tokenizer, baselines=baseline_id)
    result = llm_attr.attribute(inp, target=target, n_steps=n_steps, method="riemann_trapezoid")
    return result.token_attr.detach().float().numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_ig_equals_captum_layer_integrated_gradients(tiny_causal):
    target = "door open"
    exp = explain(tiny_causal, TEXT, target=target, method="ig", steps=16, baseline="eos")
    ref = captum_ig(tiny_causal, TEXT, target, tiny_causal.tokenizer.eos_token_id, n_steps=17)
    assert exp.scores.shape == ref.shape == (2, len(exp.input_tokens))
    for row in range(2):
        assert pearson(exp.scores[row], ref[row]) >= 0.99
    # captum's riemann_trapezoid weights sum to (n-1)/n instead of 1 (a known quirk), so its
    # scores are ours scaled by 16/17; up to that factor they are the same numbers.
    np.testing.assert_allclose(exp.scores, ref * 17 / 16, rtol=1e-3, atol=1e-6)


def test_completeness_delta_is_row_sum_minus_expected(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door open", method="ig", steps=8, baseline="zero")
    obj = prepare(tiny_causal, TEXT, "door open")
    f_input = obj.row_values().numpy()
    zero = torch.zeros_like(obj.input_embeddings).unsqueeze(0)
    f_base = obj.forward_embeddings(zero).detach()[0].numpy()
    np.testing.assert_allclose(exp.expected, f_input - f_base, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exp.delta, exp.scores.sum(1) - exp.expected, atol=1e-5)


def test_auto_steps_reaches_tolerance(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door", method="ig", steps="auto", tolerance=0.01)
    assert exp.extras["converged"] is True
    assert exp.incomplete_rows(0.01) == []
    assert abs(exp.delta[0]) <= max(0.01 * abs(exp.expected[0]), 1e-3)


def test_steps_must_be_positive(tiny_causal):
    with pytest.raises(WorkbenchError, match=r"steps must be 'auto' or an integer >= 1, not 0"):
        explain(tiny_causal, TEXT, target="door", method="ig", steps=0)


def test_contrast_attributes_the_difference(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door", contrast="box", method="ig", steps=8)
    with_t = prepare(tiny_causal, TEXT, "door").row_values()
    with_c = prepare(tiny_causal, TEXT, "box").row_values()
    obj = prepare(tiny_causal, TEXT, "door", contrast="box")
    assert obj.row_values().item() == pytest.approx((with_t - with_c).item(), abs=1e-5)
    assert exp.extras["contrast_tokens"] == ["box"]


def test_generate_attributes_greedy_continuation(tiny_causal):
    exp = explain(tiny_causal, TEXT, generate=3, method="ig", steps=4)
    assert len(exp.target_tokens) == exp.scores.shape[0] >= 1


def test_word_aggregation_sums_subword_scores(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door", method="ig", steps=4)
    words = exp.aggregate("word")
    assert words.scores.sum() == pytest.approx(exp.scores.sum(), abs=1e-6)
    assert len(words.input_tokens) == len(TEXT.split())


def test_classifier_label_by_name_and_unknown_label(tiny_classifier):
    exp = explain(tiny_classifier, "the apple is red", target="pos", method="ig", steps=8)
    assert exp.target_tokens == ["pos"] and exp.scores.shape == (1, 4)
    by_index = explain(tiny_classifier, "the apple is red", target="2", method="ig", steps=8)
    np.testing.assert_allclose(exp.scores, by_index.scores)
    with pytest.raises(WorkbenchError, match="no label 'happy'"):
        explain(tiny_classifier, "the apple is red", target="happy", method="ig")


FILLERS = "the is in to get open a an on from".split()
OBJECTS = "milk apple table kitchen door key box knife oven fridge".split()


def train_copy_model(tokenizer, steps: int = 300):
    """A 2-layer Llama trained to repeat, after the marker Q, the one object word among fillers.

    The right attribution is known by construction: only the object word carries the answer.
    """
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_llama_config

    torch.manual_seed(0)
    vocab = tokenizer.get_vocab()
    fillers = torch.tensor([vocab[w] for w in FILLERS])
    objects = torch.tensor([vocab[w] for w in OBJECTS])
    query = vocab["Q"]
    model = LlamaForCausalLM(
        tiny_llama_config(len(tokenizer), hidden_size=64, intermediate_size=128)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    length = 8
    gen = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = fillers[torch.randint(len(fillers), (n, length), generator=gen)]
        pos = torch.randint(0, length, (n,), generator=gen)
        answer = objects[torch.randint(len(objects), (n,), generator=gen)]
        ids[torch.arange(n), pos] = answer
        return torch.cat([ids, torch.full((n, 1), query)], dim=1), answer

    for _ in range(steps):
        ids, answer = batch(64)
        logits = model(input_ids=ids).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, answer)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, answer = batch(256)
    with torch.no_grad():
        accuracy = (model(input_ids=ids).logits[:, -1].argmax(-1) == answer).float().mean()
    return model, float(accuracy)


@pytest.fixture(scope="module")
def copy_model(tokenizer):
    from workbench.models import from_pretrained_objects

    model, accuracy = train_copy_model(tokenizer)
    assert accuracy > 0.9, f"copy model only reached {accuracy:.2f}"
    return from_pretrained_objects(model, tokenizer, name="copy-model")


@pytest.mark.parametrize(("baseline", "required"), [("eos", 10), ("zero", 7)])
def test_ig_ranks_the_copied_token_first(copy_model, baseline, required):
    # The all-zero embedding is a singular point of RMSNorm models (see ig.py): f jumps next
    # to it, and where IG says so (status "jump") its scores are not an integral of
    # anything, so the zero baseline is allowed misses there, and only there. (The
    # trapezoid rule scored 8-10 of 10 over three training seeds, the adaptive Simpson rule
    # 7; each miss is a "jump".)
    gen = torch.Generator().manual_seed(123)
    misses = []
    for _ in range(10):
        words = [FILLERS[i] for i in torch.randint(len(FILLERS), (8,), generator=gen)]
        answer = OBJECTS[int(torch.randint(len(OBJECTS), (1,), generator=gen))]
        words[int(torch.randint(8, (1,), generator=gen))] = answer
        text = " ".join(words + ["Q"])
        exp = explain(copy_model, text, target=answer, method="ig", steps="auto", baseline=baseline)
        top = exp.top_tokens(0, k=1)[0][0]
        if top != answer:
            assert exp.status == "jump", f"{text!r}: top {top!r} with status {exp.status}"
            misses.append(f"{text!r}: top {top!r}, expected {answer!r}")
    assert 10 - len(misses) >= required, misses
