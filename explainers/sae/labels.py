"""Features labelled by the game: each feature's top contexts and its AUROC against every fact.

A recorded agent prompt comes with the facts that were true when it was read ("in(knife,
I)": the knife is carried). A feature's value for a text is its largest activation over the
text (`pool="max"`: features fire on tokens, the inventory line's " knife", wherever they
are) or its activation at the decision token (`"last"`, where the probes read); its AUROC
for a fact is how well that value separates the texts where the fact held from those where
it did not (1: perfectly, 0.5: not at all), computed for every feature and fact at once
from the values' ranks (the Mann-Whitney statistic). A feature is *labelled* by its best
fact when that AUROC is at least 0.95. On the fine-tuned agent the decision token's
features read the chat template and the choice at hand: one feature is labelled there,
770 (71 facts) with the max (BENCHMARKS.md).

    >>> table = label_features(sae, acts, facts, tokenizer)           # doctest: +SKIP
    >>> [(f.feature, f.fact, f.auroc) for f in table if f.labelled][:3]
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from explainers.sae.activations import Activations
from explainers.sae.model import SparseAutoencoder
from workbench.errors import WorkbenchError

FEATURES_FILE = "features.json"  # beside the SAE's SAELens files
LABEL_AUROC = 0.95  # the bar for a labelled feature
MIN_EXAMPLES = 5  # a fact needs this many texts where it held, and where it did not
POOLS = ("last", "max")
FACTS_KEPT = 5  # each feature keeps its best facts' AUROCs (all of them: features x facts)


@dataclass
class FeatureLabel:
    """One feature: how often it fires, its best fact and that fact's AUROC, and the
    contexts where it fires most (`top`: text, position, activation, token, context)."""

    feature: int
    density: float  # share of rows where it fires
    mean_activation: float  # over the rows where it fires
    fact: str | None = None
    auroc: float | None = None
    top: list[dict[str, Any]] = field(default_factory=list)
    facts: list[tuple[str, float]] = field(default_factory=list)  # its best facts, best first

    @property
    def labelled(self) -> bool:
        return self.auroc is not None and self.auroc >= LABEL_AUROC

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labelled": self.labelled}


def check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise WorkbenchError(f"pool must be {', '.join(POOLS)}, not {pool!r}")


@dataclass
class SparseRows:
    """Every row's active features: `values` and `indices` [N, k] (a TopK SAE's code)."""

    values: torch.Tensor
    indices: torch.Tensor


@torch.no_grad()
def encode_rows(sae: SparseAutoencoder, rows: torch.Tensor, chunk: int = 8192) -> SparseRows:
    """The SAE's code of every row, kept sparse (k values and indices a row)."""
    values, indices = [torch.zeros((0, sae.k))], [torch.zeros((0, sae.k), dtype=torch.long)]
    for k in range(0, len(rows), chunk):
        pre = sae.pre_activations(rows[k : k + chunk].float())
        v, i = pre.topk(sae.k, dim=-1)
        values.append(v.relu().cpu())
        indices.append(i.cpu())
    return SparseRows(torch.cat(values), torch.cat(indices))


def text_values(code: SparseRows, acts: Activations, width: int, pool: str = "max") -> np.ndarray:
    """[texts, width]: each text's feature values, at its last token or the largest."""
    check_pool(pool)
    out = torch.zeros((len(acts.tokens), width))
    if pool == "last":
        rows = acts.last_rows()
        if (rows < 0).any():
            raise WorkbenchError("a text's last token was not read (its activations are missing)")
        r = torch.from_numpy(rows)
        out.scatter_(1, code.indices[r], code.values[r])
        return out.numpy()
    flat = torch.from_numpy(acts.text)[:, None] * width + code.indices
    out.view(-1).scatter_reduce_(0, flat.flatten(), code.values.flatten(), reduce="amax")
    return out.numpy()


def scored_facts(
    facts: Sequence[Sequence[str] | None], min_examples: int = MIN_EXAMPLES
) -> list[str]:
    """The facts that hold in at least `min_examples` of the texts with facts and fail in as
    many: those an AUROC is computed for."""
    known = [f for f in facts if f is not None]
    counts: dict[str, int] = {}
    for listed in known:
        for fact in set(listed):
            counts[fact] = counts.get(fact, 0) + 1
    return sorted(f for f, c in counts.items() if min_examples <= c <= len(known) - min_examples)


def fact_aurocs(
    values: np.ndarray, facts: Sequence[Sequence[str] | None], min_examples: int = MIN_EXAMPLES
) -> tuple[list[str], np.ndarray]:
    """(facts, [facts, features] AUROC) over the texts that have facts; a fact is scored
    when it held in at least `min_examples` of them and failed in as many."""
    known = [i for i, f in enumerate(facts) if f is not None]
    names = scored_facts(facts, min_examples)
    if not names:
        return [], np.zeros((0, values.shape[1]))
    index = {f: j for j, f in enumerate(names)}
    y = np.zeros((len(known), len(names)))
    for row, i in enumerate(known):
        for fact in set(facts[i] or ()):
            if fact in index:
                y[row, index[fact]] = 1.0
    ranks = rankdata(values[known], axis=0)  # ties share their mean rank
    positives = y.sum(0)[:, None]
    negatives = len(known) - positives
    u = y.T @ ranks - positives * (positives + 1) / 2
    return names, u / (positives * negatives)


