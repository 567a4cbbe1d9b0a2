"""Amnesic probing (Elazar et al. 2021, "Amnesic Probing: Behavioral Explanation with
Amnesic Counterfactuals"): a probe says a property is *present* in a layer; removing the
probe's direction from the residual stream and watching the model's prediction says
whether the model *uses* it.

Per layer: a probe (the same standardised logistic regression as `explainers.probing`) is
trained on the training split; its weight vectors, mapped back to the raw residual space,
span the directions it reads. With `iterations` > 1 this is iterative nullspace projection
(Ravfogel et al. 2020): a new probe is trained on the projected features and its
directions are added, until `iterations` rounds. The residual stream at that layer is then
projected onto their orthogonal complement, at every position, and the log-probability of
the target (by default the model's own next token on the unmodified input) is measured on
held-out examples. The control is the same projection of as many random directions (seeded):
a drop larger than the random ones' means the model uses what the probe found.

    >>> from explainers.causal.amnesic import amnesic_probing          # doctest: +SKIP
    >>> result = amnesic_probing(lm, dataset, layers=[0, 10, 20])
    >>> [(r.layer, round(r.logprob_change, 2), round(r.random_change, 2)) for r in result.layers]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from explainers.probing.features import extract_features
from explainers.probing.probes import ProbeDataset, ProbeResult, fit_probe, split_indices
from workbench.anatomy import HookPoint, Hooks, model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel


@dataclass
class AmnesicLayer:
    """One layer: what projecting out the probe's directions did, against random ones."""

    layer: int
    n_directions: int
    accuracy: float  # the probe's held-out accuracy
    accuracy_after: float  # a new probe's, trained and tested on the projected features
    logprob_change: float  # mean change of log p(target) with the probe's directions removed
    random_change: float  # the same for random directions (mean over draws)
    random_std: float  # spread of the random draws' mean changes
    n_examples: int

    @property
    def excess(self) -> float:
        """How much more the probe's directions move the target than random ones."""
        return self.logprob_change - self.random_change


@dataclass
class AmnesicResult:
    task: str
    model: str
    layers: list[AmnesicLayer]
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    model_info: dict[str, Any] | None = None  # workbench.models.ModelIdentity.to_dict()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for row, layer in zip(data["layers"], self.layers):
            row["excess"] = layer.excess
        return data


def probe_directions(
    x: np.ndarray, y: list[str], iterations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal [D, r] directions the probe reads (raw residual space) and the
    projection [D, D] onto their complement (iterative nullspace projection)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    dims = x.shape[1]
    basis = np.zeros((dims, 0))
    projection = np.eye(dims)
    for _ in range(iterations):
        if len(set(y)) < 2:
            break
        scaler = StandardScaler().fit(x @ projection)
        probe = LogisticRegression(max_iter=2000, random_state=seed)
        probe.fit(scaler.transform(x @ projection), y)
        # w . (xP - mu) / sigma = (P (w / sigma)) . x + const: the raw direction is P w/sigma.
        raw = projection @ (probe.coef_ / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)).T
        raw -= basis @ (basis.T @ raw)
        q, r = np.linalg.qr(raw)
        keep = np.abs(np.diag(r)) > 1e-8 * max(1.0, float(np.abs(r).max()))
        if not keep.any():
            break
        basis = np.concatenate([basis, q[:, keep]], axis=1)
        projection = np.eye(dims) - basis @ basis.T
    return basis, projection


def random_directions(dims: int, count: int, seed: int, layer: int, draw: int) -> np.ndarray:
    rng = np.random.default_rng([seed, layer, draw])
    q, _ = np.linalg.qr(rng.standard_normal((dims, count)))
    return q


