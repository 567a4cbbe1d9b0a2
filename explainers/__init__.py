"""Explainers: the LLM-explainability taxonomy as working methods over Hugging Face models.

>>> from workbench.models import load_model              # doctest: +SKIP
>>> from explainers import explain
>>> exp = explain(load_model(), "The milk is in the", target=" fridge", method="ig")
>>> exp.show()
"""

from __future__ import annotations

from typing import Any

from explainers.base import Explainer, Explanation, get_method, known_methods, register
from workbench.models import LoadedModel

__all__ = ["Explainer", "Explanation", "explain", "get_method", "known_methods", "register"]


def explain(model: LoadedModel, text: str, method: str = "ig", **kwargs: Any) -> Explanation:
    """Explain `model` on `text` with the registered method `method` (e.g. "ig").

    Keyword arguments go to the method: `target`, `generate`, `contrast`, `aggregate`, and
    the method's own parameters (for ig: `steps`, `baseline`, `tolerance`).
    """
    return get_method(method).explain(model, text, **kwargs)
