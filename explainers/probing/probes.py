"""Linear probes of hidden states, layer by layer, with control tasks.

A probe is a logistic regression (scikit-learn) from one layer's residual stream at one
token position to a label. High probe accuracy alone shows little: a flexible enough probe
can memorise. Hewitt & Liang 2019 ("Designing and Interpreting Probes with Control Tasks")
train the same probe on a *control task* that gives every word type a random label (drawn
from the real label distribution), so the labels carry no linguistic information and only
memorisation can fit them. Selectivity = accuracy - control accuracy: a good probe of a
real property is accurate and selective.

Here the "word type" of an example is its `control_type` (for the built-in game-state
tasks, the entity the question is about), or else the token at the probed position.

Train/test split by `group` (for game-state data, the game), so the probe is judged on
games it never saw; without groups, a stratified random split.

    >>> from explainers.probing.probes import ProbeDataset, run_probe      # doctest: +SKIP
    >>> data = ProbeDataset.from_jsonl("sentiment.jsonl")
    >>> result = run_probe(lm, data, layers=[0, 6, 12])
    >>> [(r.layer, round(r.selectivity, 2)) for r in result.layers]
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from explainers.explainer import Progress
from explainers.probing.features import extract_features
from workbench import distributed
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError
from workbench.files import read_jsonl
from workbench.models import LoadedModel

if TYPE_CHECKING:
    from workbench.store import Store

MIN_EXAMPLES = 8


@dataclass
class ProbeExample:
    """One input: the probe reads the residual at token `position` (negative from the end)."""

    text: str
    label: str
    position: int = -1
    group: str | None = None
    control_type: str | None = None


@dataclass
class ProbeDataset:
    """Examples for one probing task, e.g. `textworld-state:carried` or a JSONL file."""

    task: str
    examples: list[ProbeExample]

    def __post_init__(self) -> None:
        if len(self.examples) < MIN_EXAMPLES:
            raise WorkbenchError(
                f"task {self.task!r} has {len(self.examples)} examples; a probe needs at "
                f"least {MIN_EXAMPLES}"
            )
        if len(self.labels) < 2:
            raise WorkbenchError(
                f"task {self.task!r} has only one label ({self.labels[0]!r}); a probe needs two"
            )

    @property
    def labels(self) -> list[str]:
        return sorted({e.label for e in self.examples})

    @property
    def groups(self) -> list[str] | None:
        groups = [e.group for e in self.examples]
        return None if any(g is None for g in groups) else groups

    @classmethod
    def from_records(
        cls, task: str, records: list[dict[str, Any]], source: str = ""
    ) -> ProbeDataset:
        """Records shaped like the JSONL lines: text, label, optional position/group/type."""
        where = source or task
        examples = []
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise WorkbenchError(f"{where} line {number}: expected a JSON object")
            for key in ("text", "label"):
                if record.get(key) is None or record.get(key) == "":
                    raise WorkbenchError(f"{where} line {number}: no {key!r}")
            position = record.get("position", -1)
            if not isinstance(position, int) or isinstance(position, bool):
                raise WorkbenchError(
                    f"{where} line {number}: position must be a token index, not {position!r}"
                )
            group, ctype = record.get("group"), record.get("type")
            examples.append(
                ProbeExample(
                    text=str(record["text"]),
                    label=str(record["label"]),
                    position=position,
                    group=None if group is None else str(group),
                    control_type=None if ctype is None else str(ctype),
                )
            )
        return cls(task, examples)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> ProbeDataset:
        """Lines of {"text": ..., "label": ..., "position"?: int, "group"?: str, "type"?: str}."""
        path = Path(path)
        records = [record for _, record in read_jsonl(path, "dataset")]
        return cls.from_records(f"jsonl:{path.name}", records, source=path.name)


@dataclass
class LayerProbe:
    """One layer's figures (accuracies on the held-out split)."""

    layer: int
    accuracy: float
    control_accuracy: float
    selectivity: float
    majority: float  # accuracy of always answering the training split's most common label
    n_train: int
    n_test: int


@dataclass
class ProbeResult:
    """Probes for one task on one model, at each probed layer."""

    task: str
    model: str
    layers: list[LayerProbe]
    labels: list[str]
    n_examples: int
    split: str  # "group" (held-out games/groups) or "random"
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # Which weights were probed: `workbench.models.ModelIdentity.to_dict()` (base, adapter
    # and its hash, dtype); `model` alone names only the base model.
    model_info: dict[str, Any] | None = None
    id: str | None = None

    @property
    def best(self) -> LayerProbe:
        return max(self.layers, key=lambda r: r.selectivity)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, run_id: str | None = None) -> str:
        from workbench.store.probes import save_probe

        self.id = save_probe(store, self.to_dict(), run_id=run_id)
        return self.id


