"""Sparse-autoencoder features: a layer's residual stream as a sparse sum of learned
directions, checked against the game's true state.

- `model`: the SAE (TopK, Gao et al. 2024), saved and loaded in SAELens's format;
- `activations`: a layer's residual stream over many texts, shared prefixes run once;
- `train`: training with a held-out split, dead-feature revival (AuxK) and unit decoders;
- `evaluate`: fraction of variance unexplained, L0, dead features and the language model's
  loss with the reconstruction spliced in, against zero ablation;
- `labels`: each feature's top contexts and its AUROC against every fact of the texts;
- `attribution`: a decision's objective attributed to features (complete: the features'
  masses plus the reconstruction error's equal the objective's change), and exact ablation;
- `method`: all of it as the registered explain method `sae`.
"""

from explainers.sae import method  # noqa: F401  (registers `sae`)
