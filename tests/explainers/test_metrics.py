"""Metric definitions against values worked out by hand, and faithfulness on a known model.

ferret-xai (the reference the issue names) does not install alongside this environment: its
release pins captum<0.8, shap<0.45, transformers 4.x and numpy<2, which would downgrade the
project's stack. So the definitions are checked on toy predictors whose values are computed
by hand below (ERASER's AOPC, RISE's curves, ferret's hard-rationale F1/IOU and AUPRC).
"""

from __future__ import annotations

import numpy as np
import pytest

from explainers import explain
from explainers.explanation import Explanation
from explainers.metrics import (
    auprc,
    comprehensiveness,
    decision_flip,
    deletion_curve,
    evaluate,
    insertion_curve,
    kendall_tau,
    random_explanation,
    sufficiency,
    token_f1,
    token_iou,
)
from explainers.metrics.plausibility import parse_rationale
from explainers.objective import prepare
from tests.explainers.conftest import copy_inputs
from workbench.errors import WorkbenchError

pytestmark = pytest.mark.usefixtures("single_thread")

# An additive toy model: p(kept units) = sum of the kept units' weights; p(x) = 0.8.
WEIGHTS = np.array([0.4, 0.1, 0.3, 0.0])
SCORES = [3.0, 1.0, 2.0, 0.0]  # a perfect ranking: unit 0, then 2, then 1, then 3


def additive(keep: np.ndarray) -> np.ndarray:
    return np.asarray(keep, dtype=float) @ WEIGHTS


def test_comprehensiveness_and_sufficiency_by_hand():
    # Bins 25% and 50% of 4 units: top-1 = {0}, top-2 = {0, 2}.
    comp, drops = comprehensiveness(SCORES, additive, 0.8, fractions=(0.25, 0.5))
    assert drops == pytest.approx([0.8 - 0.4, 0.8 - 0.1]) and comp == pytest.approx(0.55)
    suff, kept = sufficiency(SCORES, additive, 0.8, fractions=(0.25, 0.5))
    assert kept == pytest.approx([0.8 - 0.4, 0.8 - 0.7]) and suff == pytest.approx(0.25)
    # ERASER's bins 1/5/10/20/50% of 4 units remove 1, 1, 1, 1 and 2 units.
    comp, _ = comprehensiveness(SCORES, additive, 0.8)
    assert comp == pytest.approx((4 * 0.4 + 0.7) / 5)
    # A reversed ranking is less comprehensive and less sufficient.
    worse, _ = comprehensiveness(SCORES[::-1], additive, 0.8, fractions=(0.25, 0.5))
    assert worse < 0.55


def test_deletion_and_insertion_areas_by_hand():
    deletion = deletion_curve(SCORES, additive)
    assert deletion.fractions == [0, 0.25, 0.5, 0.75, 1.0]
    assert deletion.values == pytest.approx([0.8, 0.4, 0.1, 0.0, 0.0])
    assert deletion.area == pytest.approx(0.25 * (0.6 + 0.25 + 0.05 + 0.0))
    insertion = insertion_curve(SCORES, additive)
    assert insertion.values == pytest.approx([0.0, 0.4, 0.7, 0.8, 0.8])
    assert insertion.area == pytest.approx(0.25 * (0.2 + 0.55 + 0.75 + 0.8))


def test_decision_flip_and_kendall_tau():
    label_of = lambda keep: np.asarray(keep)[:, 0].astype(int)  # noqa: E731  label 1 iff unit 0 kept
    assert decision_flip(SCORES, label_of, 1) == 1.0
    assert decision_flip([0.0, 1.0, 2.0, 3.0], label_of, 1) == 0.0
    assert kendall_tau(SCORES, WEIGHTS) == pytest.approx(1.0)
    assert kendall_tau(SCORES[::-1], WEIGHTS) == pytest.approx(-1.0)
    assert np.isnan(kendall_tau([1.0, 1.0, 1.0], WEIGHTS[:3]))


def test_plausibility_by_hand():
    rationale = [1, 0, 0, 1]  # hard rationale: top-2 = units {0, 2}
    assert token_f1(SCORES, rationale) == pytest.approx(0.5)  # P = R = 1/2
    assert token_iou(SCORES, rationale) == pytest.approx(1 / 3)  # |{0}| / |{0, 2, 3}|
    assert token_f1(SCORES, rationale, k=1) == pytest.approx(2 / 3)  # P = 1, R = 1/2
    assert auprc([0.9, 0.1], [1, 0]) == pytest.approx(1.0)
    # Ranked wrong: PR points (R=0, P=1), (R=0, P=0), (R=1, P=1/2); trapezoid area 1/4.
    assert auprc([0.1, 0.9], [1, 0]) == pytest.approx(0.25)
    assert np.isnan(auprc([0.1, 0.9], [0, 0]))


