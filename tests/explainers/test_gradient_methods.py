"""saliency, input_x_gradient, deeplift, gradient_shap: captum agreement and a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.objective import prepare
from tests.explainers.conftest import copy_inputs

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the milk is in the fridge to get the milk open the"
TARGET = "door open"


class RowForward(torch.nn.Module):
    """Objective row r as a function of the prompt embeddings: what captum attributes."""

    def __init__(self, obj, row: int):
        super().__init__()
        self.model = obj.lm.model  # a child module, so captum's DeepLift hooks reach it
        self.obj, self.row = obj, row

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.obj.forward_embeddings(embeds)[:, self.row]


def captum_rows(lm, make, reduce, baseline: str | None = None, **kwargs) -> np.ndarray:
    obj = prepare(lm, TEXT, TARGET)
    x = obj.input_embeddings.unsqueeze(0)
    rows = []
    for r in range(obj.n_rows):
        method = make(RowForward(obj, r))
        if baseline is None:
            attr = method.attribute(x, **kwargs)
        else:
            attr = method.attribute(x, baselines=obj.baseline_embeddings(baseline)[None], **kwargs)
        rows.append(reduce(attr[0].detach()))
    return torch.stack(rows).numpy()


def test_saliency_equals_captum(tiny_causal):
    from captum.attr import Saliency

    for norm, reduce in (("l1", lambda a: a.sum(-1)), ("l2", lambda a: a.norm(dim=-1))):
        ours = explain(tiny_causal, TEXT, target=TARGET, method="saliency", norm=norm).scores
        ref = captum_rows(tiny_causal, Saliency, reduce, abs=True)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_input_x_gradient_equals_captum(tiny_causal):
    from captum.attr import InputXGradient

    ours = explain(tiny_causal, TEXT, target=TARGET, method="input_x_gradient").scores
    ref = captum_rows(tiny_causal, InputXGradient, lambda a: a.sum(-1))
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)


def test_deeplift_equals_captum_with_silu_as_a_nonlinearity(tiny_causal, monkeypatch):
    import captum.attr._core.deep_lift as captum_deeplift
    from captum.attr import DeepLift
    from transformers.activations import SiLUActivation

    # captum only knows torch's ReLU/Sigmoid/... modules; Llama's SiLU gets its rescale rule.
    table = dict(captum_deeplift.SUPPORTED_NON_LINEAR)
    table[SiLUActivation] = captum_deeplift.nonlinear
    monkeypatch.setattr(captum_deeplift, "SUPPORTED_NON_LINEAR", table)
    exp = explain(tiny_causal, TEXT, target=TARGET, method="deeplift", baseline="eos")
    ref = captum_rows(tiny_causal, DeepLift, lambda a: a.sum(-1), baseline="eos")
    np.testing.assert_allclose(exp.scores, ref, rtol=1e-3, atol=1e-6)
    # The rescale rule is not plain input x gradient on this model.
    ixg = explain(tiny_causal, TEXT, target=TARGET, method="input_x_gradient").scores
    assert not np.allclose(exp.scores, ixg, rtol=1e-2)
    assert len(exp.delta) == 2 and exp.params["activations"] == 2


def test_gradient_shap_agrees_with_captum_in_expectation(tiny_causal):
    from captum.attr import GradientShap

    exp = explain(
        tiny_causal, TEXT, target=TARGET, method="gradient_shap", n_samples=256, baseline="eos"
    )
    torch.manual_seed(0)
    ref = captum_rows(tiny_causal, GradientShap, lambda a: a.sum(-1), baseline="eos", n_samples=256)
    for row in range(2):
        assert np.corrcoef(exp.scores[row], ref[row])[0, 1] > 0.95
    # Same seed, same numbers; another seed, other samples.
    again = explain(
        tiny_causal, TEXT, target=TARGET, method="gradient_shap", n_samples=256, baseline="eos"
    )
    np.testing.assert_array_equal(exp.scores, again.scores)
    other = explain(tiny_causal, TEXT, target=TARGET, method="gradient_shap", seed=1)
    assert not np.allclose(other.scores, exp.scores)
    # In expectation the rows sum to f(x) - f(baseline): the estimate is within 10%.
    for r in range(2):
        assert abs(exp.extras["estimate_gap"][r]) < 0.1 * abs(exp.extras["expected"][r]) + 0.01


def content_recovery(lm, method: str, n: int = 10, **params) -> float:
    """Share of inputs whose object word ranks first among the content words.

    The query marker Q ends every input and is needed for any answer, so it is not a
    candidate: the question is whether a method finds *which* word decides the output.
    """
    hits = 0
    for text, answer in copy_inputs(n):
        exp = explain(lm, text, target=answer, method=method, **params)
        words = text.split()
        scores = [s for w, s in zip(words, exp.scores[0]) if w != "Q"]
        hits += [w for w in words if w != "Q"][int(np.argmax(scores))] == answer
    return hits / n


# Measured on 10 inputs (seed 123): saliency 10/10, gradient_shap over three baselines
# ~9/10, input_x_gradient and deeplift ~6-8/10. The copy model is saturated (p(answer) ~ 1),
# so local gradients are tiny and noisy; that is the saturation problem that motivates IG.
@pytest.mark.parametrize(
    ("method", "params", "required"),
    [
        ("saliency", {}, 0.9),
        ("gradient_shap", {"baseline": "zero,pad,eos", "n_samples": 64}, 0.7),
        ("input_x_gradient", {}, 0.5),
        ("deeplift", {"baseline": "pad"}, 0.5),
    ],
)
def test_gradient_methods_recover_the_deciding_token(trained_copy_model, method, params, required):
    rate = content_recovery(trained_copy_model, method, **params)
    assert rate >= required, f"{method} recovered the object word in only {rate:.0%}"


def test_bad_parameters_are_one_line_errors(tiny_causal):
    from workbench.errors import WorkbenchError

    with pytest.raises(WorkbenchError, match="norm must be l2 or l1, not 'l3'"):
        explain(tiny_causal, TEXT, target="door", method="saliency", norm="l3")
    with pytest.raises(WorkbenchError, match="n_samples must be >= 1, not 0"):
        explain(tiny_causal, TEXT, target="door", method="gradient_shap", n_samples=0)
    with pytest.raises(WorkbenchError, match="baseline must be one of zero, pad, eos, not 'ones'"):
        explain(tiny_causal, TEXT, target="door", method="deeplift", baseline="ones")
    with pytest.raises(WorkbenchError, match="baseline must be one of zero, pad, eos, not 'x'"):
        explain(tiny_causal, TEXT, target="door", method="gradient_shap", baseline="zero,x")


def spy_batched_backwards(monkeypatch) -> list[int]:
    """A list that grows by one for every batched backward that returned."""
    real, calls = torch.autograd.grad, []

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        if kwargs.get("is_grads_batched"):
            calls.append(1)
        return out

    monkeypatch.setattr(torch.autograd, "grad", spy)
    return calls


@pytest.mark.parametrize("method", ["ig", "saliency", "deeplift", "gradient_shap"])
def test_one_batched_backward_equals_one_backward_per_target_row(tiny_causal, monkeypatch, method):
    from explainers.attribution import gradients

    params = {"steps": 4} if method == "ig" else {}
    batched_calls = spy_batched_backwards(monkeypatch)
    batched = explain(tiny_causal, TEXT, target=TARGET, method=method, **params)
    assert batched.scores.shape[0] == 2 and batched_calls  # it ran, without falling back
    monkeypatch.setattr(gradients, "BATCHED_BACKWARD", False)
    looped = explain(tiny_causal, TEXT, target=TARGET, method=method, **params)
    np.testing.assert_allclose(batched.scores, looped.scores, rtol=1e-5, atol=1e-7)


def test_data_set_ig_batched_backward_equals_one_backward_per_target_row(tiny_causal, monkeypatch):
    from explainers.attribution import gradients
    from explainers.attribution.ig_batch import explain_dataset

    items = [{"text": TEXT, "target": TARGET}, {"text": "open the door", "target": " milk"}]
    batched_calls = spy_batched_backwards(monkeypatch)
    batched = explain_dataset(tiny_causal, items, steps=4)
    assert batched_calls
    monkeypatch.setattr(gradients, "BATCHED_BACKWARD", False)
    looped = explain_dataset(tiny_causal, items, steps=4)
    for a, b in zip(batched, looped):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "error, falls_back",
    [
        (RuntimeError("Batching rule not implemented for aten::_foo"), True),
        (RuntimeError("vmap: inplace arithmetic(self, *extra_args) is not possible"), True),
        (NotImplementedError("no batched backward"), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), False),
        (RuntimeError("expected scalar type Float but found Half"), False),
    ],
)
def test_only_a_backward_autograd_cannot_batch_falls_back_to_one_row_at_a_time(
    monkeypatch, error, falls_back
):
    from explainers.attribution import gradients

    real_grad = torch.autograd.grad

    def batched_fails(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise error
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", batched_fails)
    leaf = torch.ones(3, 4, requires_grad=True)
    values = torch.stack([(leaf * 2).sum(-1), (leaf * 3).sum(-1)], dim=1)  # [B=3, rows=2]
    if falls_back:
        grads = gradients.row_gradients(values, leaf)
        assert [float(g[0, 0]) for g in grads] == [2.0, 3.0]
    else:
        with pytest.raises(type(error)):
            gradients.row_gradients(values, leaf)