def extract_sharded(
    lm: LoadedModel,
    examples: list[ProbeExample],
    layers: list[int],
    batch_size: int,
    progress: Progress | None = None,
) -> tuple[np.ndarray, list[str]]:
    """`extract_features` split over torchrun ranks (each its block); every rank gets all."""
    blocks = distributed.all_gather(
        [extract_features(lm, distributed.shard(examples), layers, batch_size, progress)]
    )
    return np.concatenate([f for f, _ in blocks]), [t for _, read in blocks for t in read]


def control_labels(types: list[str], labels: list[str], seed: int = 0) -> list[str]:
    """Hewitt & Liang's control task: one random label per type, drawn from the label
    distribution, so that the same type always gets the same (meaningless) label."""
    rng = np.random.default_rng(seed)
    counts = Counter(labels)
    names = sorted(counts)
    p = np.array([counts[n] for n in names], dtype=np.float64)
    assignment = {t: names[rng.choice(len(names), p=p / p.sum())] for t in sorted(set(types))}
    return [assignment[t] for t in types]


def split_indices(
    labels: list[str], groups: list[str] | None, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Held-out groups where there are at least two, else a stratified random split."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if not 0.0 < test_size < 1.0:
        raise WorkbenchError(f"test size must be between 0 and 1, not {test_size}")
    index = np.arange(len(labels))
    if groups is not None and len(set(groups)) >= 2:
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train, test = next(splitter.split(index, labels, groups))
        return train, test, "group"
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 else None
    train, test = train_test_split(index, test_size=test_size, random_state=seed, stratify=stratify)
    return np.asarray(train), np.asarray(test), "random"


def fit_probe(
    x_train: np.ndarray, y_train: list[str], x_test: np.ndarray, y_test: list[str], seed: int
) -> float:
    """Held-out accuracy of a standardised L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(set(y_train)) < 2:
        # One class in training: the only sensible probe answers it everywhere.
        return float(np.mean(np.asarray(y_test) == y_train[0]))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    probe.fit(x_train, y_train)
    return float(probe.score(x_test, y_test))


def run_probe(
    lm: LoadedModel,
    dataset: ProbeDataset,
    layers: list[int] | None = None,
    *,
    batch_size: int = 16,
    test_size: float = 0.25,
    seed: int = 0,
    progress: Progress | None = None,
    on_features: Callable[[np.ndarray], None] | None = None,
) -> ProbeResult:
    """Probe every asked layer (all by default: 0 = embeddings .. L) for `dataset`'s labels.

    Args:
        lm: the model whose residual stream is probed.
        dataset: examples with labels (and groups, for a split by game).
        layers: layer numbers, 0 = embeddings .. L = last block; negative from the end.
        batch_size: examples per forward pass during feature extraction.
        test_size: held-out fraction (of groups, when the dataset has them).
        seed: fixes the split, the control labels and the probes.
        progress: `progress(done, total)` over the examples read (this rank's, under
            torchrun), then the layers probed.
        on_features: called with the features (examples x layers x width) once extracted,
            so that amnesic probing can reuse them instead of reading the model again.
    """
    start = time.perf_counter()
    layer_list = model_anatomy(lm).check_layers("resid", layers)
    examples = dataset.examples
    n_read = len(distributed.shard(examples))
    total = n_read + len(layer_list)

    def report(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    features, read = extract_sharded(lm, examples, layer_list, batch_size, report)
    if on_features is not None:
        on_features(features)
    labels = [e.label for e in examples]
    types = [e.control_type or tok for e, tok in zip(examples, read)]
    control = control_labels(types, labels, seed)
    train, test, split = split_indices(labels, dataset.groups, test_size, seed)
    y, c = np.asarray(labels), np.asarray(control)
    majority_label = Counter(y[train].tolist()).most_common(1)[0][0]
    majority = float(np.mean(y[test] == majority_label))
    results = []
    for k, layer in enumerate(layer_list):
        x = features[:, k]
        accuracy = fit_probe(x[train], y[train].tolist(), x[test], y[test].tolist(), seed)
        control_acc = fit_probe(x[train], c[train].tolist(), x[test], c[test].tolist(), seed)
        results.append(
            LayerProbe(
                layer=layer,
                accuracy=accuracy,
                control_accuracy=control_acc,
                selectivity=accuracy - control_acc,
                majority=majority,
                n_train=len(train),
                n_test=len(test),
            )
        )
        report(n_read + k + 1, total)
    return ProbeResult(
        task=dataset.task,
        model=lm.name,
        model_info=lm.identity.to_dict(),
        layers=results,
        labels=dataset.labels,
        n_examples=len(examples),
        split=split,
        params={"test_size": test_size, "seed": seed, "probe": "logistic regression (L2, C=1)"},
        seconds=time.perf_counter() - start,
    )
