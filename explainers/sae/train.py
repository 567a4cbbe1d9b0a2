"""Training a TopK SAE on a layer's activations (Gao et al. 2024's recipe, on the CPU or GPU).

- Inputs are scaled by one constant so that their mean squared norm is d_in (SAELens's
  `expected_average_only_in`); the constant is folded into the weights when training ends,
  so the saved SAE reads raw activations.
- The decoder bias starts at the inputs' mean, the decoder rows at random unit vectors,
  the encoder at the decoder's transpose; the decoder rows are kept at unit norm.
- Loss: mean squared error, plus AuxK (coefficient 1/32): the error reconstructed from the
  `aux_k` largest pre-activations of the dead features (those that did not fire in the
  last `dead_after` rows), which brings dead features back.
- The decoder runs sparse (`embedding_bag` over the k active rows): a step costs the
  encoder's dense product and the k rows' gather, not a second dense product.

Rows are split by text into training and held-out sets (`heldout` of the texts), so a
held-out score never sees a context trained on.

    >>> sae, report = train_sae(acts, TrainConfig(width=4608, k=32))   # doctest: +SKIP
    >>> report.fvu, report.l0, report.dead_fraction
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from explainers.explainer import Progress
from explainers.sae.activations import Activations
from explainers.sae.model import SparseAutoencoder
from workbench.errors import WorkbenchError

MIN_ROWS = 256  # fewer activations cannot train a dictionary or score it
AUX_COEFFICIENT = 1 / 32


@dataclass
class TrainConfig:
    """How an SAE is trained. `width` 0: 8 x d_in. `lr` 0: 2e-4 / sqrt(width / 2^14)
    (Gao et al.'s scaling with the width)."""

    width: int = 0
    k: int = 32
    epochs: float = 1.0
    batch_size: int = 4096
    lr: float = 0.0
    heldout: float = 0.1
    dead_after: int = 200_000  # rows without firing before a feature counts as dead
    seed: int = 0

    def __post_init__(self) -> None:
        if self.width < 0:
            raise WorkbenchError(f"width must be positive, not {self.width}")
        if self.k < 1:
            raise WorkbenchError(f"k must be at least 1, not {self.k}")
        if not 0 < self.epochs <= 100:
            raise WorkbenchError(f"epochs must be in (0, 100], not {self.epochs}")
        if self.batch_size < 1:
            raise WorkbenchError(f"batch size must be at least 1, not {self.batch_size}")
        if self.lr < 0:
            raise WorkbenchError(f"learning rate must be positive, not {self.lr}")
        if not 0 < self.heldout < 0.5:
            raise WorkbenchError(f"held-out fraction must be in (0, 0.5), not {self.heldout}")

    def resolved(self, d_in: int) -> TrainConfig:
        width = self.width or 8 * d_in
        if self.k > width:
            raise WorkbenchError(f"k ({self.k}) is larger than the width ({width})")
        lr = self.lr or 2e-4 / math.sqrt(width / 2**14)
        return TrainConfig(**{**asdict(self), "width": width, "lr": lr})


@dataclass
class TrainReport:
    """Held-out quality and the training's cost."""

    fvu: float  # fraction of variance unexplained, held-out rows
    l0: float  # mean active features per held-out row
    dead_fraction: float  # features that fired on no held-out row
    train_rows: int
    heldout_rows: int
    steps: int
    seconds: float  # the training loop alone (the extraction is timed apart)
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_rows(acts: Activations, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows): a seeded `heldout` share of the texts is held out."""
    texts = np.unique(acts.text)
    if len(texts) < 2:
        raise WorkbenchError("too few texts: an SAE needs at least 2 (some are held out)")
    rng = np.random.default_rng(seed)
    n_held = max(1, round(len(texts) * heldout))
    held = np.zeros(len(acts.tokens), bool)
    held[rng.permutation(texts)[:n_held]] = True
    mask = held[acts.text]
    return np.nonzero(~mask)[0], np.nonzero(mask)[0]


def train_sae(
    acts: Activations, config: TrainConfig | None = None, progress: Progress | None = None
) -> tuple[SparseAutoencoder, TrainReport]:
    """Train an SAE on `acts` (see the module); `progress(steps done, steps)`."""
    n, d_in = acts.values.shape if len(acts) else (0, 0)
    if n < MIN_ROWS:
        raise WorkbenchError(f"{n} activations are too few to train an SAE (at least {MIN_ROWS})")
    cfg = (config or TrainConfig()).resolved(d_in)
    train, held = split_rows(acts, cfg.heldout, cfg.seed)
    x_all = acts.values
    device = x_all.device
    torch.manual_seed(cfg.seed)
    sample = x_all[torch.from_numpy(train[:: max(1, len(train) // 20_000)])].float()
    scale = float(math.sqrt(d_in) / sample.norm(dim=1).pow(2).mean().sqrt().clamp_min(1e-12))
    sae = SparseAutoencoder(d_in, cfg.width, cfg.k, seed=cfg.seed).to(device)
    with torch.no_grad():
        sae.b_dec.copy_(sample.mean(0) * scale)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    rng = np.random.default_rng(cfg.seed)
    total_rows = int(len(train) * cfg.epochs)
    steps = max(1, math.ceil(total_rows / cfg.batch_size))
    order = np.concatenate([rng.permutation(train) for _ in range(math.ceil(cfg.epochs))])[
        :total_rows
    ]
    since_fired = torch.zeros(cfg.width, dtype=torch.long, device=device)
    aux_k = max(1, min(d_in // 2, cfg.width))
    started = time.perf_counter()
    sae.train()
    for step in range(steps):
        rows = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        if len(rows) == 0:
            break
        x = x_all[torch.from_numpy(rows)].float() * scale
        pre = sae.pre_activations(x)
        values, indices = pre.topk(cfg.k, dim=-1)
        values = values.relu()
        x_hat = _sparse_decode(sae, values, indices)
        err = x - x_hat
        denominator = (x - x.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = err.pow(2).sum(-1).mean() / denominator
        with torch.no_grad():
            fired = torch.zeros(cfg.width, dtype=torch.bool, device=device)
            fired[indices[values > 0]] = True
            since_fired += len(rows)
            since_fired[fired] = 0
            dead = since_fired > cfg.dead_after
        if dead.any():
            dead_pre = pre.masked_fill(~dead, -torch.inf)
            k_dead = min(aux_k, int(dead.sum()))
            aux_values, aux_indices = dead_pre.topk(k_dead, dim=-1)
            aux_hat = _sparse_decode(sae, aux_values.relu(), aux_indices, bias=False)
            residual = err.detach()
            aux = (residual - aux_hat).pow(2).sum(-1).mean()
            aux = aux / (residual - residual.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12)
            loss = loss + AUX_COEFFICIENT * torch.nan_to_num(aux, nan=0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sae.normalize_decoder()
        if progress is not None:
            progress(step + 1, steps)
    seconds = time.perf_counter() - started
    sae.eval()
    _fold_scale(sae, scale)
    fvu, l0, dead_fraction = score(sae, x_all[torch.from_numpy(held)])
    report = TrainReport(
        fvu=fvu,
        l0=l0,
        dead_fraction=dead_fraction,
        train_rows=int(len(train)),
        heldout_rows=int(len(held)),
        steps=steps,
        seconds=seconds,
        config=asdict(cfg),
    )
    return sae, report


def _sparse_decode(
    sae: SparseAutoencoder, values: torch.Tensor, indices: torch.Tensor, bias: bool = True
) -> torch.Tensor:
    """sum_j values_j W_dec[indices_j] (+ b_dec): the decoder over the active rows only."""
    out = torch.nn.functional.embedding_bag(
        indices, sae.W_dec, per_sample_weights=values, mode="sum"
    )
    return out + sae.b_dec if bias else out


@torch.no_grad()
def _fold_scale(sae: SparseAutoencoder, scale: float) -> None:
    """Make the SAE read raw activations: trained on s x, it computes the same features
    from x with W_enc s and b_dec / s, and reconstructs x with W_dec / s."""
    sae.W_enc.mul_(scale)
    sae.b_dec.div_(scale)
    sae.W_dec.div_(scale)


@torch.no_grad()
def score(sae: SparseAutoencoder, x: torch.Tensor, chunk: int = 8192) -> tuple[float, float, float]:
    """(FVU, L0, dead fraction) of `sae` on rows `x`: the squared error over the rows'
    variance around their mean, active features per row, and the share of features that
    fired on none of the rows."""
    if len(x) == 0:
        raise WorkbenchError("no held-out activations to score the SAE on")
    mean = x.float().mean(0)
    err = var = l0 = 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=x.device)
    for k in range(0, len(x), chunk):
        rows = x[k : k + chunk].float()
        x_hat, f = sae(rows)
        err += float((rows - x_hat).pow(2).sum())
        var += float((rows - mean).pow(2).sum())
        active = f > 0
        l0 += float(active.sum())
        fired |= active.any(0)
    return err / max(var, 1e-12), l0 / len(x), float((~fired).float().mean())
