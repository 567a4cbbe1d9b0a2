"""Choice objectives on CUDA: the packed candidates give the scores of one forward per
candidate, and IG of the choice agrees with float32 on the CPU, on the copy model and, where
$WORKBENCH_TEST_MODEL names the default model (its .gguf or folder), on its real weights."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.choice import prepare_choice
from tests.explainers.conftest import copy_inputs
from tests.explainers.test_ig import OBJECTS
from tests.gpu.conftest import on_gpu

KITCHEN = (
    "You are in a kitchen. The fridge contains a carrot. On the table you see a knife and a "
    "cookbook. You are carrying nothing.\nValid commands:\nopen fridge\ntake knife\n"
    "examine cookbook\ngo east\nWhat do you do?"
)
COMMANDS = ["examine cookbook", "go east", "open fridge", "take knife"]
# WORKBENCH_GPU_TEST_DEVICE=cpu runs the tests' logic on the CPU (a dry run).
DEVICE = "cuda:0" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def default_lm():
    path = os.environ.get("WORKBENCH_TEST_MODEL")
    if not path:
        pytest.skip("set WORKBENCH_TEST_MODEL to the default model (.gguf or folder)")
    from workbench.models import load_model

    return load_model(path, device="cpu", dtype="float32")


def one_by_one(lm, text: str, candidates: list[str]) -> torch.Tensor:
    ids = lm.tokenizer(text)["input_ids"]
    out = []
    for c in candidates:
        cid = lm.tokenizer(c, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids + cid], device=lm.device)
        with torch.no_grad():
            lp = torch.log_softmax(lm.model(input_ids=x).logits[0].float(), -1)
        out.append(sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(cid)))
    return torch.tensor(out)


def test_packed_choice_scores_on_cuda_equal_one_forward_per_candidate(copy_lm):
    gpu = on_gpu(copy_lm, torch.float32, DEVICE)
    text, answer = copy_inputs(1, seed=5)[0]
    obj = prepare_choice(gpu, text, OBJECTS, answer)
    with torch.no_grad():
        packed = obj.candidate_scores(obj.input_embeddings.unsqueeze(0))[0].cpu()
    torch.testing.assert_close(packed, one_by_one(gpu, text, OBJECTS), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("objective", ["choice", "margin"])
def test_ig_of_a_choice_on_cuda_agrees_with_cpu_float32(copy_lm, objective):
    gpu = on_gpu(copy_lm, torch.float32, DEVICE)
    for text, answer in copy_inputs(3, seed=9):
        kwargs = dict(target=answer, candidates=OBJECTS, objective=objective, steps="auto")
        cpu = explain(copy_lm, text, "ig", baseline="eos", **kwargs)
        cuda = explain(gpu, text, "ig", baseline="eos", **kwargs)
        assert cuda.status == "ok"
        assert abs(cuda.delta[0]) <= 0.05 * max(abs(cuda.expected[0]), 1e-3)
        r = np.corrcoef(cpu.scores[0], cuda.scores[0])[0, 1]
        assert r >= 0.99, (text, r)


def test_the_default_model_chooses_the_same_on_cuda(default_lm):
    """Real weights: packed scores equal per-candidate forwards on CUDA and the CPU's float32
    scores, and IG of the choice on the GPU agrees with the CPU's (on this prompt neither
    converges within 512 knots from the pad baseline: the same status on both)."""
    gpu = on_gpu(default_lm, torch.float32, DEVICE)
    text = default_lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": KITCHEN}], add_generation_prompt=True, tokenize=False
    )
    cpu_obj = prepare_choice(default_lm, text, COMMANDS)
    gpu_obj = prepare_choice(gpu, text, COMMANDS)
    with torch.no_grad():
        on_cpu = cpu_obj.candidate_scores(cpu_obj.input_embeddings.unsqueeze(0))[0]
        on_cuda = gpu_obj.candidate_scores(gpu_obj.input_embeddings.unsqueeze(0))[0].cpu()
    torch.testing.assert_close(on_cuda, one_by_one(gpu, text, COMMANDS), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(on_cuda, on_cpu, atol=2e-2, rtol=1e-3)
    assert cpu_obj.chosen == gpu_obj.chosen
    cpu = explain(default_lm, text, "ig", candidates=COMMANDS, steps="auto")
    cuda = explain(gpu, text, "ig", candidates=COMMANDS, steps="auto")
    assert cuda.status == cpu.status
    assert np.argmax(cpu.scores[0]) == np.argmax(cuda.scores[0])
    assert np.corrcoef(cpu.scores[0], cuda.scores[0])[0, 1] >= 0.99
