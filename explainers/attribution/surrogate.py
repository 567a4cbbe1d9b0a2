"""Captum's surrogate-model methods (Lime, KernelShap) over an `Objective`.

The interpretable representation is one binary feature per removable prompt token (special
tokens are never features): 1 keeps the token, 0 removes it (perturbation.py). Captum draws
the binary samples and fits the surrogate; the model calls are ours: a sample batch goes
through `evaluate_kept` in one batched forward, and every target row's value is cached by
sample. Captum runs once: its interpretable model is wrapped so that the one fit it asks
for is a multi-output fit to every target row's values on the same samples, weights and
model, which equals one captum run per row seeded alike (the reference, with
`ONE_FIT_FOR_ALL_ROWS = False`; rows cost neither model calls nor captum's sampling).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.perturbation import evaluate_kept, removable_positions
from explainers.explainer import Progress
from explainers.objective import Objective
from explainers.params import Int

# Builds the captum attribution object (Lime, KernelShap) around a forward function.
CaptumFactory = Callable[[Callable[[torch.Tensor], torch.Tensor]], object]

# One captum run and one multi-output fit for every target row; False runs captum once per
# row (the reference the tests compare with).
ONE_FIT_FOR_ALL_ROWS = True

SMALL_FIT = 1 << 18  # samples x features up to which the fit runs on one BLAS thread


class CachedBinaryForward:
    """z [B, F] in {0, 1} -> objective values [B, rows], each distinct z evaluated once."""

    def __init__(
        self,
        obj: Objective,
        removal: str,
        baseline: str,
        batch_size: int | None,
        progress: Progress | None = None,
        expected_samples: int = 0,
    ):
        self.obj, self.removal, self.baseline, self.batch_size = obj, removal, baseline, batch_size
        self.positions = removable_positions(obj)
        self.cache: dict[bytes, torch.Tensor] = {}
        self.progress, self.expected_samples = progress, expected_samples

    def _report(self, done: int, _: int) -> None:
        # Distinct samples evaluated so far, against the samples asked for (repeats are free).
        if self.progress is not None:
            total = max(self.expected_samples, len(self.cache) + done)
            self.progress(min(len(self.cache) + done, total), total)

    @property
    def n_features(self) -> int:
        return int(self.positions.numel())

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        keys = [(row > 0.5).numpy().tobytes() for row in z.detach().cpu()]
        missing = sorted({k for k in keys if k not in self.cache})
        if missing:
            keep = torch.zeros(len(missing), len(self.obj.prompt_ids), dtype=torch.bool)
            for i, key in enumerate(missing):
                flags = torch.from_numpy(np.frombuffer(key, dtype=np.bool_).copy())
                keep[i, self.positions] = flags
            values, _ = evaluate_kept(
                self.obj, keep, self.removal, self.baseline, self.batch_size, self._report
            )
            for key, value in zip(missing, values):
                self.cache[key] = value
        return torch.stack([self.cache[k] for k in keys])


class AllRowsFit:
    """Stands in for captum's interpretable model: the data captum hands to `fit` (binary
    samples, one row's values, similarity weights) is refitted with every row's values as a
    multi-output target of the same model; `representation` answers captum with the first
    row's coefficients, `coefficients` holds all rows' ([rows, F])."""

    def __init__(self, inner, forward: CachedBinaryForward):
        self.inner, self.forward = inner, forward
        self.coefficients: torch.Tensor | None = None

    def fit(self, train_data, **kwargs):
        from torch.utils.data import DataLoader, TensorDataset

        xs, ws = [], []
        for batch in train_data:
            xs.append(batch[0])
            if len(batch) == 3:
                ws.append(batch[2])
        x = torch.cat(xs)
        y = self.forward(x).float()
        data = (x, y, torch.cat(ws)) if ws else (x, y)
        with warnings.catch_warnings(), _blas_threads(x.numel()):
            # captum converts a multi-output intercept slowly, and says so
            warnings.filterwarnings("ignore", message="Creating a tensor from a list")
            loader = DataLoader(TensorDataset(*data), batch_size=len(x))
            result = self.inner.fit(loader, **kwargs)
        self.coefficients = self.inner.representation().reshape(y.shape[1], -1)
        return result

    def representation(self) -> torch.Tensor:
        if self.coefficients is None:
            raise RuntimeError("representation() before fit(): fit the surrogate first")
        return self.coefficients[:1]


def _blas_threads(size: int):
    """One BLAS thread for a small fit: a 200 x 256 least-squares problem ran 9 ms on one
    thread and 74 ms on two busy cores; larger fits keep the library's threads."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1) if size <= SMALL_FIT else contextlib.nullcontext()


def surrogate_attribution(
    obj: Objective,
    factory: CaptumFactory,
    n_samples: int,
    removal: str,
    baseline: str,
    seed: int,
    batch_size: int | None,
    progress: Progress | None = None,
    **own: Any,
) -> Attribution:
    """[rows, P] surrogate coefficients per prompt token, with the number of model calls;
    `own`: the method's own parameters, recorded with the shared ones."""
    forward = CachedBinaryForward(obj, removal, baseline, batch_size, progress, n_samples)
    scores = np.zeros((obj.n_rows, len(obj.prompt_ids)))
    if forward.n_features > 0:
        scores[:, forward.positions.numpy()] = _coefficients(forward, factory, n_samples, seed)
        if progress is not None:
            progress(len(forward.cache), len(forward.cache))
    params = {"n_samples": n_samples, "removal": removal, **own, "seed": seed}
    used = baseline if removal == "replace" else None
    return Attribution(scores, params, used, extras={"model_calls": len(forward.cache)})


def _coefficients(
    forward: CachedBinaryForward, factory: CaptumFactory, n_samples: int, seed: int
) -> np.ndarray:
    """[rows, F] the captum surrogate's coefficients of every target row."""
    coefficients = np.zeros((forward.obj.n_rows, forward.n_features))
    inputs = torch.ones(1, forward.n_features)
    baselines = torch.zeros(1, forward.n_features)
    rows = [0] if ONE_FIT_FOR_ALL_ROWS else range(forward.obj.n_rows)
    for row in rows:
        method = factory(lambda z, row=row: forward(z)[:, row])
        if ONE_FIT_FOR_ALL_ROWS:
            fit = AllRowsFit(method.interpretable_model, forward)  # type: ignore[attr-defined]
            method.interpretable_model = fit  # type: ignore[attr-defined]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            coef = method.attribute(  # type: ignore[attr-defined]
                inputs, baselines=baselines, n_samples=n_samples, perturbations_per_eval=256
            )
        if ONE_FIT_FOR_ALL_ROWS:
            assert fit.coefficients is not None
            coefficients[:] = fit.coefficients.detach().double().numpy()
        else:
            coefficients[row] = coef[0].detach().double().numpy()
    return coefficients


class SurrogateExplainer(AttributionExplainer):
    """What Lime and KernelShap share: captum fits a surrogate to `n_samples` random token
    removals (`surrogate_attribution`); a subclass's `attribute` says which captum method."""

    reports_progress = True
    param_checks = {"n_samples": Int(min=2)}
