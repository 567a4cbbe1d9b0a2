"""SAE features on the agent's own prompts: training, labels from the game, and decisions.

A play run records every prompt the agent read and the facts true when it read it, so the
runs are a labelled data set for SAE features: `train_on_texts` reads a layer's residual
stream over the prompts (and any text data set), trains a TopK SAE, scores it (held-out
FVU, L0, dead features, the spliced-in loss against zero ablation), labels every feature
by the fact it separates best (AUROC), and saves it in SAELens's format with its feature
table beside it.

`feature_ablation` is the bridge's check: for each decision of a run, the labelled feature
with the largest attribution is removed, and so is a random feature that fired about as
strongly; does the choice change more often without the labelled one?

    >>> texts = run_texts(store, ["valid-ft"], lm)                      # doctest: +SKIP
    >>> result = train_on_texts(lm, texts, layer=15, out="saes/l15")
    >>> result.report.fvu, result.spliced.recovered, result.labelled_facts
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.concepts import choice_of, run_decisions
from explainers.sae.activations import collect_activations
from explainers.sae.attribution import ablate_features, feature_attribution
from explainers.sae.evaluate import SplicedLoss, spliced_loss
from explainers.sae.labels import (
    FeatureLabel,
    distinct_labelled,
    encode_rows,
    label_features,
    save_labels,
    scored_facts,
)
from explainers.sae.model import SAEInfo, SparseAutoencoder, check_sae_for
from explainers.sae.train import TrainConfig, TrainReport, split_rows, train_sae
from workbench import distributed
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.stats import Interval, PairedTest, mcnemar, wilson_interval
from workbench.store import Store

Progress = Callable[..., None]  # progress(done, total, description=phase)


@dataclass
class SAEText:
    """One text the SAE reads, and the facts true for it (None: not known)."""

    text: str
    facts: list[str] | None = None


def run_texts(
    store: Store | None, runs: Sequence[str], lm: LoadedModel, max_decisions: int | None = None
) -> list[SAEText]:
    """Every LLM decision's prompt of `runs` (as the model read it, in its chat template)
    with the facts true at that step."""
    texts = []
    for run in runs:
        texts += [
            SAEText(d.spec.text, d.facts) for d in run_decisions(store, run, lm, max_decisions)
        ]
    return texts


def dataset_texts(path: str | Path) -> list[SAEText]:
    """A JSONL file's texts: one object a line with `text` (or `prompt`) and optionally
    `facts` (a list of strings)."""
    file = Path(path)
    if not file.is_file():
        raise WorkbenchError(f"no data set at {str(file)!r}")
    texts = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise WorkbenchError(f"{file.name} line {number} is not JSON") from None
        text = record.get("text", record.get("prompt")) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise WorkbenchError(f"{file.name} line {number} has no text (or prompt) string")
        facts = record.get("facts")
        if facts is not None and not (
            isinstance(facts, list) and all(isinstance(f, str) for f in facts)
        ):
            raise WorkbenchError(f"{file.name} line {number}: facts must be a list of strings")
        texts.append(SAEText(text, facts))
    if not texts:
        raise WorkbenchError(f"{file.name} holds no texts")
    return texts


@dataclass
class SAETraining:
    """A trained SAE and what was measured of it."""

    folder: str
    info: SAEInfo
    report: TrainReport
    spliced: SplicedLoss
    rows: int
    texts: int
    extraction_seconds: float
    labelled_features: int
    labelled_facts: int
    scored_facts: int
    top_labelled: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["spliced"] = self.spliced.to_dict()
        return out


def check_out(out: str | Path) -> Path:
    """An SAE's folder: new, or an empty folder (never half-overwrites another SAE)."""
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise WorkbenchError(f"the SAE folder {str(path)!r} exists and is not an empty folder")
    if not path.parent.exists():
        raise WorkbenchError(f"the SAE folder's parent {str(path.parent)!r} does not exist")
    return path