def label_features(
    sae: SparseAutoencoder,
    acts: Activations,
    facts: Sequence[Sequence[str] | None],
    tokenizer: Any,
    pool: str = "max",
    top_n: int = 5,
    code: SparseRows | None = None,
) -> list[FeatureLabel]:
    """Every feature's density, best fact with its AUROC, and top `top_n` contexts.
    `facts[i]` are the facts true for text i (None: unknown). `code` may pass the rows'
    encoding when it is already computed."""
    if len(facts) != len(acts.tokens):
        raise WorkbenchError(f"{len(facts)} fact lists for {len(acts.tokens)} texts")
    code = code or encode_rows(sae, acts.values)
    width = sae.d_sae
    active = code.values > 0
    counts = np.bincount(code.indices[active].numpy(), minlength=width)
    sums = np.bincount(code.indices[active].numpy(), code.values[active].numpy(), width)
    names, auroc = fact_aurocs(text_values(code, acts, width, pool), facts)
    top = _top_rows(code, top_n)
    ranked = np.argsort(-auroc, axis=0, kind="stable")[:FACTS_KEPT] if names else None
    table = []
    for j in range(width):
        label = FeatureLabel(
            j, float(counts[j] / max(len(acts), 1)), float(sums[j] / max(counts[j], 1))
        )
        if ranked is not None:
            label.facts = [(names[i], float(auroc[i, j])) for i in ranked[:, j]]
            label.fact, label.auroc = label.facts[0]
        label.top = [context(acts, r, v, tokenizer) for r, v in top.get(j, [])]
        table.append(label)
    return table


def _top_rows(code: SparseRows, n: int) -> dict[int, list[tuple[int, float]]]:
    """{feature: [(row, activation)]}, its `n` largest activations first."""
    k = code.values.shape[1]
    rows = np.repeat(np.arange(len(code.values)), k)
    feats, vals = code.indices.flatten().numpy(), code.values.flatten().numpy()
    keep = vals > 0
    rows, feats, vals = rows[keep], feats[keep], vals[keep]
    order = np.lexsort((-vals, feats))
    rows, feats, vals = rows[order], feats[order], vals[order]
    _, starts, sizes = np.unique(feats, return_index=True, return_counts=True)
    rank = np.arange(len(feats)) - np.repeat(starts, sizes)
    out: dict[int, list[tuple[int, float]]] = {}
    for r, f, v in zip(rows[rank < n], feats[rank < n], vals[rank < n]):
        out.setdefault(int(f), []).append((int(r), float(v)))
    return out


def context(acts: Activations, row: int, value: float, tokenizer: Any, before: int = 12) -> dict:
    """Row `row`'s token and the text around it (`before` tokens, then 3 after)."""
    text, position = int(acts.text[row]), int(acts.position[row])
    ids = acts.tokens[text]
    return {
        "text": text,
        "position": position,
        "activation": value,
        "token": tokenizer.decode([ids[position]]),
        "before": tokenizer.decode(ids[max(0, position - before) : position]),
        "after": tokenizer.decode(ids[position + 1 : position + 4]),
    }


def search(
    table: Sequence[FeatureLabel],
    fact: str | None = None,
    text: str | None = None,
    labelled_only: bool = False,
) -> list[FeatureLabel]:
    """Features whose best fact matches `fact` (a pattern, * wildcards) and whose top
    contexts contain `text`, best AUROC first; an unknown fact pattern is one line."""
    out = list(table)
    if fact is not None:
        known = {f.fact for f in table if f.fact is not None}
        if not any(fnmatchcase(k, fact) for k in known):
            raise WorkbenchError(f"no feature's best fact matches {fact!r} (facts: {_some(known)})")
        out = [f for f in out if f.fact is not None and fnmatchcase(f.fact, fact)]
    if text is not None:
        needle = text.lower()
        out = [f for f in out if any(needle in c["token"].lower() for c in f.top)]
    if labelled_only:
        out = [f for f in out if f.labelled]
    return sorted(out, key=lambda f: (-(f.auroc or 0.0), f.feature))


def _some(names: set[str], n: int = 5) -> str:
    shown = sorted(names)[:n]
    return ", ".join(shown) + (", ..." if len(names) > n else "") if shown else "none"


def distinct_labelled(table: Sequence[FeatureLabel]) -> int:
    """How many distinct facts label at least one feature."""
    return len({f.fact for f in table if f.labelled})


def save_labels(folder: str | Path, table: Sequence[FeatureLabel], summary: dict[str, Any]) -> Path:
    """Write the feature table (and how it was made) beside the SAE, through a temporary
    file."""
    path = Path(folder) / FEATURES_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"summary": summary, "features": [f.to_dict() for f in table]}))
    tmp.replace(path)
    return path


def load_labels(folder: str | Path) -> tuple[dict[str, Any], list[FeatureLabel]]:
    """(summary, table) written by `save_labels`, or one line when the SAE has none."""
    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        raise WorkbenchError(
            f"SAE {str(folder)!r} has no {FEATURES_FILE}: its features were not labelled "
            "(workbench sae train labels them on runs or a data set with facts)"
        )
    data = json.loads(path.read_text())
    names = set(FeatureLabel.__dataclass_fields__)
    table = [FeatureLabel(**{k: v for k, v in f.items() if k in names}) for f in data["features"]]
    return data.get("summary", {}), table


def read_labels(folder: str | Path) -> dict[int, dict[str, Any]]:
    """{feature: its label's fields}, empty when the SAE has no labels."""
    path = Path(folder) / FEATURES_FILE
    if not path.is_file():
        return {}
    return {f["feature"]: f for f in json.loads(path.read_text())["features"]}