def test_rationale_parsing_and_errors(tmp_path):
    assert parse_rationale("0,1,1,0") == [0, 1, 1, 0]
    assert parse_rationale("[1, 0]") == [1, 0]
    path = tmp_path / "r.txt"
    path.write_text("0 1\n1\n")
    assert parse_rationale(str(path)) == [0, 1, 1]
    with pytest.raises(WorkbenchError, match="only 0 and 1"):
        parse_rationale("0,2")
    with pytest.raises(WorkbenchError, match="no such file"):
        parse_rationale("missing.txt")
    with pytest.raises(WorkbenchError, match="3 values but the explanation has 4 tokens"):
        token_f1(SCORES, [1, 0, 1])


def test_evaluate_reports_every_metric_per_row_and_their_mean(tiny_causal):
    text = "the milk is in the fridge Q"
    exp = explain(tiny_causal, text, target="milk open", method="occlusion")
    result = evaluate(exp, tiny_causal, rationale=[0, 1, 0, 0, 0, 0, 0])
    assert len(result.rows) == 2
    for name in (
        "comprehensiveness",
        "sufficiency",
        "deletion_auc",
        "insertion_auc",
        "decision_flip",
        "kendall_tau_loo",
        "token_f1",
        "token_iou",
        "auprc",
    ):
        per_row = [row[name] for row in result.rows]
        assert result.metrics[name] == pytest.approx(np.nanmean(per_row))
    # Occlusion *is* leave-one-out (deletion): its rank agreement with it is perfect.
    assert result.metrics["kendall_tau_loo"] == pytest.approx(1.0)
    with pytest.raises(WorkbenchError, match="rationale has 3 values but the input has 7 tokens"):
        evaluate(exp, tiny_causal, rationale=[0, 1, 0])


def test_word_level_explanations_are_judged_by_words(tiny_causal):
    exp = explain(
        tiny_causal, "the milk is in the fridge Q", target="milk", method="ig", aggregate="word"
    )
    result = evaluate(exp, tiny_causal)
    assert result.params["units"] == "word"
    assert len(result.curves[0]["deletion"]["fractions"]) == 8  # 0..7 words removed


def test_faithfulness_of_ig_and_occlusion_beats_random(trained_copy_model):
    comp = {"ig": [], "occlusion": [], "random": []}
    for i, (text, answer) in enumerate(copy_inputs(8)):
        for method in ("ig", "occlusion"):
            exp = explain(trained_copy_model, text, target=answer, method=method)
            comp[method].append(evaluate(exp, trained_copy_model).metrics["comprehensiveness"])
        rand = random_explanation(exp, seed=i)
        comp["random"].append(evaluate(rand, trained_copy_model).metrics["comprehensiveness"])
    means = {k: float(np.mean(v)) for k, v in comp.items()}
    # Measured: ig ~0.86, occlusion ~0.90, random ~0.29 (probability drop, AOPC).
    assert means["ig"] > means["random"] + 0.3, means
    assert means["occlusion"] > means["random"] + 0.3, means


def test_metrics_are_stored_with_their_explanation(tiny_causal, store):
    from tests.store_reads import metric_summary
    from workbench.store.metrics import get_metrics, save_metrics

    exp = explain(tiny_causal, "the milk is in the fridge Q", target="milk", method="occlusion")
    result = evaluate(exp, tiny_causal)
    with pytest.raises(WorkbenchError, match="save the explanation first"):
        result.save(store)
    exp.save(store)
    result.explanation_id = exp.id
    result.save(store)
    result.save(store)  # re-evaluating replaces, never duplicates
    means = {r["name"]: r["value"] for r in get_metrics(store, exp.id, include_rows=False)}
    assert means["comprehensiveness"] == pytest.approx(result.metrics["comprehensiveness"])
    rows = [r for r in get_metrics(store, exp.id) if r["name"] == "deletion_auc"]
    assert [r["row"] for r in rows] == [None, 0]
    assert rows[1]["details"]["curve"]["fractions"][0] == 0
    summary = {(r["method"], r["name"]): r["n"] for r in metric_summary(store)}
    assert summary[("occlusion", "comprehensiveness")] == 1
    with pytest.raises(WorkbenchError, match="no explanation with id 'nope'"):
        save_metrics(store, "nope", result.records())
    assert "m030_metrics" in store.applied_migrations()


def test_removal_bins_of_each_convention():
    from explainers.metrics.faithfulness import ERASER, FERRET, removal_bins

    scores = [0.5, -0.2, 3.0, 0.0, 1.0, -1.0, 2.0]  # positive units by rank: 2, 6, 4, 0

    def sets(bins):
        return [None if b is None else set(np.flatnonzero(b)) for b in bins]

    # ERASER: 1/5/10/20/50% of 7 units, rounded up: 1, 1, 1, 2, 4 units; signed ranking.
    assert sets(removal_bins(scores, ERASER)) == [{2}, {2}, {2}, {2, 6}, {0, 2, 4, 6}]
    # ferret: 10..100% rounded down: 0, 1, 2, 2, 3, 4, 4, 5, 6, 7 units, positive ones only,
    # a set equal to the last one kept left out (the 5-7 unit bins add no positive unit).
    assert sets(removal_bins(scores, FERRET)) == [
        None,
        {2},
        {2, 6},
        None,
        {2, 4, 6},
        {0, 2, 4, 6},
        None,
        None,
        None,
        None,
    ]
    assert sets(removal_bins([-1.0, -2.0], FERRET)) == [None] * 10