def train_on_texts(
    lm: LoadedModel,
    texts: Sequence[SAEText],
    layer: int,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    dataset: str = "",
    batch_size: int = 8,
    spliced_texts: int = 32,
    pool: str = "max",
    progress: Progress | None = None,
) -> SAETraining | None:
    """Read `layer`'s residual stream over `texts`, train an SAE on it, score it, label its
    features by the texts' facts, and save it all in `out` (see the module). Under
    torchrun every rank reads a share of the texts and rank 0 does the rest (the others get
    None)."""
    model_anatomy(lm).check_layers("resid", [layer])
    folder = check_out(out)
    if not texts:
        raise WorkbenchError("no texts to train an SAE on")
    config = config or TrainConfig()
    step = _phase(progress)
    started = time.perf_counter()
    acts = collect_activations(
        lm, [t.text for t in texts], layer, batch_size, step("reading activations")
    )
    extraction = time.perf_counter() - started
    if not distributed.is_main():
        return None
    sae, report = train_sae(acts, config, step("training the SAE"))
    _, held = split_rows(acts, report.config["heldout"], report.config["seed"])
    held_texts = sorted(set(acts.text[held].tolist()))[:spliced_texts]
    spliced = spliced_loss(
        lm, sae, layer, [texts[i].text for i in held_texts], batch_size, step("spliced-in loss")
    )
    code = encode_rows(sae, acts.values)
    table = label_features(sae, acts, [t.facts for t in texts], lm.tokenizer, pool=pool, code=code)
    anatomy = model_anatomy(lm)
    info = SAEInfo(
        model=lm.identity.to_dict(),
        layer=layer,
        hook_name=anatomy.name("resid", layer),
        context_size=max(len(t) for t in acts.tokens),
        dataset=dataset,
        report={**report.to_dict(), "spliced": spliced.to_dict()},
    )
    summary = _label_summary(table, texts, pool)
    result = SAETraining(
        folder=str(folder.resolve()),
        info=info,
        report=report,
        spliced=spliced,
        rows=len(acts),
        texts=len(texts),
        extraction_seconds=extraction,
        **{k: v for k, v in summary.items() if k != "pool"},
    )
    _save(folder, sae, info, table, summary)
    return result


@dataclass
class Relabelling:
    """An SAE's features labelled anew: how many a fact labels, over which texts."""

    folder: str
    texts: int
    rows: int
    pool: str
    labelled_features: int
    labelled_facts: int
    scored_facts: int
    top_labelled: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def relabel(
    lm: LoadedModel,
    folder: str | Path,
    texts: Sequence[SAEText],
    *,
    pool: str = "max",
    batch_size: int = 8,
    progress: Progress | None = None,
) -> Relabelling | None:
    """Label a trained SAE's features anew on `texts` and their facts (other runs, or the
    other `pool`), replacing its `features.json`. Under torchrun rank 0 labels (the others
    get None)."""
    from explainers.sae.labels import check_pool
    from explainers.sae.model import load_sae

    check_pool(pool)
    sae, info = load_sae(folder)
    check_sae_for(info, sae, lm.identity.to_dict(), int(lm.embeddings.weight.shape[-1]))
    if not any(t.facts for t in texts):
        raise WorkbenchError("no text has facts to label the features by")
    step = _phase(progress)
    acts = collect_activations(
        lm, [t.text for t in texts], info.layer, batch_size, step("reading activations")
    )
    if not distributed.is_main():
        return None
    table = label_features(sae, acts, [t.facts for t in texts], lm.tokenizer, pool=pool)
    summary = _label_summary(table, texts, pool)
    save_labels(folder, table, summary)
    return Relabelling(
        folder=str(Path(folder).resolve()), texts=len(texts), rows=len(acts), **summary
    )


def _phase(progress: Progress | None) -> Callable[[str], Callable[[int, int], None] | None]:
    if progress is None:
        return lambda _: None
    return lambda name: lambda done, total: progress(done, total, description=name)


def _label_summary(
    table: list[FeatureLabel], texts: Sequence[SAEText], pool: str
) -> dict[str, Any]:
    """How many features a fact labels, of how many facts scored, and the best per fact."""
    labelled = [f for f in table if f.labelled]
    return {
        "pool": pool,
        "labelled_features": len(labelled),
        "labelled_facts": distinct_labelled(table),
        "scored_facts": len(scored_facts([t.facts for t in texts])),
        "top_labelled": [_brief(f) for f in _best_per_fact(labelled)],
    }


def _best_per_fact(labelled: list[FeatureLabel]) -> list[FeatureLabel]:
    best: dict[str, FeatureLabel] = {}
    for f in sorted(labelled, key=lambda f: -(f.auroc or 0)):
        best.setdefault(f.fact or "", f)
    return list(best.values())


def _brief(f: FeatureLabel) -> dict[str, Any]:
    token = f.top[0]["token"] if f.top else ""
    return {"feature": f.feature, "fact": f.fact, "auroc": f.auroc, "top_token": token}


