"""The explain template every method shares: checks before the model, one way to build and
record an explanation, IG correct by default, progress reports and data-set mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rich.console import Console

from explainers import explain, validate_params
from explainers.attribution.ig_batch import explain_dataset
from explainers.explanation import Explanation
from explainers.objective import prepare
from explainers.registry import get_method, known_methods
from workbench.errors import UnknownMethodError, WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the milk is in the fridge to get the milk open the"


# -- checks that need no model ------------------------------------------------------------


def test_validate_params_normalises_and_rejects_without_a_model():
    assert validate_params("ig", {"steps": "32", "baseline": "eos"}) == {
        "steps": 32,
        "baseline": "eos",
    }
    assert validate_params("ig", {"steps": "auto", "target": " fridge"})["steps"] == "auto"
    assert validate_params("lime", {"n_samples": "50", "aggregate": "word"}) == {
        "aggregate": "word",
        "n_samples": 50,
    }
    cases = {
        "occlusion takes no parameter 'steps'; its parameters: baseline, batch_size, "
        "removal, unit": ("occlusion", {"steps": 8}),
        "steps must be 'auto' or an integer >= 1, not 0": ("ig", {"steps": 0}),
        "max_knots must be >= 17, not 4": ("ig", {"max_knots": 4}),
        "target is empty": ("ig", {"target": ""}),
        "text is empty": ("saliency", {"text": "  "}),
        "give either target or generate, not both": ("ig", {"target": "x", "generate": 2}),
        "generate must be an integer >= 1, not 0": ("ig", {"generate": 0}),
        "contrast applies to attribution methods, not rollout": ("rollout", {"contrast": "x"}),
        "aggregate must be token or word, not 'sentence'": ("ig", {"aggregate": "sentence"}),
        "head must be an integer >= 0, not 'x'": ("attention", {"head": "x"}),
        "residual must be between 0.0 and 1.0, not 2.0": ("rollout", {"residual": 2}),
        "top_k must be >= 1, not 0": ("logit_lens", {"top_k": 0}),
        "n_samples must be >= 2, not 1": ("kernel_shap", {"n_samples": 1}),
        "unit must be token or word, not 'phrase'": ("occlusion", {"unit": "phrase"}),
    }
    for message, (method, params) in cases.items():
        with pytest.raises(WorkbenchError) as info:
            validate_params(method, params)
        assert message in str(info.value), (method, params, str(info.value))
        assert "\n" not in str(info.value)
    with pytest.raises(UnknownMethodError, match="known methods: .*occlusion"):
        validate_params("integrated", {})


def test_every_method_lists_its_parameters_and_rejects_others():
    for name in known_methods():
        method = get_method(name)
        with pytest.raises(WorkbenchError, match=f"{name} takes no parameter 'no_such'"):
            method.check_params({"no_such": 1})


def test_explain_rejects_a_parameter_before_touching_the_model(tiny_causal):
    for method in ("occlusion", "attention", "logit_lens"):
        with pytest.raises(WorkbenchError, match=f"{method} takes no parameter 'steps'"):
            explain(tiny_causal, TEXT, target="door", method=method, steps=8)


def test_target_resolution_refuses_a_model_kind_the_method_cannot_read(tiny_classifier):
    with pytest.raises(WorkbenchError, match="logit_lens needs a causal model; tiny-classifier"):
        explain(tiny_classifier, "the apple is red", method="logit_lens")


# -- one way to build and record an explanation -------------------------------------------


def test_from_objective_and_to_record_round_trip(tiny_causal):
    obj = prepare(tiny_causal, TEXT, "door open", contrast="box key")
    scores = np.arange(2 * len(obj.input_tokens), dtype=np.float32).reshape(2, -1)
    exp = Explanation.from_objective(
        get_method("occlusion"), obj, scores, params={"unit": "token"}, extras={"n": np.int64(3)}
    )
    assert (exp.method, exp.category, exp.model) == ("occlusion", "attribution", "tiny-llama")
    assert exp.target_tokens == ["door", "open"] and exp.word_ids == obj.word_ids
    assert exp.extras["target_ids"] == obj.target_ids.tolist()
    assert exp.extras["contrast_tokens"] == ["box", "key"]
    record = exp.to_record()
    assert json.loads(json.dumps(record)) == record  # plain JSON types throughout
    assert record["extras"]["n"] == 3 and isinstance(record["scores"][0][0], float)
    back = Explanation.from_dict(record)
    np.testing.assert_array_equal(back.scores, exp.scores)
    assert (back.status, back.warnings, back.extras) == ("ok", [], record["extras"])
    assert json.loads(exp.to_json()) == record


# -- integrated gradients: correct by default ---------------------------------------------


def test_ig_defaults_to_auto_steps_and_reports_progress(tiny_causal):
    seen = []
    exp = explain(
        tiny_causal, TEXT, target="door", method="ig", progress=lambda d, t: seen.append((d, t))
    )
    assert exp.params["steps"] == "auto" and exp.params["max_knots"] == 512
    assert exp.extras["converged"] is True and exp.status == "ok" and exp.warnings == []
    assert exp.incomplete_rows() == []
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1] == (exp.params["knots"], exp.params["knots"])


def test_a_spent_knot_budget_is_a_status_and_a_rendered_warning(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door open", method="ig", max_knots=17, tolerance=1e-9)
    assert exp.params["knots"] == 17 and exp.extras["converged"] is False
    assert exp.status == "budget_spent"
    assert exp.warnings == [
        "knot budget spent: after max_knots=17 knots, 2 of 2 target rows still miss "
        "completeness by more than 0%; raise max_knots for exact scores"
    ]
    console = Console(record=True, width=200)
    exp.show(console=console)
    assert "warning (budget_spent): knot budget spent" in console.export_text()
    assert "knot budget spent" in exp.to_html()
    assert Explanation.from_dict(exp.to_record()).status == "budget_spent"


def test_a_budget_spent_in_bfloat16_says_to_load_float32(tokenizer):
    import copy

    import torch
    from transformers import LlamaForCausalLM

    from tests.conftest import tiny_llama_config
    from workbench.models import from_pretrained_objects

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).to(torch.bfloat16)
    lm = from_pretrained_objects(model, copy.deepcopy(tokenizer), name="tiny-bf16")
    exp = explain(lm, TEXT, target="door", method="ig", max_knots=17, tolerance=1e-9)
    assert exp.status == "budget_spent"
    assert "the model runs in bfloat16" in exp.warnings[-1]
    assert "load it with dtype float32" in exp.warnings[-1]


def test_fixed_steps_that_miss_completeness_say_so(tiny_causal):
    exp = explain(tiny_causal, TEXT, target="door", method="ig", steps=1, tolerance=1e-9)
    assert exp.params["knots"] == 2 and exp.status == "incomplete"
    assert "with steps=1; steps='auto' refines until they meet it" in exp.warnings[0]


# -- progress of the other long methods ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("occlusion", {}),
        ("lime", {"n_samples": 40}),
        ("kernel_shap", {"n_samples": 40}),
        ("gradient_shap", {"n_samples": 8, "batch_size": 2}),
        ("flow", {}),
    ],
)
def test_long_methods_report_progress_to_completion(tiny_causal, method, params):
    seen = []
    explain(tiny_causal, TEXT, target="door", method=method, progress=lambda *a: seen.append(a))
    assert seen, method
    assert all(0 <= d <= t for d, t in seen) and seen[-1][0] == seen[-1][1]


# -- data-set mode --------------------------------------------------------------------------

ITEMS = [{"text": "the milk is in the fridge Q"}, {"text": "open the red box", "target": "key"}]


def test_dataset_mode_applies_target_contrast_and_aggregate_to_items_without_their_own(
    tiny_causal,
):
    seen = []
    exps = explain_dataset(
        tiny_causal,
        ITEMS,
        target="door",
        contrast="box",
        aggregate="word",
        steps=4,
        progress=lambda *a: seen.append(a),
    )
    assert seen == [(1, 2), (2, 2)]
    assert [e.target_tokens for e in exps] == [["door"], ["key"]]
    assert all(e.aggregation == "word" and e.extras["contrast_tokens"] == ["box"] for e in exps)
    single = explain(
        tiny_causal, ITEMS[0]["text"], target="door", contrast="box", method="ig", steps=4
    ).aggregate("word")
    np.testing.assert_allclose(exps[0].scores, single.scores, rtol=1e-4, atol=1e-6)


def test_dataset_mode_generate_and_per_item_errors(tiny_causal):
    exps = explain_dataset(tiny_causal, ITEMS[:1], generate=2, steps=2)
    assert len(exps[0].target_tokens) >= 1
    with pytest.raises(WorkbenchError, match="^data set item 2: target is empty$"):
        explain_dataset(tiny_causal, [ITEMS[0], {"text": "open", "target": ""}], steps=2)
    with pytest.raises(WorkbenchError, match="^data set item 1: contrast must tokenize to as"):
        explain_dataset(tiny_causal, ITEMS[:1], target="door", contrast="box key", steps=2)
    with pytest.raises(WorkbenchError, match="^occlusion takes no parameter 'steps'"):
        explain_dataset(tiny_causal, ITEMS, method="occlusion", steps=2)
    words = explain_dataset(tiny_causal, ITEMS, method="occlusion", aggregate="word")
    assert [e.aggregation for e in words] == ["word", "word"]
