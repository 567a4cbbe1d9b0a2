"""DeepLIFT with the rescale rule on a transformer (Shrikumar et al. 2017, "Learning Important
Features Through Propagating Activation Differences").

What is implemented, precisely: DeepLIFT's multipliers are ordinary gradients except at the
element-wise activation modules (SiLU/GELU/ReLU/tanh/... in the MLPs), where the backward
pass uses the rescale multiplier (act(z) - act(z')) / (z - z'), z' being the activation's
input on the baseline (falling back to the plain gradient where |z - z'| < 1e-10). Then
score[r, p] = (x_p - x'_p) . m_p. This is exactly captum's `DeepLift` on a forward over the
embeddings once the model's activation class is counted among captum's supported
non-linearities (captum itself knows ReLU/ELU/Sigmoid/Tanh/Softplus/Softmax modules, not
Llama's SiLU, and would silently fall back to gradient x (input - baseline)).

Attention (a functional softmax and the query-key product), RMS/LayerNorm and the SwiGLU
gating product get no special rule: DeepLIFT's RevealCancel or Ancona et al.'s rules for
them do not exist in captum either. So summation-to-delta does *not* hold on transformers;
`expected` (f(x) - f(x')) and `delta` (row sum - expected) show how far off it is.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="deeplift")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.objective import Objective
from explainers.registry import register

EPS = 1e-10  # captum's threshold for "input equals reference"

_TORCH_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Hardsigmoid,
)


def is_elementwise_activation(module: nn.Module) -> bool:
    """Element-wise non-linearities: torch's own and every module in transformers.activations."""
    if isinstance(module, _TORCH_ACTIVATIONS):
        return True
    return type(module).__module__ == "transformers.activations"


def activation_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_elementwise_activation(m)]


@contextlib.contextmanager
def _hooks(modules: list[nn.Module], hook) -> Iterator[None]:
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@register
class DeepLift(AttributionExplainer):
    name = "deeplift"
    summary = "DeepLIFT rescale rule at activations, gradients elsewhere (captum-equivalent)"

    def attribute(
        self, obj: Objective, baseline: str = "zero", batch_size: int | None = None
    ) -> Attribution:
        x = obj.input_embeddings
        x0 = obj.baseline_embeddings(baseline)
        modules = activation_modules(obj.lm.model)
        reference: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            reference[module] = (inputs[0].detach(), output.detach())

        with _hooks(modules, record), torch.no_grad():
            f_base = obj.forward_embeddings(x0.unsqueeze(0).to(obj.lm.device))[0].float().cpu()

        def rescale(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor):
            z = inputs[0]
            z_ref, out_ref = reference[module]
            dz = z - z_ref
            close = dz.abs() < EPS
            multiplier = ((output - out_ref) / torch.where(close, 1.0, dz)).detach()
            # Forward value unchanged; the backward pass sees `multiplier` as d out / d z.
            rescaled = output.detach() + (z - z.detach()) * multiplier
            return torch.where(close, output, rescaled)

        diff = (x - x0).to(obj.lm.device)
        with _hooks(modules, rescale):
            f_input, grads = batched_row_gradients(
                obj, x.unsqueeze(0), lambda grad, _: (grad * diff).sum(-1), batch_size
            )
        scores = grads[0]
        expected = f_input[0] - f_base
        delta = scores.sum(-1) - expected
        params = {"rule": "rescale", "activations": len(modules)}
        return Attribution(
            scores.numpy().astype("float64"), params, baseline, expected.tolist(), delta.tolist()
        )