def amnesic_probing(
    lm: LoadedModel,
    dataset: ProbeDataset,
    layers: list[int] | None = None,
    *,
    target: str | None = None,
    iterations: int = 1,
    n_random: int = 5,
    max_examples: int = 32,
    batch_size: int = 8,
    test_size: float = 0.25,
    seed: int = 0,
    features: np.ndarray | None = None,
    probe: ProbeResult | None = None,
) -> AmnesicResult:
    """Project each layer's probe directions out of the residual stream and measure the
    target's log-probability change against random directions of the same dimension.

    Args:
        lm: a causal LM (the measure is its next-token log-probability).
        dataset: the probing task's examples (labels, groups for a split by game).
        layers: residual layers, 0 = embeddings .. L; negative from the end; all by default.
        target: a continuation scored after every example's text; default: the token the
            model predicts there on the unmodified input.
        iterations: rounds of iterative nullspace projection (1: the probe's own directions).
        n_random: random draws of as many directions, the control.
        max_examples: held-out examples the log-probability is averaged over.
        batch_size: examples per forward pass (each with 1 + n_random projections).
        test_size / seed: the split (the same as `run_probe`'s with the same seed), probes
            and random directions.
        features / probe: what `run_probe` extracted (its `on_features`) and found for the
            same dataset, layers, test_size and seed: reused, not computed again.
    """
    start = time.perf_counter()
    if lm.kind != "causal":
        raise WorkbenchError(
            f"amnesic probing needs a causal LM (it measures the next token's log-probability); "
            f"{lm.name} is a classifier"
        )
    for name, value, low in (("iterations", iterations, 1), ("n_random", n_random, 1)):
        if value < low:
            raise WorkbenchError(f"{name} must be >= {low}")
    if max_examples < 1 or batch_size < 1:
        raise WorkbenchError("max_examples and batch_size must be >= 1")
    hooks = model_anatomy(lm)
    layer_list = hooks.check_layers("resid", layers)
    examples = dataset.examples
    if features is None:
        features, _ = extract_features(lm, examples, layer_list)
    probed = {r.layer: r.accuracy for r in probe.layers} if probe is not None else {}
    labels = [e.label for e in examples]
    train, test, split = split_indices(labels, dataset.groups, test_size, seed)
    chosen = [int(i) for i in test[:max_examples]]
    texts = [examples[i].text for i in chosen]
    scorer = _Scorer(lm, texts, target, batch_size)
    y = np.asarray(labels)
    results = []
    for k, layer in enumerate(layer_list):
        x = features[:, k].astype(np.float64)
        basis, projection = probe_directions(x[train], y[train].tolist(), iterations, seed)
        accuracy = probed.get(layer)
        if accuracy is None:
            accuracy = fit_probe(x[train], y[train].tolist(), x[test], y[test].tolist(), seed)
        after = fit_probe(
            x[train] @ projection, y[train].tolist(), x[test] @ projection, y[test].tolist(), seed
        )
        count = basis.shape[1]
        # A layer where the features do not vary (a fixed token's embedding) gives the
        # probe nothing to read: nothing is projected out, and nothing changes.
        changes = np.zeros((1 + n_random, len(chosen)))
        if count:
            bases = [basis] + [
                random_directions(x.shape[1], count, seed, layer, d) for d in range(n_random)
            ]
            changes = scorer.changes(hooks.point(hooks.name("resid", layer)), bases)
        random_means = changes[1:].mean(axis=1)
        results.append(
            AmnesicLayer(
                layer=layer,
                n_directions=count,
                accuracy=accuracy,
                accuracy_after=after,
                logprob_change=float(changes[0].mean()),
                random_change=float(random_means.mean()),
                random_std=float(random_means.std()),
                n_examples=len(chosen),
            )
        )
    return AmnesicResult(
        task=dataset.task,
        model=lm.name,
        model_info=lm.identity.to_dict(),
        layers=results,
        params={
            "target": target,
            "iterations": iterations,
            "n_random": n_random,
            "max_examples": max_examples,
            "test_size": test_size,
            "seed": seed,
            "split": split,
            "projection": "all positions, uncentred (Elazar et al. 2021)",
        },
        seconds=time.perf_counter() - start,
    )


class _Scorer:
    """The target's log-probability after each example, with and without projections."""

    def __init__(self, lm: LoadedModel, texts: list[str], target: str | None, batch_size: int):
        self.lm = lm
        self.batch_size = batch_size
        tok = lm.tokenizer
        self.prompts = [tok(t, add_special_tokens=True)["input_ids"] for t in texts]
        if target is not None:
            ids = tok(target, add_special_tokens=False)["input_ids"]
            if not ids:
                raise WorkbenchError(f"the target {target!r} tokenizes to nothing")
            self.targets = [list(ids) for _ in texts]
        else:
            self.targets = [[t] for t in self._predicted()]
        self.baseline = self._logprobs(None, None)[0]

    def _predicted(self) -> list[int]:
        out = []
        with torch.no_grad():
            for ids in self.prompts:
                logits = self.lm.model(input_ids=torch.tensor([ids], device=self.lm.device)).logits
                out.append(int(logits[0, -1].argmax()))
        return out

    def changes(self, point: HookPoint, bases: list[np.ndarray]) -> np.ndarray:
        """[variants, examples] change of the target's log-probability per projection."""
        stacked = torch.tensor(np.stack(bases), dtype=torch.float32, device=self.lm.device)
        return self._logprobs(point, stacked) - self.baseline[None]

    def _logprobs(self, point: HookPoint | None, bases: torch.Tensor | None) -> np.ndarray:
        """[variants, examples] summed target log-probabilities; variant v projects out
        `bases[v]` at `point` (no projection without bases)."""
        variants = 1 if bases is None else bases.shape[0]
        out = np.zeros((variants, len(self.prompts)))
        tok = self.lm.tokenizer
        pad = tok.pad_token_id or 0
        size = self.batch_size
        for k in range(0, len(self.prompts), size):
            chunk = range(k, min(k + size, len(self.prompts)))
            seqs = [self.prompts[i] + self.targets[i][:-1] for i in chunk]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(seqs), width), pad, dtype=torch.long)
            mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, : len(s)] = torch.tensor(s)
                mask[r, : len(s)] = 1
            # Rows: every example under variant 0, then under variant 1, ...
            ids = ids.repeat(variants, 1).to(self.lm.device)
            mask = mask.repeat(variants, 1).to(self.lm.device)
            with Hooks() as active, torch.no_grad():
                if point is not None and bases is not None:
                    per_row = bases.repeat_interleave(len(seqs), dim=0)  # [rows, D, r]

                    def project(x: torch.Tensor, u: torch.Tensor = per_row) -> torch.Tensor:
                        h, u = x.float(), u.to(x.device)
                        h = h - torch.einsum("bnr,bdr->bnd", torch.einsum("bnd,bdr->bnr", h, u), u)
                        return h.to(x.dtype)

                    active.add(point, project)
                logp = torch.log_softmax(
                    self.lm.model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1
                )
            for v in range(variants):
                for r, i in enumerate(chunk):
                    row = v * len(seqs) + r
                    n_p, tgt = len(self.prompts[i]), self.targets[i]
                    at = torch.arange(n_p - 1, n_p - 1 + len(tgt), device=logp.device)
                    picked = logp[row, at, torch.tensor(tgt, device=logp.device)]
                    out[v, i] = float(picked.sum())
        return out