def _save(
    folder: Path,
    sae: SparseAutoencoder,
    info: SAEInfo,
    table: list[FeatureLabel],
    summary: dict[str, Any],
) -> None:
    """Everything is written in a temporary folder beside `folder`, then moved into place:
    a failure leaves no half-written SAE."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        sae.save(tmp, info)
        save_labels(tmp, table, summary)
        if folder.exists():
            folder.rmdir()  # empty (check_out)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# -- the bridge: does a labelled feature carry the decision? ---------------------------------


@dataclass
class DecisionAblation:
    """One decision: its labelled feature of largest |mass| and a random control feature
    of about the same activation, each removed."""

    episode_id: str
    step: int
    chosen: str
    feature: int
    fact: str | None
    mass: float
    flipped: bool
    delta: float
    control: int
    control_flipped: bool
    control_delta: float


@dataclass
class AblationResult:
    """Over the decisions: how often removing the labelled feature changes the choice,
    against removing the control (Wilson intervals; the paired exact McNemar test, with
    A the control and B the labelled feature), and the objective's mean changes."""

    decisions: list[DecisionAblation]
    skipped: int  # decisions where no labelled feature fired
    flips: Interval
    control_flips: Interval
    test: PairedTest
    mean_delta: float
    mean_control_delta: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_ablation(
    store: Store | None,
    run: str,
    lm: LoadedModel,
    sae: SparseAutoencoder,
    info: SAEInfo,
    labels: dict[int, dict[str, Any]],
    *,
    steps: int = 8,
    max_decisions: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> AblationResult:
    """For each decision of `run`: the labelled feature (a fact's AUROC >= 0.95 in
    `labels`) of largest |attribution| is removed, and so is a control feature drawn at
    random among the others that fired within 25% of its summed activation (the closest
    one where none did); see the module."""
    check_sae_for(info, sae, lm.identity.to_dict(), int(lm.embeddings.weight.shape[-1]))
    labelled = {j for j, f in labels.items() if f.get("labelled")}
    if not labelled:
        raise WorkbenchError("the SAE has no labelled feature (AUROC >= 0.95 for a fact)")
    rng = np.random.default_rng(seed)
    items = run_decisions(store, run, lm, max_decisions)
    out: list[DecisionAblation] = []
    skipped = 0
    for n, item in enumerate(items, 1):
        spec = item.spec
        obj = choice_of(lm, spec, spec.chosen)
        attribution = feature_attribution(obj, sae, info.layer, steps=steps, ablate=0)
        ranked = [(j, m) for j, m in attribution.top(len(attribution.features)) if j in labelled]
        if not ranked:
            skipped += 1
            continue
        feature, mass = ranked[0]
        activation = dict(zip(attribution.features, attribution.activations))
        control = _control(activation, feature, rng)
        gone, control_gone = ablate_features(obj, sae, info.layer, [feature, control])
        out.append(
            DecisionAblation(
                spec.episode_id,
                spec.step,
                spec.chosen,
                feature,
                labels[feature].get("fact"),
                mass,
                gone.flipped,
                gone.delta,
                control,
                control_gone.flipped,
                control_gone.delta,
            )
        )
        if progress is not None:
            progress(n, len(items))
    return _summary(out, skipped)


def _control(activation: dict[int, float], feature: int, rng: np.random.Generator) -> int:
    target = activation[feature]
    others = [j for j in activation if j != feature]
    if not others:
        raise WorkbenchError("only one feature fired: no control feature to compare with")
    close = [j for j in others if abs(activation[j] - target) <= 0.25 * abs(target)]
    if close:
        return int(rng.choice(sorted(close)))
    return min(others, key=lambda j: (abs(activation[j] - target), j))


def _summary(rows: list[DecisionAblation], skipped: int) -> AblationResult:
    if not rows:
        raise WorkbenchError("no decision had a labelled feature among its active features")
    n = len(rows)
    return AblationResult(
        decisions=rows,
        skipped=skipped,
        flips=wilson_interval(sum(r.flipped for r in rows), n),
        control_flips=wilson_interval(sum(r.control_flipped for r in rows), n),
        test=mcnemar([r.control_flipped for r in rows], [r.flipped for r in rows]),
        mean_delta=float(np.mean([r.delta for r in rows])),
        mean_control_delta=float(np.mean([r.control_delta for r in rows])),
    )
