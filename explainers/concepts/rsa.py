"""Representational similarity analysis: which layers' geometry mirrors the game state?

For N recorded states, the model's dissimilarity matrix (RDM) at a layer is the cosine (or
correlation) distance between the residual streams at the decision token; the state's RDM
is the Jaccard distance between the sets of true facts. RSA compares the two by Spearman's
rho over the pairs (the upper triangle), as MulCogBench compares a model with brain
recordings.

- Significance: a permutation (Mantel) test that relabels the states, permuting the state
  RDM's rows and columns together; one-sided (rho greater than chance), p = (1 + #perm
  >= observed) / (1 + permutations).
- Noise ceiling, where states repeat (the same facts reached by different histories): the
  repeats are split in two halves, each half's states averaged, and the two halves' model
  RDMs over the repeated states correlated (Spearman, Spearman-Brown corrected to the full
  data). A model RDM correlates with a noiseless reference at most sqrt(reliability)
  (attenuation), which is reported as the ceiling.

    >>> result = rsa(features, facts, layers=[0, 6, 12])              # doctest: +SKIP
    >>> [(r.layer, round(r.rho, 2)) for r in result.layers]            # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.store import Store

METRICS = ("cosine", "correlation", "euclidean", "jaccard")
MIN_STATES = 4


def state_matrix(facts: Sequence[Sequence[str]]) -> np.ndarray:
    """[N, F] booleans: which of all facts seen hold in each state."""
    vocab = sorted({f for state in facts for f in state})
    index = {f: k for k, f in enumerate(vocab)}
    out = np.zeros((len(facts), len(vocab)), dtype=bool)
    for i, state in enumerate(facts):
        out[i, [index[f] for f in state]] = True
    return out


def state_rdm(facts: Sequence[Sequence[str]]) -> np.ndarray:
    """Condensed Jaccard distances between the states' fact sets."""
    from scipy.spatial.distance import pdist

    return pdist(state_matrix(facts), metric="jaccard")


def model_rdm(features: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Condensed distances between the rows of [N, D] (zero rows count as distance 0 to
    each other, not NaN)."""
    from scipy.spatial.distance import pdist

    if metric not in METRICS:
        raise WorkbenchError(f"metric must be {', '.join(METRICS)}, not {metric!r}")
    x = features.astype(np.float64) if metric != "jaccard" else features.astype(bool)
    return np.nan_to_num(pdist(x, metric=metric), nan=0.0)


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    r = rankdata(values)
    r = r - r.mean()
    norm = np.linalg.norm(r)
    return r / norm if norm > 0 else r


def _condensed_index(n: int) -> np.ndarray:
    """[n, n] -> position in the condensed vector (diagonal -1)."""
    i, j = np.triu_indices(n, 1)
    index = np.full((n, n), -1, dtype=np.int64)
    index[i, j] = np.arange(len(i))
    index[j, i] = index[i, j]
    return index


@dataclass
class LayerRSA:
    layer: int
    rho: float
    p_value: float
    ceiling: float | None  # sqrt of the split-half reliability (None: no repeated states)


@dataclass
class RSAResult:
    """RSA of the residual stream against the game state, layer by layer."""

    model: str
    layers: list[LayerRSA]
    n_states: int
    n_unique: int
    n_repeated: int  # states whose facts occur more than once
    metric: str
    params: dict[str, Any] = field(default_factory=dict)
    model_info: dict[str, Any] | None = None
    seconds: float = 0.0
    id: str | None = None

    @property
    def best(self) -> LayerRSA:
        return max(self.layers, key=lambda r: r.rho)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, run_id: str | None = None) -> str:
        from workbench.store.concepts import save_concept_result

        self.id = save_concept_result(store, "rsa", self.to_dict(), run_id=run_id)
        return self.id


def rsa(
    features: np.ndarray,
    facts: Sequence[Sequence[str]],
    layers: Sequence[int],
    *,
    metric: str = "cosine",
    permutations: int = 1000,
    seed: int = 0,
    model: str = "",
) -> RSAResult:
    """RSA of `features` [N, layers, D] (the resid layers `layers`) against the states'
    facts, with a permutation test and noise ceilings (see the module)."""
    n = len(facts)
    if features.shape[0] != n or features.shape[1] != len(layers):
        raise WorkbenchError(
            f"features {tuple(features.shape)} do not match {n} states and {len(layers)} layers"
        )
    if n < MIN_STATES:
        raise WorkbenchError(f"RSA needs at least {MIN_STATES} states, not {n}")
    if permutations < 1:
        raise WorkbenchError(f"permutations must be at least 1, not {permutations}")
    state = state_rdm(facts)
    if np.ptp(state) == 0:
        raise WorkbenchError("every state has the same facts: their dissimilarities are all equal")
    state_ranks = _ranks(state)
    model_ranks = np.stack([_ranks(model_rdm(features[:, k], metric)) for k in range(len(layers))])
    observed = model_ranks @ state_ranks  # Spearman rho = Pearson of ranks, per layer
    index = _condensed_index(n)
    rng = np.random.default_rng(seed)
    exceed = np.zeros(len(layers))
    i, j = np.triu_indices(n, 1)
    for _ in range(permutations):
        perm = rng.permutation(n)
        permuted = state_ranks[index[perm[i], perm[j]]]
        exceed += (model_ranks @ permuted) >= observed - 1e-12
    p_values = (1 + exceed) / (1 + permutations)
    keys = [tuple(sorted(s)) for s in facts]
    ceilings = noise_ceilings(features, keys, metric, seed)
    return RSAResult(
        model=model,
        layers=[
            LayerRSA(int(layer), float(observed[k]), float(p_values[k]), ceilings[k])
            for k, layer in enumerate(layers)
        ],
        n_states=n,
        n_unique=len(set(keys)),
        n_repeated=sum(1 for c in _groups(keys).values() if len(c) > 1),
        metric=metric,
        params={"permutations": permutations, "seed": seed, "state_metric": "jaccard"},
    )


def _groups(keys: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], list[int]]:
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return groups


def noise_ceilings(
    features: np.ndarray, keys: Sequence[tuple[str, ...]], metric: str, seed: int = 0
) -> list[float | None]:
    """Per layer: sqrt of the Spearman-Brown corrected split-half reliability of the model
    RDM over the states that repeat (None when fewer than 3 states repeat)."""
    from scipy.stats import spearmanr

    repeated = [rows for rows in _groups(keys).values() if len(rows) > 1]
    if len(repeated) < 3:
        return [None] * features.shape[1]
    rng = np.random.default_rng(seed)
    halves: list[tuple[list[int], list[int]]] = []
    for rows in repeated:
        rows = list(rng.permutation(rows))
        halves.append((rows[0::2], rows[1::2]))
    out: list[float | None] = []
    for k in range(features.shape[1]):
        a = np.stack([features[h[0], k].mean(0) for h in halves])
        b = np.stack([features[h[1], k].mean(0) for h in halves])
        with warnings.catch_warnings():  # a constant RDM (one token's embedding): no r
            warnings.simplefilter("ignore")
            r = float(spearmanr(model_rdm(a, metric), model_rdm(b, metric)).statistic)
        if not np.isfinite(r):
            out.append(None)
            continue
        reliability = 2 * r / (1 + r) if r > -1 else -1.0
        out.append(float(np.sqrt(max(reliability, 0.0))))
    return out
