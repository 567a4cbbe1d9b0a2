"""Concept directions in the residual stream, and random directions of equal norm.

A direction lives at one `resid` layer (0 = embeddings .. L, as `workbench.anatomy` numbers
them) and is written there by `explainers.concepts.steering`. Four sources:

- ``means``: mean(positive) - mean(negative) of the layer's states (the class-mean
  difference; with contrastive pairs this is CAA, Rimsky et al. 2024);
- ``probe``: a logistic-regression probe's weight vector (standardised features, mapped
  back to the raw space), scaled so that moving by it changes the probe's logit as much as
  moving from the negative to the positive class mean does;
- ``caa``: Contrastive Activation Addition: for pairs of prompts that differ in the
  concept (in CAA, the same question answered A or B), the mean over pairs of the
  difference of the states at the answer's token (the last);
- ``actadd``: Activation Addition (Turner et al. 2023): the difference of the states of
  two prompts ("Love" - "Hate") at every position, the shorter padded at its end with the
  tokenizer's space; it is added at the first positions of the steered prompt, so the
  vector is [positions, D] rather than [D].

Every direction remembers the model and width it came from; using it with another model
fails with one line. Random directions have the same shape and the same (Frobenius) norm,
Gaussian before scaling, from a seeded generator.

    >>> d = class_mean_direction(features, labels, concept="in(knife, I)", layer=12,
    ...                          model="SmolLM2-135M-Instruct")            # doctest: +SKIP
    >>> d.save("knife.npz"); ConceptDirection.load("knife.npz").check_model(lm)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.models import LoadedModel

SOURCES = ("means", "probe", "caa", "actadd", "random")
MIN_CONCEPT_EXAMPLES = 5  # of each class: fewer give a direction that is mostly noise


@dataclass
class ConceptDirection:
    """A direction at one resid layer: [D], or [positions, D] for ActAdd (added at the
    prompt's first positions)."""

    concept: str
    layer: int
    vector: np.ndarray
    source: str
    model: str
    n_positive: int = 0
    n_negative: int = 0
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return int(self.vector.shape[-1])

    @property
    def norm(self) -> float:
        return float(np.linalg.norm(self.vector))

    @property
    def per_position(self) -> bool:
        return self.vector.ndim == 2

    def check_model(self, lm: LoadedModel, layers: int | None = None) -> None:
        """One line if this direction cannot be used with `lm` (another width, or a layer
        the model lacks; `layers` = its number of resid layers)."""
        width = int(lm.model.get_input_embeddings().weight.shape[1])
        if self.width != width:
            raise WorkbenchError(
                f"direction {self.concept!r} has width {self.width} (from {self.model}); "
                f"{lm.name} has width {width}"
            )
        if layers is not None and not 0 <= self.layer < layers:
            raise WorkbenchError(
                f"direction {self.concept!r} is at layer {self.layer}; {lm.name} has resid "
                f"layers 0 .. {layers - 1}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Everything but the vector (JSON)."""
        return {
            "concept": self.concept,
            "layer": self.layer,
            "source": self.source,
            "model": self.model,
            "width": self.width,
            "shape": list(self.vector.shape),
            "norm": self.norm,
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "extras": self.extras,
        }

    def save(self, path: str | Path) -> Path:
        """An .npz file: the vector and this direction's record."""
        path = Path(path)
        if path.suffix != ".npz":
            raise WorkbenchError(f"a direction file ends in .npz, not {path.name!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part.npz")
        np.savez(tmp, vector=self.vector.astype(np.float32), meta=json.dumps(self.to_dict()))
        tmp.replace(path)  # no half-written file under the real name
        return path

    @classmethod
    def load(cls, path: str | Path) -> ConceptDirection:
        path = Path(path)
        if not path.is_file():
            raise WorkbenchError(f"no direction file at {str(path)!r}")
        try:
            with np.load(path, allow_pickle=False) as data:
                vector = np.asarray(data["vector"], dtype=np.float32)
                meta = json.loads(str(data["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise WorkbenchError(f"{path.name} is not a direction file ({exc})") from None
        return cls(
            concept=meta["concept"],
            layer=int(meta["layer"]),
            vector=vector,
            source=meta["source"],
            model=meta["model"],
            n_positive=int(meta.get("n_positive", 0)),
            n_negative=int(meta.get("n_negative", 0)),
            extras=meta.get("extras", {}),
        )


def check_classes(concept: str, labels: np.ndarray) -> tuple[int, int]:
    """(positives, negatives), or one line when either is below MIN_CONCEPT_EXAMPLES."""
    positive = int(labels.sum())
    negative = int(len(labels) - positive)
    if min(positive, negative) < MIN_CONCEPT_EXAMPLES:
        raise WorkbenchError(
            f"concept {concept!r} has {positive} positive and {negative} negative examples; "
            f"a direction needs at least {MIN_CONCEPT_EXAMPLES} of each"
        )
    return positive, negative


def mean_difference(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """mean(features[labels]) - mean(features[~labels]) over the first axis."""
    labels = np.asarray(labels, dtype=bool)
    return (features[labels].mean(0) - features[~labels].mean(0)).astype(np.float32)


def probe_vector(features: np.ndarray, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A standardised L2 logistic regression's weights in the raw space, scaled so that
    their dot product with the class-mean difference equals their squared norm (a step
    of one direction moves the probe's logit as far as the mean difference does)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    labels = np.asarray(labels, dtype=bool)
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    probe.fit(scaler.transform(features), labels)
    w = probe.coef_[0] / np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    delta = mean_difference(features, labels)
    w2 = float(w @ w)
    if w2 == 0.0:
        return np.zeros_like(delta)
    return (w * float(w @ delta) / w2).astype(np.float32)


def concept_direction(
    features: np.ndarray,
    labels: Sequence[bool],
    *,
    concept: str,
    layer: int,
    model: str,
    source: str = "means",
    seed: int = 0,
) -> ConceptDirection:
    """The direction of `concept` at `layer` from states [N, D] labelled positive/negative,
    by class means or a probe."""
    if source not in ("means", "probe"):
        raise WorkbenchError(f"a concept's direction comes from means or probe, not {source!r}")
    y = np.asarray(labels, dtype=bool)
    positive, negative = check_classes(concept, y)
    x = np.asarray(features, dtype=np.float32)
    vector = mean_difference(x, y) if source == "means" else probe_vector(x, y, seed)
    return ConceptDirection(concept, layer, vector, source, model, positive, negative)


def bootstrap_directions(
    features: np.ndarray, labels: Sequence[bool], source: str, runs: int, seed: int = 0
) -> np.ndarray:
    """[runs, D] directions from resamples of the examples (with replacement, within each
    class): the spread of a concept's TCAV score that comes from its examples alone."""
    y = np.asarray(labels, dtype=bool)
    x = np.asarray(features, dtype=np.float32)
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    out = []
    for _ in range(runs):
        pick = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        xs, ys = x[pick], y[pick]
        out.append(mean_difference(xs, ys) if source == "means" else probe_vector(xs, ys, seed))
    return np.stack(out)


def concept_vectors(
    features: np.ndarray, labels: Sequence[bool], source: str, resamples: int, seed: int = 0
) -> np.ndarray:
    """[resamples, L, D] for states [N, L, D]: per layer, the direction fitted on all the
    examples first, then `resamples - 1` from bootstrap resamples (TCAV's concept runs)."""
    if source not in ("means", "probe"):
        raise WorkbenchError(f"a concept's direction comes from means or probe, not {source!r}")
    check_classes("concept", np.asarray(labels, dtype=bool))
    per_layer = []
    for k in range(features.shape[1]):
        x = np.asarray(features[:, k], dtype=np.float32)
        y = np.asarray(labels, dtype=bool)
        full = mean_difference(x, y) if source == "means" else probe_vector(x, y, seed)
        rest = bootstrap_directions(x, y, source, resamples - 1, seed)
        per_layer.append(np.concatenate([full[None], rest.reshape(-1, x.shape[1])]))
    return np.stack(per_layer, axis=1)


def random_like(direction: ConceptDirection, n: int, seed: int = 0) -> list[ConceptDirection]:
    """`n` random directions of `direction`'s shape and norm (the control)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        v = rng.standard_normal(direction.vector.shape).astype(np.float32)
        v *= direction.norm / max(float(np.linalg.norm(v)), 1e-12)
        out.append(replace(direction, concept=f"random {k}", vector=v, source="random", extras={}))
    return out


def random_vectors(shape: tuple[int, ...], norms: np.ndarray, n: int, seed: int) -> np.ndarray:
    """[n, *shape] Gaussian vectors, each row's last axis scaled to `norms` (one norm per
    leading index of `shape`, e.g. per layer for shape [L, D])."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, *shape)).astype(np.float32)
    scale = np.asarray(norms, dtype=np.float32) / np.maximum(np.linalg.norm(v, axis=-1), 1e-12)
    return v * scale[..., None]


def caa_direction(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    *,
    concept: str = "caa",
    batch_size: int = 16,
) -> ConceptDirection:
    """CAA: the mean over (positive, negative) prompt pairs of the difference of their
    states at `layer`, at each prompt's last token (the answer the pair differs in)."""
    from explainers.probing.features import extract_features
    from explainers.probing.probes import ProbeExample

    if len(pairs) < 1:
        raise WorkbenchError("CAA needs at least one (positive, negative) prompt pair")
    examples = [ProbeExample(text, "", -1) for pair in pairs for text in pair]
    states, _ = extract_features(lm, examples, [layer], batch_size)
    states = states[:, 0].reshape(len(pairs), 2, -1)
    vector = (states[:, 0] - states[:, 1]).mean(0).astype(np.float32)
    return ConceptDirection(
        concept, layer, vector, "caa", lm.name, len(pairs), len(pairs), {"pairs": len(pairs)}
    )


def actadd_direction(
    lm: LoadedModel, plus: str, minus: str, layer: int, *, concept: str | None = None
) -> ConceptDirection:
    """ActAdd: states(plus) - states(minus) at `layer`, position by position, the shorter
    prompt padded at its end with the tokenizer's encoding of a space ([positions, D])."""
    from workbench.anatomy import residuals

    tok = lm.tokenizer
    a = tok(plus, add_special_tokens=True)["input_ids"]
    b = tok(minus, add_special_tokens=True)["input_ids"]
    space = tok(" ", add_special_tokens=False)["input_ids"] or [tok.pad_token_id or 0]
    n = max(len(a), len(b))
    a = a + space[-1:] * (n - len(a))
    b = b + space[-1:] * (n - len(b))
    import torch

    ids = torch.tensor([a, b])
    states = residuals(lm, [layer], input_ids=ids)[layer].float().cpu().numpy()
    vector = (states[0] - states[1]).astype(np.float32)
    name = concept or f"{plus} - {minus}"
    return ConceptDirection(
        name, layer, vector, "actadd", lm.name, 1, 1, {"plus": plus, "minus": minus}
    )
