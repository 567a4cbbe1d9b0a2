"""`sae` as a registered method: a decision explained in SAE features, token by token.

score[0, p] is prompt position p's share of integrated gradients through the SAE at its
layer (`explainers.sae.attribution`): the masses of the features that fired at p plus its
reconstruction error's. The scores sum to the objective's change from the SAE's empty
reading (the stream at b_dec) to the model's own (`expected`, with `delta` the gap). The
extras list the features of largest mass with their labels (the fact each is labelled by,
from the SAE folder's `features.json` when `workbench sae train` labelled them) and what
removing each one does to the decision.

    >>> explain(lm, prompt, "sae", candidates=cands, sae="saes/l15")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.objective import Objective
from explainers.params import Int
from explainers.registry import register
from explainers.sae.attribution import feature_attribution
from explainers.sae.labels import read_labels
from explainers.sae.model import CONFIG_FILE, check_sae_for, load_sae
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError


def sae_folder(name: str, value: Any) -> str:
    """An SAE folder's path: given and holding SAELens's config (checked with no model)."""
    path = Path(str(value or ""))
    if not str(value or "").strip():
        raise WorkbenchError(f"{name} is required: an SAE folder from workbench sae train")
    if not (path / CONFIG_FILE).is_file():
        raise WorkbenchError(f"{name}: no SAE folder (with {CONFIG_FILE}) at {str(path)!r}")
    return str(path)


@register
class SAEFeatures(AttributionExplainer):
    name = "sae"
    category = "attribution"
    summary = "integrated gradients through an SAE's features at one layer, with ablations"
    takes_contrast = False
    param_checks = {"sae": sae_folder, "steps": Int(min=1), "ablate": Int(min=0)}

    def attribute(
        self, obj: Objective, sae: str = "", steps: int = 16, ablate: int = 10
    ) -> Attribution:
        model, info = load_sae(sae_folder("sae", sae))
        anatomy = model_anatomy(obj.lm)
        width = int(obj.input_embeddings.shape[-1])
        check_sae_for(info, model, obj.lm.identity.to_dict(), width)
        anatomy.check_layers("resid", [info.layer])
        result = feature_attribution(obj, model, info.layer, steps=steps, ablate=ablate)
        labels = read_labels(sae)
        scores = np.asarray([result.positions], dtype=np.float64)
        top = []
        for j, mass in result.top(ablate or 10):
            label = labels.get(j, {})
            top.append(
                {
                    "feature": j,
                    "mass": mass,
                    "activation": result.activations[result.features.index(j)],
                    "fact": label.get("fact"),
                    "auroc": label.get("auroc"),
                    "labelled": bool(label.get("labelled")),
                }
            )
        warnings = []
        if result.completeness_error > 0.05:
            warnings.append(
                f"completeness error {result.completeness_error:.1%} with {steps} steps: "
                "raise steps"
            )
        return Attribution(
            scores,
            {"sae": str(Path(sae).resolve()), "steps": steps, "ablate": ablate},
            baseline="sae-empty",
            expected=[result.change],
            delta=[float(scores.sum()) - result.change],
            extras={
                "sae_layer": info.layer,
                "features": top,
                "error_mass": result.error_mass,
                "completeness_error": result.completeness_error,
                "ablations": [vars(a) for a in result.ablations],
            },
            status="ok" if not warnings else "incomplete",
            warnings=warnings,
        )
