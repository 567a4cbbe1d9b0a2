"""Does the language model still work on the SAE's reconstruction? The spliced-in loss.

The model's next-token cross-entropy over texts, three ways: clean; with the residual
stream at the SAE's layer replaced by its reconstruction (spliced in); and with it replaced
by zeros (zero ablation, the floor). The share of the loss recovered,
(zero - spliced) / (zero - clean), is 1 for a perfect SAE; the issue's goal is the spliced
loss within 10% of the clean loss's distance to zero ablation (recovered >= 0.9). As in
training, each text's first position keeps its own state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from explainers.concepts.steering import resid_point
from explainers.explainer import Progress
from explainers.sae.activations import tokenize
from explainers.sae.model import SparseAutoencoder
from workbench.anatomy import Hooks
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.prefix_cache import padded_batch


@dataclass
class SplicedLoss:
    """Mean next-token cross-entropy (nats per token) over `tokens` predicted tokens."""

    clean: float
    spliced: float
    zero: float
    tokens: int

    @property
    def recovered(self) -> float:
        gap = self.zero - self.clean
        return (self.zero - self.spliced) / gap if gap > 0 else float("nan")

    def to_dict(self) -> dict[str, float | None]:
        """As JSON: `recovered` is None where zero ablation does not raise the loss."""
        recovered = self.recovered
        return {**asdict(self), "recovered": None if math.isnan(recovered) else recovered}


def spliced_loss(
    lm: LoadedModel,
    sae: SparseAutoencoder,
    layer: int,
    texts: Sequence[str],
    batch_size: int = 8,
    progress: Progress | None = None,
) -> SplicedLoss:
    """The clean, spliced-in and zero-ablated losses of `lm` on `texts` (see the module)."""
    if lm.kind != "causal":
        raise WorkbenchError("the spliced-in loss needs a causal language model")
    point = resid_point(lm, layer)
    ids = [t for t in tokenize(lm, texts) if len(t) >= 2]
    if not ids:
        raise WorkbenchError("no text of at least 2 tokens to score the spliced-in loss on")
    sae = sae.to(lm.device)
    edits: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
        "clean": None,
        "spliced": lambda x: sae(x.float())[0].to(x.dtype),
        "zero": torch.zeros_like,
    }
    sums = dict.fromkeys(edits, 0.0)
    count = 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for k in range(0, len(order), batch_size):
        batch = [ids[i] for i in order[k : k + batch_size]]
        input_ids, mask = padded_batch(batch, lm.tokenizer.pad_token_id or 0)
        input_ids, mask = input_ids.to(lm.device), mask.to(lm.device)
        real = mask[:, 1:].bool()
        for name, edit in edits.items():
            with Hooks() as hooks, torch.no_grad():
                if edit is not None:
                    hooks.add(point, _after_first(edit))
                logits = lm.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1]
            losses = torch.nn.functional.cross_entropy(
                logits.float().transpose(1, 2), input_ids[:, 1:], reduction="none"
            )
            sums[name] += float(losses[real].sum())
        count += int(real.sum())
        if progress is not None:
            progress(min(k + batch_size, len(order)), len(order))
    return SplicedLoss(**{name: total / count for name, total in sums.items()}, tokens=count)


def _after_first(edit: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    """An activation edit applied at every position but the first."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], edit(x[:, 1:])], dim=1)

    return apply
