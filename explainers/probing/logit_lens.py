"""The logit lens (nostalgebraist 2020, "interpreting GPT: the logit lens"): read every
layer's residual stream through the model's final norm and unembedding, as if the model
stopped there, to see at which layer and position the eventual prediction takes shape.

`scores[r, p]` is the probability the last layer gives target token r as the next token at
prompt position p (where in the prompt the model would already say it). The extras hold
the lens itself:

- `layers`: the layer numbers read (0 = embeddings .. L, the model's own output)
- `tokens`: every position's token (prompt then teacher-forced target prefix)
- `top`: [layer][position] -> the top-k next tokens as [token, probability] pairs
- `target_rank`: [target][layer][position] -> rank of that target token (0 = top)
- `target_prob`: [target][layer][position] -> its probability
- `rows`: the position that predicts each target token

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The capital of France is", target=" Paris", method="logit_lens")
    >>> exp.extras["target_rank"][0][-1][-1]                 # rank at the last layer
    0
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explainers.attention.base import scored_rows
from explainers.explainer import Explainer
from explainers.explanation import Explanation
from explainers.objective import Objective
from explainers.params import Int, IntList
from explainers.registry import register
from workbench.anatomy import model_anatomy, residuals
from workbench.errors import WorkbenchError


@register
class LogitLens(Explainer):
    name = "logit_lens"
    category = "probing"
    summary = "each layer's residual through the final norm and unembedding: top-k and target rank"
    model_kinds = ("causal",)  # it reads the unembedding

    def explain_objective(self, obj: Objective, **params: Any) -> Explanation:
        lens = self.attribute(obj, **params)
        n_prompt = int(obj.prompt_ids.numel())
        final_prob = np.asarray(lens["target_prob"])[:, -1, :n_prompt]  # [T, P]
        return Explanation.from_objective(
            self,
            obj,
            final_prob,
            params={"top_k": lens.pop("top_k")},
            extras={
                "tokens": obj.input_tokens + obj.target_tokens[:-1],
                "rows": scored_rows(obj.lm, obj),
                **lens,
            },
        )

    param_checks = {"top_k": Int(min=1), "layers": IntList()}

    def attribute(
        self, obj: Objective, top_k: int = 5, layers: list[int] | None = None
    ) -> dict[str, Any]:
        """The lens over prompt + target prefix at `layers` (all by default)."""
        lm, target_ids = obj.lm, obj.target_ids
        ids = torch.cat([obj.prompt_ids, target_ids[:-1]])
        parts = model_anatomy(lm)
        if parts.unembed is None:
            raise WorkbenchError(f"{lm.name} has no unembedding for the logit lens")
        layer_list = parts.check_layers("resid", None if layers is None else list(layers))
        states = residuals(lm, layer_list, input_ids=ids.unsqueeze(0))
        tok = lm.tokenizer
        top, ranks, probs = [], [], []
        with torch.no_grad():
            for layer in layer_list:
                hidden = states[layer][0]
                if parts.final_norm is not None:
                    hidden = parts.final_norm(hidden)
                logp = torch.log_softmax(parts.unembed(hidden).float(), dim=-1)  # [n, V]
                values, indices = logp.topk(top_k, dim=-1)
                top.append(
                    [
                        [[tok.decode([int(i)]), round(float(v.exp()), 5)] for v, i in zip(vs, ix)]
                        for vs, ix in zip(values, indices)
                    ]
                )
                target_logp = logp[:, target_ids.to(logp.device)].T  # [T, n]
                # rank = how many tokens the layer prefers over the target
                ranks.append((logp[None] > target_logp[..., None]).sum(-1).cpu())
                probs.append(target_logp.exp().cpu())
        return {
            "top_k": top_k,
            "layers": layer_list,
            "top": top,
            "target_rank": torch.stack(ranks, 1).tolist(),  # [T, layers, n]
            "target_prob": np.round(torch.stack(probs, 1).numpy(), 6).tolist(),
        }