def test_ferret_convention_on_a_tiny_classifier_by_hand(tiny_classifier):
    """ferret-xai 0.4.2's definitions, worked through on a 7-token input of a real model.

    Probabilities come from the model's own forward over token ids (not the metric code's
    embedding path); the bins, the hard rationale and the PR curve are written out by hand.
    """
    import torch

    from explainers.registry import get_method

    lm = tiny_classifier
    text = "the red apple is on the table"
    obj = prepare(lm, text, "pos")
    ids = obj.prompt_ids.tolist()
    assert len(ids) == 7 and not obj.special_mask.any()
    scores = [0.5, -0.2, 3.0, 0.0, 1.0, -1.0, 2.0]
    exp = Explanation.from_objective(get_method("occlusion"), obj, [scores])

    def p(keep: list[int]) -> float:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([[ids[i] for i in keep]])).logits
        return float(torch.softmax(logits[0], -1)[2])  # label "pos"

    full = p(list(range(7)))
    # ferret bins: {2}, {2, 6}, {2, 4, 6}, {0, 2, 4, 6}, each once.
    bins = [[2], [2, 6], [2, 4, 6], [0, 2, 4, 6]]
    comp = np.mean([full - p([i for i in range(7) if i not in b]) for b in bins])
    suff = np.mean([full - p(b) for b in bins])
    rationale = [0, 0, 1, 0, 0, 1, 0]
    result = evaluate(exp, lm, rationale=rationale, convention="ferret")
    assert result.params["convention"] == "ferret"
    assert result.metrics["comprehensiveness"] == pytest.approx(comp, abs=1e-5)
    assert result.metrics["sufficiency"] == pytest.approx(suff, abs=1e-5)
    per_bin = result.curves[0]["comprehensiveness_bins"]
    assert [i for i, d in enumerate(per_bin) if d is not None] == [1, 2, 4, 5]
    # Hard rationale: the top 5 are 2, 6, 4, 0, 3; unit 3 scores 0, so {0, 2, 4, 6}.
    # Against {2, 5}: tp = 1, precision 1/4, recall 1/2 -> F1 1/3; IOU 1 / |{0,2,4,5,6}|.
    assert result.metrics["token_f1"] == pytest.approx(1 / 3)
    assert result.metrics["token_iou"] == pytest.approx(1 / 5)
    # AUPRC of the scores clipped at 0 (units 1, 3, 5 tie at 0): PR points (R, P) by
    # threshold 3, 2, 1, 0.5, 0 are (1/2, 1), (1/2, 1/2), (1/2, 1/3), (1/2, 1/4), (1, 2/7);
    # area = 1/2 x 1 + 1/2 x (1/4 + 2/7) / 2 = 71/112.
    assert result.metrics["auprc"] == pytest.approx(71 / 112)

    # The same explanation under ERASER: bins {2} x3, {2, 6}, {0, 2, 4, 6}; k = 2 -> {2, 6};
    # signed scores rank unit 5 last: thresholds down to -0.2 keep recall 1/2, precision
    # falling to 1/6, then (1, 2/7): area = 1/2 + 1/2 x (1/6 + 2/7) / 2 = 103/168.
    eraser = evaluate(exp, lm, rationale=rationale, convention="eraser")
    weights = [[2], [2], [2], [2, 6], [0, 2, 4, 6]]
    comp = np.mean([full - p([i for i in range(7) if i not in b]) for b in weights])
    assert eraser.metrics["comprehensiveness"] == pytest.approx(comp, abs=1e-5)
    assert eraser.metrics["token_f1"] == pytest.approx(0.5)
    assert eraser.metrics["token_iou"] == pytest.approx(1 / 3)
    assert eraser.metrics["auprc"] == pytest.approx(103 / 168)
    with pytest.raises(WorkbenchError, match="convention must be eraser or ferret, not 'x'"):
        evaluate(exp, lm, convention="x")


def test_higher_is_better_covers_every_metric_the_tables_show():
    from explainers.metrics import (
        FAITHFULNESS,
        HIGHER_IS_BETTER,
        PLAUSIBILITY,
        PROBE_METRICS,
        better,
    )

    assert set(HIGHER_IS_BETTER) == {*FAITHFULNESS, *PLAUSIBILITY, *PROBE_METRICS}
    assert (better("sufficiency"), better("selectivity")) == ("lower", "higher")
    assert better("control_accuracy") == "lower"
