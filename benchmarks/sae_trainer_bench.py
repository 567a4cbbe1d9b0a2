"""The workbench's SAE trainer against SAELens's `SAETrainer` on the same activations, in one
run: held-out FVU, L0 and seconds at the same width, k, learning rate, batch and rows.

The activations: layer `--layer`'s residual stream over a play run's prompts (the SAE
family's reader, `explainers.sae.activations`), split by text into training and held-out
rows (`explainers.sae.train.split_rows`). SAELens trains a `TopKTrainingSAE` (its defaults:
AuxK, decoder-norm rescaling, `expected_average_only_in` normalisation) through
`SAETrainer` fed by an iterator over the same shuffled training rows; the workbench trains
`train_sae`. Both are scored by `explainers.sae.train.score` on the held-out rows (SAELens's
SAE through its own `encode`/`decode`).

    python benchmarks/sae_trainer_bench.py --db /tmp/sae/bridge.duckdb --run valid-ft \
        --adapter /tmp/sae/adapter --layer 15 --k 32 --out sae_trainer.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def saelens_fit(rows: torch.Tensor, order: np.ndarray, width: int, k: int, lr: float, batch: int):
    """SAELens's TopK SAE trained on `rows[order]` in batches of `batch` (one pass)."""
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    d_in = rows.shape[1]
    cfg = TopKTrainingSAEConfig(
        d_in=d_in, d_sae=width, k=k, normalize_activations="expected_average_only_in"
    )
    sae = TopKTrainingSAE(cfg)

    def batches():
        while True:  # the scaling estimate reads some batches first; then the pass
            for start in range(0, len(order), batch):
                yield rows[torch.from_numpy(order[start : start + batch])]

    total = len(order) // batch * batch
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=batch,
        lr=lr,
        lr_end=lr,  # a constant rate, as the workbench's
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        n_batches_for_norm_estimate=min(50, max(1, len(order) // batch)),
    )
    return SAETrainer(trainer_cfg, sae, batches()).fit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--width", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from agents.sae import run_texts
    from explainers.sae.activations import collect_activations
    from explainers.sae.train import TrainConfig, score, split_rows, train_sae
    from workbench.models import load_model
    from workbench.store import Store

    torch.manual_seed(0)
    lm = load_model(args.model, device="cpu", dtype="float32", adapter=args.adapter)
    texts = run_texts(Store(args.db), [args.run], lm)
    start = time.perf_counter()
    acts = collect_activations(lm, [t.text for t in texts], args.layer)
    extraction = time.perf_counter() - start
    config = TrainConfig(width=args.width, k=args.k, batch_size=args.batch_size).resolved(
        acts.values.shape[1]
    )
    train, held = split_rows(acts, config.heldout, config.seed)
    held_rows = acts.values[torch.from_numpy(held)]

    start = time.perf_counter()
    ours, report = train_sae(acts, config)
    ours_seconds = time.perf_counter() - start
    order = np.random.default_rng(config.seed).permutation(train)
    start = time.perf_counter()
    theirs = saelens_fit(acts.values, order, config.width, config.k, config.lr, config.batch_size)
    theirs_seconds = time.perf_counter() - start

    class Theirs(torch.nn.Module):  # `score` reads (reconstruction, features)
        d_sae = config.width

        def forward(self, x):
            f = theirs.encode(x)
            return theirs.decode(f), f

    with torch.no_grad():
        fvu, l0, dead = score(Theirs(), held_rows)
    result = {
        "layer": args.layer,
        "rows": len(acts),
        "train_rows": int(len(train)),
        "heldout_rows": int(len(held)),
        "extraction_seconds": extraction,
        "config": {k: v for k, v in vars(config).items()},
        "workbench": {
            "fvu": report.fvu,
            "l0": report.l0,
            "dead": report.dead_fraction,
            "seconds": ours_seconds,
            "loop_seconds": report.seconds,
        },
        "saelens": {"fvu": fvu, "l0": l0, "dead": dead, "seconds": theirs_seconds},
        "per_million_rows_s": {
            "workbench": report.seconds / max(len(train), 1) * 1e6,
            "saelens": theirs_seconds / max(len(order), 1) * 1e6,
        },
        "steps": math.ceil(len(train) / config.batch_size),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
