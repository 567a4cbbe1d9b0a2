"""occlusion, lime, kernel_shap, shap: definitions checked by hand, and a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.objective import prepare
from tests.explainers.conftest import copy_inputs
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the milk is in the fridge Q"


def test_occlusion_is_the_drop_when_each_token_is_deleted(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="milk open", method="occlusion")
    obj = prepare(tiny_causal, TEXT, "milk open")
    full = obj.row_values()
    ids = obj.prompt_ids
    for p in (0, 3, 6):
        without = torch.cat([ids[:p], ids[p + 1 :]]).unsqueeze(0)
        expected = full - obj.forward_ids(without)[0]
        np.testing.assert_allclose(exp.scores[:, p], expected.numpy(), atol=1e-5)


def test_occlusion_replace_keeps_positions(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="milk", method="occlusion", removal="replace")
    obj = prepare(tiny_causal, TEXT, "milk")
    ids = obj.prompt_ids.clone()
    ids[1] = tiny_causal.tokenizer.pad_token_id
    expected = obj.row_values() - obj.forward_ids(ids.unsqueeze(0))[0]
    assert exp.scores[0, 1] == pytest.approx(float(expected[0]), abs=1e-5)
    assert exp.baseline == "pad"


def test_word_occlusion_shares_a_word_drop_among_its_tokens(tiny_causal):
    tokens = explain(tiny_causal, TEXT, target="milk", method="occlusion", unit="token")
    words = explain(tiny_causal, TEXT, target="milk", method="occlusion", unit="word")
    # The tiny vocabulary is whole-word, so a word is a token: both units agree.
    np.testing.assert_allclose(words.scores, tokens.scores, atol=1e-6)
    with pytest.raises(WorkbenchError, match="unit must be token or word, not 'phrase'"):
        explain(tiny_causal, TEXT, target="milk", method="occlusion", unit="phrase")


def test_kernel_shap_sums_to_the_full_minus_empty_change(tiny_causal):
    # Kernel SHAP's efficiency constraint: scores sum to f(x) - f(nothing kept).
    exp = explain(tiny_causal, TEXT, target="milk", method="kernel_shap", n_samples=300)
    obj = prepare(tiny_causal, TEXT, "milk")
    empty = obj.forward_ids(torch.tensor([[tiny_causal.tokenizer.pad_token_id]]))[0]
    expected = float(obj.row_values()[0] - empty[0])
    assert exp.scores[0].sum() == pytest.approx(expected, abs=0.05 * abs(expected) + 1e-3)


def test_surrogates_are_seeded_and_rows_share_model_calls(tiny_causal):
    one = explain(tiny_causal, TEXT, target="milk open", method="lime", n_samples=60)
    two = explain(tiny_causal, TEXT, target="milk open", method="lime", n_samples=60)
    np.testing.assert_array_equal(one.scores, two.scores)
    assert one.extras["model_calls"] <= 60  # two rows, one set of samples
    other = explain(tiny_causal, TEXT, target="milk open", method="lime", n_samples=60, seed=5)
    assert not np.allclose(one.scores, other.scores)


def test_shap_partition_owen_values_sum_to_the_total_change(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="milk open", method="shap", max_evals=200)
    obj = prepare(tiny_causal, TEXT, "milk open")
    empty = obj.forward_ids(torch.tensor([[tiny_causal.tokenizer.pad_token_id]]))[0]
    total = (obj.row_values() - empty).numpy()
    np.testing.assert_allclose(exp.scores.sum(1), total, rtol=1e-3, atol=1e-4)


def content_recovery(lm, method: str, n: int, **params) -> float:
    """Share of inputs whose object word ranks first among the content words (Q excluded)."""
    hits = 0
    for text, answer in copy_inputs(n):
        exp = explain(lm, text, target=answer, method=method, **params)
        words = text.split()
        content = [(w, s) for w, s in zip(words, exp.scores[0]) if w != "Q"]
        hits += max(content, key=lambda ws: ws[1])[0] == answer
    return hits / n


# Measured on 20 inputs: occlusion 20/20 (delete and replace), lime 19/20, kernel_shap
# 19/20, shap 19/20 when Q is excluded.
@pytest.mark.parametrize(
    ("method", "params", "n", "required"),
    [
        ("occlusion", {}, 10, 1.0),
        ("occlusion", {"removal": "replace"}, 10, 1.0),
        ("lime", {"n_samples": 150}, 10, 0.8),
        ("kernel_shap", {"n_samples": 150}, 10, 0.8),
        ("shap", {"max_evals": 120}, 5, 0.8),
    ],
)
def test_perturbation_methods_recover_the_deciding_token(
    trained_copy_model, method, params, n, required
):
    rate = content_recovery(trained_copy_model, method, n, **params)
    assert rate >= required, f"{method} recovered the object word in only {rate:.0%}"


def test_occlusion_ranks_the_object_word_first_including_the_query_marker(trained_copy_model):
    # With the marker Q a candidate too, occlusion finds the object word nearly always.
    hits = sum(
        explain(
            trained_copy_model, text, target=answer, method="occlusion", removal="replace"
        ).top_tokens(0, 1)[0][0]
        == answer
        for text, answer in copy_inputs(10)
    )
    assert hits >= 9


def test_bad_parameters(tiny_causal):
    with pytest.raises(WorkbenchError, match="removal must be delete or replace, not 'drop'"):
        explain(tiny_causal, TEXT, target="milk", method="lime", removal="drop")
    with pytest.raises(WorkbenchError, match="n_samples must be >= 2, not 1"):
        explain(tiny_causal, TEXT, target="milk", method="kernel_shap", n_samples=1)
    with pytest.raises(WorkbenchError, match="max_evals must be >= 2, not 0"):
        explain(tiny_causal, TEXT, target="milk", method="shap", max_evals=0)
