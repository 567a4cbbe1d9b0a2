"""The worked case of docs/mistakes.md: the agent's most common mistake, read through the
choice objective's segment masses over every such decision.

For the most common kind of mistake (optimal verb -> chosen verb) it compares, segment by
segment, the decisions that made it with the correct decisions of the same optimal verb
(chosen verb = optimal verb, regret 0): the mean mass of each segment with a bootstrap 95%
interval, and a two-sided Mann-Whitney U test (scipy) with Holm's correction over the
segments. Then the prediction report against three baselines (confidence as the command
reports it; plus log p(chosen); plus the context: number of candidates, prompt length).
Needs a run whose features are stored (`workbench mistakes --run R --predict`).

    python benchmarks/mistake_case.py --db /tmp/goal/w.duckdb --run heldout-default
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = (
    "seg_tips", "seg_history", "seg_observation", "seg_inventory", "seg_recipe",
    "seg_admissible", "margin", "entropy", "attention_summary",
)  # fmt: skip


def bootstrap_mean(values: np.ndarray, seed: int = 0, n: int = 2000) -> list[float]:
    rng = np.random.default_rng(seed)
    if len(values) < 2:
        return [float("nan"), float("nan")]
    means = rng.choice(values, size=(n, len(values)), replace=True).mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over the segments)."""
    order = np.argsort(pvalues)
    m = len(pvalues)
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--method", default="occlusion")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from scipy.stats import mannwhitneyu

    from agents.decision_features import feature_frame
    from agents.mistakes import mistake_report, verb
    from workbench.store import Store

    store = Store(args.db, read_only=True)
    report = mistake_report(store, args.run)
    frame = feature_frame(store, args.run, args.method)
    steps = {(s.episode_id, s.step): s for s in report.steps}
    frame["optimal_verb"] = [verb(steps[(e, s)].optimal_command) for e, s in
                             zip(frame["episode_id"], frame["step"])]  # fmt: skip
    frame["chosen_verb"] = [verb(steps[(e, s)].chosen) for e, s in
                            zip(frame["episode_id"], frame["step"])]  # fmt: skip
    kinds = frame[frame["mistake"]].groupby(["optimal_verb", "chosen_verb"]).size()
    kinds = kinds.sort_values(ascending=False)
    (optimal, chosen), count = kinds.index[0], int(kinds.iloc[0])
    same = frame[frame["optimal_verb"] == optimal]
    wrong = same[same["mistake"] & (same["chosen_verb"] == chosen)]
    right = same[~same["mistake"] & (same["chosen_verb"] == optimal)]
    rows, pvalues = [], []
    for column in COLUMNS:
        a, b = wrong[column].dropna().to_numpy(), right[column].dropna().to_numpy()
        p = float(mannwhitneyu(a, b).pvalue) if len(a) and len(b) else float("nan")
        pvalues.append(p)
        rows.append(
            {
                "feature": column,
                "mistakes_mean": float(a.mean()) if len(a) else None,
                "mistakes_ci": bootstrap_mean(a),
                "correct_mean": float(b.mean()) if len(b) else None,
                "correct_ci": bootstrap_mean(b),
                "mann_whitney_p": p,
            }
        )
    finite = [i for i, p in enumerate(pvalues) if np.isfinite(p)]
    if finite:
        for i, q in zip(finite, holm([pvalues[i] for i in finite])):
            rows[i]["holm_p"] = float(q)
    result = {
        "run": args.run,
        "decisions": len(frame),
        "mistakes": int(frame["mistake"].sum()),
        "kinds": [
            {"optimal": o, "chosen": c, "mistakes": int(n)} for (o, c), n in kinds.head(8).items()
        ],
        "case": {
            "optimal": optimal,
            "chosen": chosen,
            "mistakes": count,
            "correct_same_optimal_verb": len(right),
        },  # fmt: skip
        "segments": rows,
        "examples": {
            "mistake": wrong[["episode_id", "step"]].head(3).to_dict("records"),
            "correct": right[["episode_id", "step"]].head(3).to_dict("records"),
        },
    }
    from agents.mistake_prediction import predict_mistakes

    explanation = [c for c in COLUMNS if c.startswith("seg_")] + [
        "attention_summary",
        "attention_peak",
    ]
    confidence = ("margin", "entropy", "choice")
    result["prediction"] = {}
    for name, baseline, features in [
        ("command (margin, entropy)", ("margin", "entropy"), None),
        ("confidence", confidence, explanation),
        ("confidence + context", (*confidence, "n_candidates", "prompt_tokens"), explanation),
    ]:
        report = predict_mistakes(frame, features=features, baseline=baseline)
        result["prediction"][name] = report.to_dict()["auroc"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
