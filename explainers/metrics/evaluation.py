"""Evaluate an `Explanation` against its model: every faithfulness metric per target row, the
plausibility metrics when a human rationale is given, and their means over the rows.

The objective is rebuilt from the explanation's input text and target tokens, so stored
explanations can be judged later. The units removed are the explanation's columns (tokens,
or words for a word-aggregated explanation) minus special tokens. Predictions are the
target's probability (exp of its log-probability); with a contrast they are the
log-probability difference itself. Model calls are batched and cached by kept-unit pattern,
so rows and metrics that ask for the same perturbed input share one forward.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> from explainers.metrics import evaluate
    >>> report = evaluate(explain(lm, text, target=" fridge", method="ig"), lm)
    >>> report.metrics["comprehensiveness"]
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from explainers.attribution.perturbation import check_removal, evaluate_kept
from explainers.choice import CHOICE_OBJECTIVES, rebuild_choice
from explainers.explainer import Progress
from explainers.explanation import Explanation
from explainers.metrics import faithfulness as fm
from explainers.metrics import plausibility as pm
from explainers.objective import Objective, prepare, prepare_ids
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

if TYPE_CHECKING:
    from workbench.store import Store


@dataclass
class Evaluation:
    """Metric values for one explanation: `metrics` are means over target rows."""

    method: str
    explanation_id: str | None
    target_tokens: list[str]
    metrics: dict[str, float]
    rows: list[dict[str, float]]
    curves: list[dict[str, Any]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Metric names as top-level keys (means), with per-row values and curves beside."""
        return {
            **{k: _finite(v) for k, v in self.metrics.items()},
            "method": self.method,
            "explanation_id": self.explanation_id,
            "target_tokens": self.target_tokens,
            "rows": [{k: _finite(v) for k, v in r.items()} for r in self.rows],
            "curves": self.curves,
            "params": self.params,
            "seconds": self.seconds,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def records(self) -> list[dict[str, Any]]:
        """Store rows: each metric per target row, and its mean (row None)."""
        out = []
        for name, value in self.metrics.items():
            out.append({"name": name, "value": value, "row": None, "details": self.params})
            for i, row in enumerate(self.rows):
                details: dict[str, Any] = {"target": self.target_tokens[i]}
                if name in ("deletion_auc", "insertion_auc"):
                    curve = self.curves[i][name.removesuffix("_auc")]
                    details["curve"] = curve
                out.append({"name": name, "value": row[name], "row": i, "details": details})
        return out

    def save(self, store: Store) -> None:
        """Write the metric values to the store, linked to the explanation they judge."""
        from workbench.store.metrics import save_metrics

        if self.explanation_id is None:
            raise WorkbenchError("save the explanation first: metrics are stored with its id")
        save_metrics(store, self.explanation_id, self.records())


class ModelOracle:
    """The model as a function of which units are kept: values and predictions, cached."""

    def __init__(
        self,
        obj: Objective,
        units: torch.Tensor,
        removal: str,
        baseline: str,
        progress: Progress | None = None,
    ):
        self.obj, self.units, self.removal, self.baseline = obj, units, removal, baseline
        self.cache: dict[bytes, tuple[torch.Tensor, torch.Tensor]] = {}
        self.scale = "log-ratio" if obj.contrast_ids is not None else "probability"
        self.progress = progress

    def __call__(self, keep_units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keep_units = np.asarray(keep_units, dtype=bool)
        keys = [k.tobytes() for k in keep_units]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        missing = list({keys[i]: i for i in missing}.values())
        if missing:
            kept = torch.from_numpy(keep_units[missing]).float() @ self.units.float()
            values, preds = evaluate_kept(
                self.obj, kept > 0, self.removal, self.baseline, progress=self.progress
            )
            for i, v, p in zip(missing, values, preds):
                self.cache[keys[i]] = (v, p)
        values = torch.stack([self.cache[k][0] for k in keys]).double().numpy()
        preds = torch.stack([self.cache[k][1] for k in keys]).numpy()
        if self.scale == "probability":
            values = np.exp(values)
        return values, preds

    def predictor(self, row: int) -> fm.Predictor:
        return lambda keep: self(keep)[0][:, row]

    def label_predictor(self, row: int):
        return lambda keep: self(keep)[1][:, row]


def explanation_objective(exp: Explanation, lm: LoadedModel) -> Objective:
    """Re-prepare the objective an explanation was computed for (text, target, contrast)."""
    if exp.category == "causal":
        raise WorkbenchError(
            f"{exp.method} scores layers, not input tokens; the metrics judge token attributions"
        )
    if exp.category != "attribution" and exp.scores.shape[1] != len(exp.input_tokens):
        raise WorkbenchError(f"{exp.method} explanations have no per-token scores to evaluate")
    if lm.kind == "classifier":
        target = exp.target_tokens[0] if exp.target_tokens else None
        return prepare(lm, exp.input_text, target)
    if exp.extras.get("objective") in CHOICE_OBJECTIVES:
        obj = rebuild_choice(lm, exp.input_text, exp.extras)
        if obj.target_tokens != exp.target_tokens:
            raise WorkbenchError("the explanation's chosen candidate does not match its record")
        return obj
    target_ids = exp.extras.get("target_ids")
    if target_ids is not None:
        obj = prepare_ids(lm, exp.input_text, target_ids, exp.extras.get("contrast_ids"))
    else:
        contrast = exp.extras.get("contrast_tokens")
        obj = prepare(
            lm,
            exp.input_text,
            "".join(exp.target_tokens),
            contrast="".join(contrast) if contrast else None,
        )
    if obj.target_tokens != exp.target_tokens:
        raise WorkbenchError(
            f"the target {''.join(exp.target_tokens)!r} does not match this model's tokens; "
            "is this the model the explanation was made with?"
        )
    return obj


def explanation_units(exp: Explanation, obj: Objective) -> tuple[torch.Tensor, np.ndarray]:
    """[U, P] prompt positions of each removable column, and the column indices they are."""
    special = obj.special_mask
    if exp.aggregation == "word":
        word_ids = torch.tensor(obj.word_ids)
        if len(exp.input_tokens) != int(word_ids.max()) + 1:
            raise WorkbenchError("the explanation's words do not match this model's tokens")
        columns = [w for w in range(len(exp.input_tokens)) if not special[word_ids == w].any()]
        units = [word_ids == w for w in columns]
    else:
        if exp.input_tokens != obj.input_tokens:
            raise WorkbenchError(
                "the explanation's tokens do not match this model's tokenization of its text; "
                "is this the model it was made with?"
            )
        columns = [p for p in range(len(special)) if not special[p]]
        units = [torch.arange(len(special)) == p for p in columns]
    if not units:
        raise WorkbenchError("the input has no tokens to remove (only special tokens)")
    return torch.stack(units), np.asarray(columns)


def evaluate(
    exp: Explanation,
    lm: LoadedModel,
    rationale: Sequence[int] | None = None,
    *,
    convention: str = "eraser",
    fractions: Sequence[float] | None = None,
    removal: str = "delete",
    baseline: str = "pad",
    max_points: int = fm.MAX_CURVE_POINTS,
    obj: Objective | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Faithfulness of `exp` on `lm` (and plausibility against `rationale`, one 0/1 per column).

    Args:
        convention: "eraser" (ERASER's bins 1-50% rounded up, signed scores, hard rationale
            of the rationale's size) or "ferret" (ferret-xai 0.4.2: bins 10-100% rounded
            down, repeated sets skipped, positive scores only, hard rationale of 5); the
            definitions are in faithfulness.py.
        fractions: AOPC bins, replacing the convention's.
        removal: "delete" (ERASER) or "replace" (a pad/EOS stand-in, see perturbation.py).
        max_points: deletion/insertion curve resolution.
        obj: the explanation's objective when the caller still has it (saves re-preparing).
        progress: `progress(perturbed inputs done, total)` as the model evaluates them.
    """
    start = time.perf_counter()
    check_removal(removal)
    rules = fm.get_convention(convention)
    if fractions is not None and (not fractions or any(not 0 < f <= 1 for f in fractions)):
        raise WorkbenchError("fractions must lie in (0, 1]")
    obj = obj or explanation_objective(exp, lm)
    units, columns = explanation_units(exp, obj)
    truth = None if rationale is None else rationale_columns(exp, rationale, columns)
    oracle = ModelOracle(obj, units, removal, baseline, progress)
    row_metrics = RowMetrics(rules, fractions, max_points, truth)
    scores = [exp.scores[r, columns] for r in range(exp.scores.shape[0])]
    n = len(columns)
    everything, loo_keep = np.ones((1, n), dtype=bool), ~np.eye(n, dtype=bool)
    _prefetch(oracle, row_metrics, scores, [everything, loo_keep])
    full_values, full_preds = oracle(everything)
    loo_values, _ = oracle(loo_keep)
    rows, curves = [], []
    for r, row_scores in enumerate(scores):
        row, curve = row_metrics(
            row_scores,
            oracle.predictor(r),
            oracle.label_predictor(r),
            float(full_values[0, r]),
            int(full_preds[0, r]),
            loo_values[:, r],
        )
        rows.append(row)
        curves.append(curve)
    metrics = {name: _mean([row[name] for row in rows]) for name in rows[0]}
    params = {
        "convention": rules.name,
        "fractions": list(rules.fractions if fractions is None else fractions),
        "removal": removal,
        "scale": oracle.scale,
        "units": exp.aggregation,
        "model_calls": len(oracle.cache),
    }
    return Evaluation(
        method=exp.method,
        explanation_id=exp.id,
        target_tokens=list(exp.target_tokens),
        metrics=metrics,
        rows=rows,
        curves=curves,
        params=params,
        seconds=time.perf_counter() - start,
    )


def rationale_columns(
    exp: Explanation, rationale: Sequence[int], columns: np.ndarray
) -> np.ndarray:
    """The rationale (one 0/1 per input unit) at the scored columns."""
    if len(rationale) != len(exp.input_tokens):
        shown = exp.input_tokens if len(exp.input_tokens) <= 20 else exp.input_tokens[:20]
        raise WorkbenchError(
            f"the rationale has {len(rationale)} values but the input has "
            f"{len(exp.input_tokens)} {exp.aggregation}s {shown}; give one 0/1 per "
            f"{exp.aggregation}"
        )
    return pm.check_rationale(rationale, len(exp.input_tokens))[columns]


@dataclass
class RowMetrics:
    """Every metric of one target row's scores, given the model's answers on perturbations:
    `(row, curve)`, the metric values and the curves they were read from."""

    rules: fm.Convention
    fractions: Sequence[float] | None
    max_points: int
    truth: np.ndarray | None  # the rationale at the scored columns, or None

    def __call__(
        self,
        scores: np.ndarray,
        predict: fm.Predictor,
        predict_label: Callable[[np.ndarray], np.ndarray],
        full: float,
        full_label: int,
        loo: np.ndarray,
    ) -> tuple[dict[str, float], dict[str, Any]]:
        rules = self.rules
        comp, comp_bins = fm.comprehensiveness(scores, predict, full, self.fractions, rules)
        suff, suff_bins = fm.sufficiency(scores, predict, full, self.fractions, rules)
        deletion = fm.deletion_curve(scores, predict, self.max_points)
        insertion = fm.insertion_curve(scores, predict, self.max_points)
        row = {
            "comprehensiveness": comp,
            "sufficiency": suff,
            "deletion_auc": deletion.area,
            "insertion_auc": insertion.area,
            "decision_flip": fm.decision_flip(scores, predict_label, full_label),
            "kendall_tau_loo": fm.kendall_tau(scores, full - loo),
        }
        if self.truth is not None:
            row["token_f1"] = pm.token_f1(scores, self.truth, convention=rules)
            row["token_iou"] = pm.token_iou(scores, self.truth, convention=rules)
            row["auprc"] = pm.auprc(scores, self.truth, convention=rules)
        curve = {
            "full": full,
            "comprehensiveness_bins": comp_bins,
            "sufficiency_bins": suff_bins,
            "deletion": {"fractions": deletion.fractions, "values": deletion.values},
            "insertion": {"fractions": insertion.fractions, "values": insertion.values},
        }
        return row, curve


def _prefetch(
    oracle: ModelOracle,
    row_metrics: RowMetrics,
    scores: list[np.ndarray],
    asked: list[np.ndarray],
) -> None:
    """Ask the model every perturbation the metrics will ask, in few batches.

    The metric functions ask for their perturbations one call at a time; a first pass with a
    recording predictor collects them all, so the model sees them in few batches (prompts of
    equal length together) and the real pass reads the oracle's cache.
    """

    def record(keep: np.ndarray) -> np.ndarray:
        asked.append(np.asarray(keep, dtype=bool))
        return np.zeros(len(keep))

    for row_scores in scores:
        row_metrics(row_scores, record, record, 0.0, 0, np.zeros(len(row_scores)))
    oracle(np.concatenate(asked))


def random_explanation(exp: Explanation, seed: int = 0) -> Explanation:
    """The same input with uniformly random scores: the reference any method should beat."""
    rng = np.random.default_rng(seed)
    data = {**exp.__dict__, "scores": rng.uniform(size=exp.scores.shape), "id": None}
    data.update(method="random", expected=None, delta=None, params={"seed": seed})
    data.update(status="ok", warnings=[])
    return Explanation(**data)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not np.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _finite(value: Any) -> Any:
    # JSON has no NaN: an undefined metric (a constant score vector's tau) becomes null.
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
