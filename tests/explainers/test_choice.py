"""Choice objectives: the packed forward equals one forward per candidate, the objective
explains what decides the choice, and IG stays complete under it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainers import explain, known_methods
from explainers.choice import prepare_choice
from explainers.metrics.evaluation import explanation_objective
from tests.explainers.conftest import copy_inputs
from tests.explainers.test_ig import OBJECTS
from workbench.errors import WorkbenchError
from workbench.prefix_cache import compute_prefix

TEXT = "the milk is in the fridge open the door Q"
CANDIDATES = ["take milk", "open fridge door", "cook", "eat an apple"]


def one_by_one(lm, ids: list[int], candidates: list[str]) -> torch.Tensor:
    """Summed log-probability of each candidate, one full forward per candidate."""
    out = []
    for c in candidates:
        cid = lm.tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([ids + cid])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        out.append(sum(float(lp[len(ids) - 1 + i, t]) for i, t in enumerate(cid)))
    return torch.tensor(out)


@pytest.mark.parametrize("model", ["tiny_causal", "tiny_gpt2"])
def test_packed_scores_equal_one_forward_per_candidate(model, request):
    lm = request.getfixturevalue(model)
    obj = prepare_choice(lm, TEXT, CANDIDATES, "cook")
    ids = obj.prompt_ids.tolist()
    with torch.no_grad():
        packed = obj.candidate_scores(obj.input_embeddings.unsqueeze(0))[0]
    torch.testing.assert_close(packed, one_by_one(lm, ids, CANDIDATES), atol=1e-4, rtol=1e-4)

    # Shorter variants padded at the end (deletion), each scored as its own prompt.
    variants = [np.array(ids), np.array(ids[:3] + ids[5:]), np.array(ids[:-2])]
    with torch.no_grad():
        logp = obj.log_probs_for_ids(variants, filler=0)[:, 0]
    for variant, row in zip(variants, logp):
        expected = torch.log_softmax(one_by_one(lm, variant.tolist(), CANDIDATES), -1)
        torch.testing.assert_close(row, expected, atol=1e-4, rtol=1e-4)


def test_prefix_cache_and_masks_give_the_full_forwards_scores(tiny_causal):
    obj = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    x = obj.input_embeddings.unsqueeze(0)
    mask = torch.ones(1, x.shape[1])
    mask[0, 5:7] = 0
    with torch.no_grad():
        prefix, _ = compute_prefix(tiny_causal.model, 4, input_ids=obj.prompt_ids.unsqueeze(0))
        full = obj.candidate_scores(x, attention_mask=mask)
        cached = obj.candidate_scores(x[:, 4:], attention_mask=mask[:, 4:], prefix=prefix, start=4)
        unmasked = obj.candidate_scores(x)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full, unmasked)  # the hidden tokens mattered


def test_scores_follow_the_agents_score_mode_and_offsets(tiny_causal):
    base = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    mean = prepare_choice(
        tiny_causal, TEXT, CANDIDATES, "cook", score_mode="mean", offsets=[0, 3.0, 0, 0]
    )
    x = base.input_embeddings.unsqueeze(0)
    with torch.no_grad():
        sums, adjusted = base.candidate_scores(x)[0], mean.candidate_scores(x)[0]
    lengths = torch.tensor([2.0, 3.0, 1.0, 3.0])
    torch.testing.assert_close(adjusted, sums / lengths - torch.tensor([0, 3.0, 0, 0]))


def test_choice_puts_its_mass_on_the_token_that_decides(trained_copy_model):
    """The copy model's choice among the objects is decided by the one object word."""
    for text, answer in copy_inputs(4, seed=7):
        exp = explain(
            trained_copy_model,
            text,
            "ig",
            target=answer,
            candidates=OBJECTS,
            objective="choice",
            baseline="eos",
            steps="auto",
        )
        top = exp.input_tokens[int(np.argmax(exp.scores[0]))]
        assert top == answer, (text, top)
        assert exp.target_tokens == [f"choice of {answer!r}"]


