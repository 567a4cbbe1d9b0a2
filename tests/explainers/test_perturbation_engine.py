"""The batched perturbation engine: prefix-cache reuse, right padding and batch planning give
the values of one-at-a-time full forwards, and the methods' attributions do not change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.attribution import batch_plan, perturbation, surrogate
from explainers.attribution.perturbation import evaluate_id_lists, evaluate_kept
from explainers.objective import prepare
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the milk is in the fridge Q red blue green key box"
TARGET = "milk open apple"


@pytest.fixture
def fine_batches(monkeypatch):
    """A forward's fixed cost dwarfs a tiny model's work, so the planner would run most
    variants in one batch from position 0; without that cost it splits them by shared
    prefix, and the cached path is what runs."""
    monkeypatch.setattr(batch_plan, "overhead_positions", lambda sizes, cuda: 1.0)


class Forwards:
    """Counts a model's forwards and the positions they compute (padding included, cached
    prefixes not), with a forward pre-hook on the model."""

    def __init__(self, model):
        self.forwards = self.positions = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        shape = embeds.shape[:2] if embeds is not None else kwargs["input_ids"].shape
        self.forwards += 1
        self.positions += int(shape[0] * shape[1])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def without_prefix_reuse(monkeypatch):
    """The engine as if no prompt cache could be reused: every variant in full."""
    monkeypatch.setattr(perturbation, "_prompt_prefix", lambda obj: None)


def one_at_a_time(obj, prompts):
    """The reference: each prompt alone through `Objective.forward_ids`, no cache."""
    filler = obj.baseline_token_id("pad")
    return torch.stack([obj.forward_ids(torch.tensor([list(p) or [filler]]))[0] for p in prompts])


def random_keeps(obj, n=48, seed=0):
    gen = torch.Generator().manual_seed(seed)
    keep = torch.rand(n, len(obj.prompt_ids), generator=gen) > 0.4
    for i in range(min(n // 2, len(obj.prompt_ids))):  # leave-one-out rows: long prefixes
        keep[i] = True
        keep[i, i] = False
    keep[-1] = False  # everything removed
    return keep


@pytest.mark.usefixtures("fine_batches")
@pytest.mark.parametrize("removal", ["delete", "replace"])
@pytest.mark.parametrize("reuse", [True, False])
def test_batched_engine_equals_one_at_a_time(tiny_causal, removal, reuse):
    obj = prepare(tiny_causal, TEXT, TARGET)
    keep = random_keeps(obj)
    prompts = perturbation.perturbed_ids(obj, keep, removal)
    expected = one_at_a_time(obj, prompts)
    values, predictions = evaluate_kept(obj, keep, removal, reuse_prefix=reuse)
    np.testing.assert_allclose(values.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    single, _ = evaluate_kept(obj, keep, removal, batch_size=1, reuse_prefix=reuse)
    np.testing.assert_allclose(single.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    # Predictions: the arg-max token at each target row, as in the full forward.
    logp = obj.row_log_probs(obj.embed(torch.tensor([prompts[0]])))
    assert predictions[0].tolist() == logp.argmax(-1)[0].tolist()


@pytest.mark.usefixtures("fine_batches")
def test_reuse_skips_the_shared_prefix(tiny_causal):
    obj = prepare(tiny_causal, TEXT, TARGET)
    n = len(obj.prompt_ids)
    keep = torch.ones(n, n, dtype=torch.bool)
    keep[torch.arange(n), torch.arange(n)] = False  # leave-one-out
    counted = {}
    for reuse in (True, False):
        with Forwards(tiny_causal.model) as forwards:
            evaluate_kept(obj, keep, "replace", reuse_prefix=reuse)
        counted[reuse] = forwards.positions
    assert perturbation._prompt_prefix(obj) is not None  # this model's cache is reusable
    # Without reuse every variant runs all n + T - 1 positions; with it, about half.
    assert counted[False] == n * (n + 2)
    assert counted[True] < 0.75 * counted[False]


def test_mixed_lengths_share_forwards_with_right_padding(tiny_causal):
    obj = prepare(tiny_causal, TEXT, TARGET)
    prompts = [obj.prompt_ids[: k + 1].tolist() for k in range(len(obj.prompt_ids))]
    prompts += [[5, 6, 7], [], [9]]
    with Forwards(tiny_causal.model) as forwards:
        values, _ = evaluate_id_lists(obj, prompts, reuse_prefix=False)
    assert forwards.forwards < len(set(map(len, prompts)))
    np.testing.assert_allclose(
        values.numpy(), one_at_a_time(obj, prompts).numpy(), rtol=1e-5, atol=1e-5
    )


def test_contrast_rows_match_the_objective(tiny_causal):
    obj = prepare(tiny_causal, TEXT, "milk open", contrast="apple door")
    keep = random_keeps(obj, n=12)
    prompts = perturbation.perturbed_ids(obj, keep, "delete")
    values, _ = evaluate_kept(obj, keep, "delete")
    np.testing.assert_allclose(
        values.numpy(), one_at_a_time(obj, prompts).numpy(), rtol=1e-5, atol=1e-5
    )


def test_classifiers_run_in_full(tiny_classifier):
    obj = prepare(tiny_classifier, TEXT)
    keep = random_keeps(obj, n=10)
    prompts = perturbation.perturbed_ids(obj, keep, "delete")
    values, _ = evaluate_kept(obj, keep, "delete")
    np.testing.assert_allclose(
        values.numpy(), one_at_a_time(obj, prompts).numpy(), rtol=1e-5, atol=1e-5
    )


def test_a_model_without_a_cache_argument_runs_in_full(tiny_causal, tokenizer):
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    class NoCacheLlama(LlamaForCausalLM):
        def forward(
            self,
            input_ids=None,
            inputs_embeds=None,
            attention_mask=None,
            use_cache=None,
            logits_to_keep=0,
        ):
            return super().forward(
                input_ids=input_ids,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                logits_to_keep=logits_to_keep,
            )

    model = NoCacheLlama(tiny_causal.model.config)
    model.load_state_dict(tiny_causal.model.state_dict())
    lm = from_pretrained_objects(model, tokenizer, name="no-cache")
    obj = prepare(lm, TEXT, TARGET)
    assert perturbation._prompt_prefix(obj) is None
    keep = random_keeps(obj, n=8)
    values, _ = evaluate_kept(obj, keep, "replace")
    expected = one_at_a_time(obj, perturbation.perturbed_ids(obj, keep, "replace"))
    np.testing.assert_allclose(values.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


CASES = [
    ("occlusion", {"unit": "token", "removal": "delete"}),
    ("occlusion", {"unit": "token", "removal": "replace"}),
    ("occlusion", {"unit": "word", "removal": "delete"}),
    ("occlusion", {"unit": "word", "removal": "replace"}),
    ("lime", {"n_samples": 80, "removal": "delete"}),
    ("lime", {"n_samples": 80, "removal": "replace"}),
    ("kernel_shap", {"n_samples": 80, "removal": "delete"}),
    ("kernel_shap", {"n_samples": 80, "removal": "replace"}),
    # Enough evaluations to expand the whole tree: shap's queue order then cannot matter.
    ("shap", {"max_evals": 600, "removal": "delete"}),
    ("shap", {"max_evals": 600, "removal": "replace"}),
]


@pytest.mark.usefixtures("fine_batches")
@pytest.mark.parametrize(("method", "params"), CASES)
def test_attributions_are_the_same_with_and_without_prefix_reuse(
    tiny_causal, monkeypatch, method, params
):
    scores, positions = {}, {}
    for reuse in (True, False):
        if not reuse:
            without_prefix_reuse(monkeypatch)
        np.random.seed(0)
        with Forwards(tiny_causal.model) as forwards:
            exp = explain(tiny_causal, TEXT, target=TARGET, method=method, **params)
        scores[reuse], positions[reuse] = exp.scores, forwards.positions
    if method in ("occlusion", "shap"):  # variants with long shared prefixes: less work
        assert positions[True] < positions[False]
    scale = np.abs(scores[False]).max()
    np.testing.assert_allclose(scores[True], scores[False], rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("method", ["lime", "kernel_shap"])
@pytest.mark.parametrize("removal", ["delete", "replace"])
def test_one_multi_output_fit_equals_one_captum_run_per_row(
    tiny_causal, monkeypatch, method, removal
):
    scores = {}
    for together in (True, False):
        monkeypatch.setattr(surrogate, "ONE_FIT_FOR_ALL_ROWS", together)
        exp = explain(
            tiny_causal, TEXT, target=TARGET, method=method, n_samples=80, removal=removal
        )
        scores[together] = exp.scores
    scale = np.abs(scores[False]).max()
    np.testing.assert_allclose(scores[True], scores[False], rtol=1e-4, atol=1e-5 * scale)


def test_shap_batch_sets_the_model_calls_of_partition(tiny_causal, monkeypatch):
    from explainers.attribution import shap_partition

    calls = []
    real = shap_partition.evaluate_id_lists

    def counted(obj, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return real(obj, prompts, *args, **kwargs)

    monkeypatch.setattr(shap_partition, "evaluate_id_lists", counted)
    default = explain(tiny_causal, TEXT, target=TARGET, method="shap", max_evals=100)
    assert max(calls) <= 10 and "shap_batch" not in default.params  # shap's default, 5
    calls.clear()
    wide = explain(tiny_causal, TEXT, target=TARGET, method="shap", max_evals=100, shap_batch=25)
    assert max(calls) > 10 and wide.params["shap_batch"] == 25
    with pytest.raises(WorkbenchError, match="shap_batch must be >= 1, not 0"):
        explain(tiny_causal, TEXT, target=TARGET, method="shap", shap_batch=0)


@pytest.mark.usefixtures("fine_batches")
def test_bfloat16_models_reuse_the_cache_too(tiny_causal):
    import copy

    from workbench.models import from_pretrained_objects

    model = copy.deepcopy(tiny_causal.model).to(torch.bfloat16)
    lm = from_pretrained_objects(model, tiny_causal.tokenizer, name="tiny-bf16")
    obj = prepare(lm, TEXT, TARGET)
    keep = random_keeps(obj)
    values, _ = evaluate_kept(obj, keep, "replace")
    assert perturbation._prompt_prefix(obj) is not None  # the 16-bit cache check passed
    expected = one_at_a_time(obj, perturbation.perturbed_ids(obj, keep, "replace"))
    np.testing.assert_allclose(values.numpy(), expected.numpy(), rtol=0.02, atol=0.05)
