"""Every registered method on CUDA in bf16 against the same method in float32 on the CPU.

The model is test_ig's copy model (trained in seconds: it repeats after Q the one object
word among filler words), so each explanation has a clear signal that bf16 rounding (about
3 significant digits) should not move. Thresholds, per category of method:

- attribution, probing, causal: every score row (a target token) correlates with the float32
  CPU row at Pearson r >= 0.95, and the most important input token is the same;
- attention: weights (in [0, 1]) within 0.02 of the float32 CPU weights;
- prompting: the texts those methods generate follow the model's greedy choices, which a
  random near-tie may flip under bf16, so they are compared in float32 on CUDA (r >= 0.99,
  the same top token) and must run (status ok, finite scores) in bf16.

The per-method figures are written to $WORKBENCH_GPU_REPORT (a JSON file) when it is set.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.registry import known_methods
from tests.gpu.conftest import on_gpu
from workbench.errors import WorkbenchError

TEXT = "the is milk in to get open a Q"
TARGET = "milk"
CORRUPT = "the is apple in to get open a Q"  # the object swapped: the patching methods' pair
FEW_SHOT = (
    "Input: the milk Q\nOutput: milk\n\nInput: a door Q\nOutput: door\n\nInput: an apple Q\nOutput:"
)

# Enough samples to be stable, few enough to be quick.
PARAMS: dict[str, dict] = {
    "ig": {"steps": 32, "baseline": "eos"},
    "gradient_shap": {"n_samples": 16, "seed": 0},
    "lime": {"n_samples": 200, "seed": 0},
    "kernel_shap": {"n_samples": 200, "seed": 0},
    "shap": {"max_evals": 200},
    "self_explain": {"max_tokens": 8},
    "counterfactual_test": {"max_tokens": 8},
    "cot": {"max_tokens": 8},
    "icl_demos": {"max_tokens": 4},
    "activation_patching": {"corrupt": CORRUPT},
    "attribution_patching": {"corrupt": CORRUPT},
    "causal_tracing": {"noise_tokens": [2], "samples": 4, "seed": 0},
}
INPUTS: dict[str, tuple[str, str | None]] = {"icl_demos": (FEW_SHOT, " apple")}
R_MIN = {"attribution": 0.95, "probing": 0.95, "causal": 0.95, "prompting": 0.99}
ATTENTION_ATOL = 0.02
REPORT: dict[str, dict] = {}

DEVICE = os.environ.get("WORKBENCH_GPU_TEST_DEVICE", "cuda")  # "cpu": a dry run of the logic


def run(lm, name: str):
    text, target = INPUTS.get(name, (TEXT, TARGET))
    if not known_methods()[name].takes_target:
        target = None  # the method explains the model's own answer
    torch.manual_seed(0)
    return explain(lm, text, method=name, target=target, **PARAMS.get(name, {}))


def outcome(lm, name: str):
    """The explanation, or the one-line error with which the method refuses the input (e.g.
    counterfactual_test when the model's self-explanation names no input word)."""
    try:
        return run(lm, name)
    except WorkbenchError as exc:
        return exc


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Smallest per-row Pearson r (rows with spread), largest absolute difference, and
    whether each row's most important token is the same."""
    rs = []
    for x, y in zip(a, b):
        if np.ptp(x) > 1e-6 and np.ptp(y) > 1e-6:
            rs.append(float(np.corrcoef(x, y)[0, 1]))
    return {
        "r": min(rs) if rs else 1.0,
        "max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0,
        "same_top": bool(all(np.argmax(np.abs(x)) == np.argmax(np.abs(y)) for x, y in zip(a, b))),
    }


@pytest.fixture(scope="module")
def gpu_bf16(copy_lm):
    return on_gpu(copy_lm, torch.bfloat16, DEVICE if DEVICE == "cpu" else "cuda:0")


@pytest.fixture(scope="module")
def gpu_fp32(copy_lm):
    return on_gpu(copy_lm, torch.float32, DEVICE if DEVICE == "cpu" else "cuda:0")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    path = os.environ.get("WORKBENCH_GPU_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"test": "methods_cuda", "device": DEVICE, **REPORT}) + "\n")


@pytest.mark.parametrize("name", sorted(known_methods()))
def test_method_on_cuda_bf16_agrees_with_cpu_float32(name, copy_lm, gpu_bf16, gpu_fp32):
    category = known_methods()[name]().category
    reference = outcome(copy_lm, name)
    fast = outcome(gpu_bf16, name)
    if isinstance(reference, WorkbenchError):
        # Refused on the CPU: refused on CUDA too, with the same words in float32.
        assert isinstance(fast, WorkbenchError), fast
        assert str(outcome(gpu_fp32, name)) == str(reference)
        REPORT[name] = {"category": category, "refused": str(reference)}
        return
    if category == "prompting":
        # bf16 must run; the comparison is in float32 (see above). The copy model does not
        # follow a self-explanation format, so a status such as format_not_followed is the
        # right answer here, as long as it is the CPU's.
        assert fast.scores.shape[1] == reference.scores.shape[1]
        fast = run(gpu_fp32, name)
    assert fast.status == reference.status, fast.warnings
    assert fast.scores.shape == reference.scores.shape
    np.testing.assert_array_equal(np.isfinite(fast.scores), np.isfinite(reference.scores))
    figures = agreement(np.nan_to_num(reference.scores), np.nan_to_num(fast.scores))
    REPORT[name] = {"category": category, **figures}
    if category == "attention":
        assert figures["max_abs"] <= ATTENTION_ATOL, figures
    else:
        assert figures["r"] >= R_MIN.get(category, 0.95), figures
        assert figures["same_top"], figures


@pytest.mark.parametrize("name", ["ig", "saliency", "input_x_gradient", "deeplift", "occlusion"])
def test_classifier_methods_on_cuda_bf16(name, tiny_classifier):
    gpu = on_gpu(tiny_classifier, torch.bfloat16, DEVICE if DEVICE == "cpu" else "cuda:0")
    text = "the apple is red"
    reference = explain(tiny_classifier, text, method=name, target="pos")
    fast = explain(gpu, text, method=name, target="pos")
    figures = agreement(reference.scores, fast.scores)
    REPORT[f"classifier:{name}"] = figures
    assert figures["r"] >= 0.9, figures
