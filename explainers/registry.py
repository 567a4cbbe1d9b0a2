"""The method registry: every method registers under a name and a taxonomy category.

Categories follow Zhao et al. 2023, "Explainability for Large Language Models: A Survey":
attribution, attention, probing, prompting, and causal (interventions on activations).

The built-in families register their methods when they are imported, and importing the
`explainers` package imports them all (explainers/__init__.py); Python imports the package
before any of its modules, so the registry is complete whenever this module is used. The
families import this module, never the other way round.

    >>> from explainers.registry import known_methods, validate_params
    >>> "ig" in known_methods()
    True
    >>> validate_params("ig", {"steps": "32"})
    {'steps': 32}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from explainers.explainer import Explainer
from workbench.errors import UnknownMethodError

CATEGORIES = ("attribution", "attention", "probing", "prompting", "causal")

# What `explain` takes besides the method's own parameters; `validate_params` checks these too.
REQUEST_OPTIONS = ("text", "target", "generate", "contrast", "candidates", "objective", "aggregate")

_REGISTRY: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make a method available to `explain()` and `workbench explain`."""
    if cls.category not in CATEGORIES:
        raise ValueError(f"{cls.__name__}: category must be one of {CATEGORIES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    # A check for a parameter the method does not take is a typo in its table. (A family's
    # base class checks parameters that only some of its methods take.)
    unchecked = set(vars(cls).get("param_checks", {})) - cls().parameter_names()
    if unchecked:
        raise ValueError(f"{cls.__name__}: param_checks names no parameter {sorted(unchecked)}")
    _REGISTRY[cls.name] = cls
    return cls


def known_methods() -> dict[str, type[Explainer]]:
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Explainer:
    methods = known_methods()
    if name not in methods:
        raise UnknownMethodError(name, list(methods))
    return methods[name]()


def validate_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a request for `method` without a model: the method's own parameters and the
    request options among `params` (text, target, generate, contrast, aggregate).

    Returns the parameters normalised (e.g. steps "32" -> 32) with the request options as
    given; raises a one-line `WorkbenchError` naming the parameter otherwise. An unknown
    method lists the known ones.

        >>> validate_params("occlusion", {"unit": "word", "target": " fridge"})
        {'target': ' fridge', 'unit': 'word'}
        >>> validate_params("occlusion", {"steps": 8})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        workbench.errors.WorkbenchError: occlusion takes no parameter 'steps'; its parameters: ...
    """
    explainer = get_method(method)
    request = {k: params[k] for k in REQUEST_OPTIONS if k in params}
    explainer.check_request(
        request.get("text"),
        request.get("target"),
        generate=request.get("generate"),
        contrast=request.get("contrast"),
        candidates=request.get("candidates"),
        objective=request.get("objective"),
        aggregate=request.get("aggregate", "token"),
    )
    own = explainer.check_params({k: v for k, v in params.items() if k not in REQUEST_OPTIONS})
    return {**request, **own}
