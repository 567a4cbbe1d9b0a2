"""SAE features on CUDA against float32 on the CPU, on the real default model
($WORKBENCH_TEST_MODEL: its .gguf or folder).

An SAE is trained (on the CPU, in seconds) on the layer-15 stream of kitchen prompts; on the
GPU, the activations read at the precision `--dtype auto` picks must match the CPU's
(r >= 0.99, every row), the SAE's features must be the same ones (the same top feature
per row on most rows), and a decision's attribution to features in float32 on CUDA must be
complete (within 1%) and agree with the CPU's masses (r >= 0.99)."""

from __future__ import annotations

import numpy as np
import pytest

from explainers.choice import prepare_choice
from explainers.sae.activations import collect_activations
from explainers.sae.attribution import feature_attribution
from explainers.sae.train import TrainConfig, train_sae
from tests.gpu.test_concepts_cuda import STATES

pytestmark = pytest.mark.gpu
LAYER = 15


@pytest.fixture(scope="module")
def models(real_models):
    path, cpu, gpu = real_models
    return cpu, gpu, path


@pytest.fixture(scope="module")
def trained(models):
    cpu, _, _ = models
    texts = [text for text, _, _ in STATES]
    acts = collect_activations(cpu, texts, LAYER)
    sae, _ = train_sae(acts, TrainConfig(width=1152, k=16, epochs=40, batch_size=256))
    return texts, acts, sae


def test_activations_on_cuda_match_float32_on_the_cpu(models, trained):
    _, gpu, _ = models
    texts, acts, sae = trained
    there = collect_activations(gpu, texts, LAYER)
    assert np.array_equal(there.text, acts.text) and np.array_equal(there.position, acts.position)
    a, b = acts.values.numpy(), there.values.float().cpu().numpy()
    r = [np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)]
    assert min(r) >= 0.99, min(r)
    same = sae.encode(acts.values).argmax(1) == sae.encode(there.values.float().cpu()).argmax(1)
    assert same.float().mean() >= 0.9


def test_feature_attribution_on_cuda_is_complete_and_matches_the_cpu(models, trained):
    cpu, _, path = models
    from workbench.models import load_model

    gpu = load_model(path, device="cuda", dtype="float32")
    _, _, sae = trained
    text, commands, _ = STATES[1]
    results = [
        feature_attribution(prepare_choice(lm, text, commands), sae, LAYER, steps=16, ablate=3)
        for lm in (cpu, gpu)
    ]
    for result in results:
        assert result.completeness_error < 0.01
    masses = [dict(zip(r.features, r.masses)) for r in results]
    shared = sorted(set(masses[0]) & set(masses[1]))
    assert len(shared) >= 0.9 * len(masses[0])
    r = np.corrcoef([masses[0][j] for j in shared], [masses[1][j] for j in shared])[0, 1]
    assert r >= 0.99, r
    assert [a.feature for a in results[0].ablations] == [a.feature for a in results[1].ablations]