@pytest.mark.parametrize("objective", ["choice", "margin"])
def test_ig_is_complete_for_choice_objectives(trained_copy_model, objective):
    text, answer = copy_inputs(1, seed=3)[0]
    exp = explain(
        trained_copy_model,
        text,
        "ig",
        target=answer,
        candidates=OBJECTS,
        objective=objective,
        steps="auto",
    )
    assert exp.status == "ok"
    total = float(exp.scores.sum())
    assert abs(exp.delta[0]) <= 0.05 * max(abs(total), 1e-3)
    # The stored record rebuilds the same objective (metrics re-run it).
    obj = explanation_objective(exp, trained_copy_model)
    assert obj.kind == objective and obj.candidates == OBJECTS
    direct = prepare_choice(trained_copy_model, text, OBJECTS, answer, objective=objective)
    assert float(obj.row_values()[0]) == pytest.approx(float(direct.row_values()[0]))


def test_margin_is_chosen_minus_runner_up(tiny_causal):
    choice = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook")
    margin = prepare_choice(tiny_causal, TEXT, CANDIDATES, "cook", objective="margin")
    with torch.no_grad():
        scores = choice.candidate_scores(choice.input_embeddings.unsqueeze(0))[0]
    others = torch.cat([scores[:2], scores[3:]])
    assert float(margin.row_values()[0]) == pytest.approx(float(scores[2] - others.max()), abs=1e-5)


def test_every_attribution_method_takes_a_choice(tiny_causal, tmp_path):
    from explainers.sae.model import SAEInfo, SparseAutoencoder

    sae = SparseAutoencoder(32, 64, 4).save(
        tmp_path / "sae", SAEInfo(model=tiny_causal.identity.to_dict(), layer=1)
    )
    for name, cls in sorted(known_methods().items()):
        if cls.category != "attribution":
            continue
        small = {"ig": {"steps": 4}, "shap_partition": {"max_evals": 16}}
        small["sae"] = {"sae": str(sae), "steps": 2, "ablate": 1}
        sampled = {"n_samples": 16} if name in ("lime", "kernel_shap", "gradient_shap") else {}
        params = small.get(name, sampled)
        exp = explain(tiny_causal, TEXT, name, candidates=CANDIDATES, **params)
        assert exp.scores.shape == (1, len(exp.input_tokens)), name
        assert exp.target_tokens[0].startswith("choice of"), name


def test_bad_choice_requests_fail_in_one_line(tiny_causal):
    with pytest.raises(WorkbenchError, match="at least two candidates"):
        explain(tiny_causal, TEXT, "saliency", candidates=["cook"])
    with pytest.raises(WorkbenchError, match="not among the candidates"):
        explain(tiny_causal, TEXT, "saliency", target="eat", candidates=CANDIDATES)
    with pytest.raises(WorkbenchError, match="needs candidates"):
        explain(tiny_causal, TEXT, "saliency", objective="margin")
    with pytest.raises(WorkbenchError, match="cannot explain a choice"):
        explain(tiny_causal, TEXT, "attention", candidates=CANDIDATES)
    with pytest.raises(WorkbenchError, match="objective must be"):
        explain(tiny_causal, TEXT, "saliency", candidates=CANDIDATES, objective="best")


def test_the_cli_explains_a_choice_and_a_data_set_of_choices(tiny_model_dir, tmp_path, capsys):
    import json

    from tests.run_cli import run_inprocess

    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_model_dir),
        "--text",
        TEXT,
        "--method",
        "saliency",
        "--candidates",
        "take milk|open fridge door|cook",
        "--target",
        "cook",
        "--objective",
        "margin",
        "--format",
        "json",
        "--no-save",
    )
    assert code == 0, err
    assert json.loads(out)["target_tokens"] == ["margin of 'cook'"]

    data = tmp_path / "choices.jsonl"
    data.write_text(
        json.dumps({"text": TEXT, "candidates": CANDIDATES, "target": "cook"})
        + "\n"
        + json.dumps({"text": "open the box Q", "candidates": ["take milk", "cook"]})
        + "\n"
    )
    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(data),
        "--method",
        "saliency",
        "--format",
        "json",
        "--out",
        "-",
        "--no-save",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[0]["target_tokens"] == ["choice of 'cook'"]
    assert rows[1]["extras"]["candidates"] == ["take milk", "cook"]

    # Bad input: one line, non-zero, before the model loads where it can.
    for args, message in [
        (["--text", TEXT, "--candidates", "cook"], "at least two candidates"),
        (["--text", TEXT, "--objective", "margin"], "needs candidates"),
        (["--text", TEXT, "--candidates", "a|b", "--method", "attention"], "cannot explain"),
        (["--dataset", str(data), "--candidates", "a|b"], "each line gives its own"),
    ]:
        code, out, err = run_inprocess(
            capsys, "explain", "--model", str(tiny_model_dir), *args, "--no-save"
        )
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
