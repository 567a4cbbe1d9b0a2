"""Explainers: the LLM-explainability taxonomy as working methods over Hugging Face models.

>>> from workbench.models import load_model              # doctest: +SKIP
>>> from explainers import explain
>>> exp = explain(load_model(), "The milk is in the", target=" fridge", method="ig")
>>> exp.show()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# Importing the families registers their methods, and importing the renderers installs them
# (`Explanation.to_html`, `.show`): both plug into the modules below them, which import
# neither, so the package has no import cycle.
from explainers import (  # noqa: F401
    attention,
    attribution,
    causal,
    concepts,
    probing,
    prompting,
    render,
    sae,
)
from explainers.explainer import Explainer, Progress
from explainers.explanation import Explanation
from explainers.registry import get_method, known_methods, register, validate_params

if TYPE_CHECKING:
    from workbench.models import LoadedModel

__all__ = [
    "Explainer",
    "Explanation",
    "Progress",
    "explain",
    "get_method",
    "known_methods",
    "register",
    "validate_params",
]


def explain(model: LoadedModel, text: str, method: str = "ig", **kwargs: Any) -> Explanation:
    """Explain `model` on `text` with the registered method `method` (e.g. "ig").

    Keyword arguments go to the method: `target`, `generate`, `contrast`, `aggregate`,
    `progress`, and the method's own parameters (for ig: `steps`, `baseline`, `tolerance`,
    `max_knots`). `validate_params(method, kwargs)` runs the same checks without a model.
    """
    return get_method(method).explain(model, text, **kwargs)
