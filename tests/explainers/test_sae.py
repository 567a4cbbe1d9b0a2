"""SAE features on models with a known answer.

- A tiny Llama whose layer-1 stream is its token embedding (block 0 writes nothing), and
  whose embeddings are a planted sparse code: each of 400 words is 2 of 48 unit atoms with
  random weights. An SAE trained on its activations must recover the atoms, and the fact
  "the decision token holds atom a" must label a feature.
- The planted "key" model (tests/explainers/conftest.py): attribution through an SAE at its
  layer 1 is complete, and ablation is exact.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers.choice import prepare_choice
from explainers.sae.activations import collect_activations, prefix_groups
from explainers.sae.attribution import (
    feature_attribution,
    feature_edit,
    gauss_legendre,
    prompt_stream,
)
from explainers.sae.evaluate import spliced_loss
from explainers.sae.labels import distinct_labelled, label_features, load_labels, save_labels
from explainers.sae.labels import search as find_features
from explainers.sae.model import SAEInfo, SparseAutoencoder, check_sae_for, load_sae
from explainers.sae.train import TrainConfig, train_sae
from tests.conftest import tiny_llama_config, tiny_tokenizer
from tests.explainers.conftest import CANDIDATES, LAYER
from workbench.anatomy import residuals
from workbench.errors import WorkbenchError

ATOMS, WIDTH, VOCAB, ACTIVE = 48, 32, 400, 2


@pytest.fixture(scope="module")
def coded():
    """(lm, dictionary [ATOMS, WIDTH], codes [VOCAB + 3, ATOMS]): the planted-code model."""
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    gen = torch.Generator().manual_seed(1234)  # not the SAE's init seed
    tokenizer = tiny_tokenizer([f"w{i}" for i in range(VOCAB)])
    atoms = torch.randn(ATOMS, WIDTH, generator=gen)
    atoms /= atoms.norm(dim=1, keepdim=True)
    codes = torch.zeros(len(tokenizer), ATOMS)
    for token in range(len(tokenizer)):
        chosen = torch.randperm(ATOMS, generator=gen)[:ACTIVE]
        codes[token, chosen] = torch.rand(ACTIVE, generator=gen) * 2 + 0.5
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size=WIDTH)).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(codes @ atoms)
        block = model.model.layers[0]
        block.self_attn.o_proj.weight.zero_()
        block.mlp.down_proj.weight.zero_()
    return from_pretrained_objects(model, tokenizer, name="coded-llama"), atoms, codes


def _texts(n: int, length: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"w{i}" for i in rng.integers(0, VOCAB, length)) for _ in range(n)]


@pytest.fixture(scope="module")
def coded_sae(coded, single_thread):
    lm, atoms, codes = coded
    texts = _texts(400, 25, seed=1)
    acts = collect_activations(lm, texts, layer=1, batch_size=64)
    config = TrainConfig(width=64, k=ACTIVE, epochs=20, batch_size=256, lr=3e-3, dead_after=3000)
    sae, report = train_sae(acts, config)
    return texts, acts, sae, report


def test_activations_read_every_token_but_the_first_and_shared_prefixes_once(planted):
    lm, prompts, _ = planted
    shared = " ".join(["the milk is in fridge"] * 8)  # 40 tokens in common
    texts = [f"{shared} {p}" for p in prompts[:6]] + prompts[6:10]
    ids = [lm.tokenizer(t)["input_ids"] for t in texts]
    groups = prefix_groups(ids)
    assert sorted(len(m) for m, shared_len in groups if shared_len) == [6]
    acts = collect_activations(lm, texts, LAYER, batch_size=4)
    # each shared token once, every text's own tokens once, no first token
    assert len(acts) == (40 - 1) + sum(len(t) - 40 for t in ids[:6]) + sum(
        len(t) - 1 for t in ids[6:]
    )
    for i in (0, 3, 8):
        full = residuals(lm, [LAYER], input_ids=torch.tensor([ids[i]]))[LAYER][0]
        rows = np.nonzero(acts.text == i)[0]
        torch.testing.assert_close(acts.values[rows], full[acts.position[rows]], atol=1e-5, rtol=0)
    assert (acts.last_rows() >= 0).all()


def test_an_sae_recovers_the_planted_dictionary(coded, coded_sae):
    _, atoms, _ = coded
    _, _, sae, report = coded_sae
    decoder = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=1, keepdim=True)
    best = (atoms @ decoder.T).max(dim=1).values
    assert (best >= 0.9).float().mean() >= 0.9, best
    assert report.fvu < 0.05 and report.l0 <= ACTIVE
    assert report.heldout_rows > 0 and report.train_rows > report.heldout_rows


def test_the_planted_fact_labels_its_feature(coded, coded_sae):
    lm, atoms, codes = coded
    texts, acts, sae, _ = coded_sae
    last = [lm.tokenizer(t)["input_ids"][-1] for t in texts]
    facts = [[f"atom{a}" for a in torch.nonzero(codes[t]).flatten().tolist()] for t in last]
    table = label_features(sae, acts, facts, lm.tokenizer, pool="last")
    assert distinct_labelled(table) >= 20  # of the 48 planted atoms (17 texts each)
    labelled = find_features(table, fact="atom*", labelled_only=True)
    for feature in labelled:  # each labelled feature is its fact's atom
        decoder = sae.W_dec[feature.feature].detach()
        atom = atoms[int(feature.fact.removeprefix("atom"))]
        assert float(atom @ decoder / decoder.norm()) > 0.9, feature
        assert feature.top and feature.top[0]["activation"] > 0
    with pytest.raises(WorkbenchError, match="no feature's best fact matches"):
        find_features(table, fact="atom999")


def test_save_and_load_round_trip_in_saelens_format(coded, coded_sae, tmp_path, tiny_causal):
    lm, _, _ = coded
    _, acts, sae, report = coded_sae
    info = SAEInfo(model=lm.identity.to_dict(), layer=1, hook_name="blocks.1.hook_resid_pre")
    info.report = report.to_dict()
    sae.save(tmp_path / "sae", info)
    config = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert config["architecture"] == "topk" and config["k"] == ACTIVE
    assert config["metadata"]["hook_name"] == "blocks.1.hook_resid_pre"
    loaded, loaded_info = load_sae(tmp_path / "sae")
    x = acts.values[:50]
    torch.testing.assert_close(loaded(x)[0], sae(x)[0])
    assert loaded_info.layer == 1 and loaded_info.report["fvu"] == report.fvu
    check_sae_for(loaded_info, loaded, lm.identity.to_dict(), WIDTH)
    with pytest.raises(WorkbenchError, match="trained on"):
        check_sae_for(loaded_info, loaded, tiny_causal.identity.to_dict(), WIDTH)
    with pytest.raises(WorkbenchError, match="reads width 32"):
        check_sae_for(loaded_info, loaded, lm.identity.to_dict(), 64)
    with pytest.raises(WorkbenchError, match="no cfg.json"):
        load_sae(tmp_path)


def test_sae_lens_loads_the_saved_sae_where_it_installs(coded, coded_sae, tmp_path):
    sae_lens = pytest.importorskip("sae_lens")
    lm, _, _ = coded
    _, acts, sae, _ = coded_sae
    sae.save(tmp_path / "sae", SAEInfo(model=lm.identity.to_dict(), layer=1))
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "sae"), device="cpu")
    x = acts.values[:50]
    torch.testing.assert_close(theirs.encode(x), sae.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(theirs.decode(sae.encode(x)), sae(x)[0], atol=1e-5, rtol=1e-5)


def test_spliced_loss_of_a_near_exact_sae_is_the_clean_loss(coded, coded_sae):
    lm, _, _ = coded
    texts, _, sae, _ = coded_sae
    loss = spliced_loss(lm, sae, 1, texts[:20])
    assert loss.tokens == 20 * 24
    assert abs(loss.spliced - loss.clean) < 0.01  # FVU < 0.05: nearly the model's own


def test_zero_ablation_is_the_floor_that_the_spliced_loss_is_measured_against(planted, key_sae):
    lm, prompts, _ = planted
    texts = [f"{p} {CANDIDATES[0]}" for p in prompts[:20]]
    loss = spliced_loss(lm, key_sae, LAYER, texts)
    assert loss.zero > loss.spliced > 0 and loss.zero > loss.clean
    assert loss.recovered == pytest.approx((loss.zero - loss.spliced) / (loss.zero - loss.clean))
    assert loss.recovered > 0.5


@pytest.fixture(scope="module")
def key_sae(planted, single_thread):
    lm, prompts, labels = planted
    acts = collect_activations(lm, prompts, LAYER, batch_size=16)
    sae, _ = train_sae(acts, TrainConfig(width=64, k=4, epochs=30, batch_size=64, lr=3e-3))
    return sae


@pytest.mark.parametrize("candidates", [CANDIDATES, None])
def test_feature_attribution_is_complete_and_token_masses_sum_to_it(planted, key_sae, candidates):
    lm, prompts, _ = planted
    obj = (
        prepare_choice(lm, prompts[0], candidates)
        if candidates
        else __import__("explainers.objective", fromlist=["prepare"]).prepare(
            lm, prompts[0], " open"
        )
    )
    result = feature_attribution(obj, key_sae, LAYER, steps=16, ablate=3)
    assert result.completeness_error < 0.01
    assert sum(result.positions) == pytest.approx(sum(result.masses) + result.error_mass, abs=1e-5)
    assert result.positions[0] == 0.0 and len(result.positions) == obj.prompt_ids.numel()
    one = feature_attribution(obj, key_sae, LAYER, steps=1, ablate=0)
    assert one.value == pytest.approx(result.value) and one.baseline == pytest.approx(
        result.baseline
    )


def test_ablation_is_exact_and_edits_go_through_the_hook_layer(planted, key_sae):
    lm, prompts, labels = planted
    i = labels.index(True)
    obj = prepare_choice(lm, prompts[i], CANDIDATES)
    result = feature_attribution(obj, key_sae, LAYER, steps=8, ablate=2)
    f = key_sae.encode(prompt_stream(obj, LAYER)[1:])
    for ablation in result.ablations:
        with feature_edit(lm, key_sae, LAYER, {ablation.feature: 0.0}):
            scores = obj.candidate_scores(obj.input_embeddings.unsqueeze(0))
        by_hand = torch.log_softmax(scores[0], -1)[obj.chosen]
        assert float(by_hand) - result.value == pytest.approx(ablation.delta, abs=1e-4)
        assert ablation.activation == pytest.approx(float(f[:, ablation.feature].sum()), rel=1e-5)
        assert ablation.flipped == (int(scores[0].argmax()) != obj.chosen)


def test_gauss_legendre_integrates_polynomials_and_bad_input_is_one_line(coded_sae, tmp_path):
    nodes, weights = gauss_legendre(4)
    assert float(np.sum(weights * nodes**5)) == pytest.approx(1 / 6)
    with pytest.raises(WorkbenchError):
        gauss_legendre(0)
    acts = coded_sae[1]
    few = type(acts)(acts.values[:10], acts.text[:10], acts.position[:10], acts.tokens)
    with pytest.raises(WorkbenchError, match="too few to train"):
        train_sae(few)
    with pytest.raises(WorkbenchError, match="k must be"):
        SparseAutoencoder(8, 4, 5)
    with pytest.raises(WorkbenchError, match="held-out fraction"):
        TrainConfig(heldout=0.9)
    with pytest.raises(WorkbenchError, match="no features.json"):
        load_labels(tmp_path)
    save_labels(tmp_path, [], {"pool": "last"})
    assert load_labels(tmp_path) == ({"pool": "last"}, [])
