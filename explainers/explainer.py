"""The `Explainer` base class: the one explain template every method follows.

Check the request and the method's parameters (no model needed: `validate_params` in
explainers/registry.py runs the same checks before a model loads), resolve what to explain
on the model (`resolve_target`), compute (`explain_objective`), aggregate. A method declares
its parameters' checks in `param_checks` (explainers/params.py). Long computations report
`progress(done, total)`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from explainers.choice import CHOICE_OBJECTIVES, check_objective, prepare_choice
from explainers.explanation import AGGREGATIONS, Explanation
from explainers.objective import Objective, prepare
from explainers.params import ParamCheck, apply_checks
from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from workbench.models import LoadedModel

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called as a long computation advances (IG knots, perturbation
samples, data-set inputs, metric evaluations, probe layers). `total` may grow while the
work runs (adaptive IG refines until its budget); the last call has done == total."""


def timed(fn: Callable[..., Explanation]) -> Callable[..., Explanation]:
    """Decorator for `explain` implementations: fills `Explanation.seconds`."""

    def wrapper(*args: Any, **kwargs: Any) -> Explanation:
        start = time.perf_counter()
        exp = fn(*args, **kwargs)
        exp.seconds = time.perf_counter() - start
        return exp

    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Explainer:
    """Base class of every method: the explain template and the checks every method shares.

    A subclass sets `name`, `category` and `summary`, says what it takes (`takes_target`,
    `takes_generate`, `takes_contrast`, `model_kinds`), and implements
    `explain_objective(obj, **params)`. Its parameters are that method's keyword arguments
    (or `attribute`'s, for the families that compute through one); `param_checks` says how
    their values are checked (explainers/params.py), with no model. A subclass's table adds to
    its base classes' tables: `param_checks = {"steps": Int(min=1)}`.
    """

    name: ClassVar[str]
    category: ClassVar[str]
    summary: ClassVar[str] = ""
    takes_target: ClassVar[bool] = True
    takes_generate: ClassVar[bool] = True
    takes_contrast: ClassVar[bool] = False
    takes_candidates: ClassVar[bool] = False  # choice objectives (explainers/choice.py)
    model_kinds: ClassVar[tuple[str, ...]] = ("causal", "classifier")
    reports_progress: ClassVar[bool] = False  # whether `progress` reaches the computation
    param_checks: ClassVar[dict[str, ParamCheck]] = {}

    @timed
    def explain(
        self,
        model: LoadedModel,
        text: str,
        target: str | int | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
        candidates: list[str] | None = None,
        objective: str | None = None,
        aggregate: str = "token",
        progress: Progress | None = None,
        **params: Any,
    ) -> Explanation:
        """Explain `model` on `text`: every method runs these four steps.

        Args:
            target: a continuation (causal LM) or label name/index (classifier) to explain;
                default: the model's own top next token or predicted label. With
                `candidates`: the chosen one (default: the model's top-scoring candidate).
            generate: explain the model's greedy continuation of this many tokens.
            contrast: explain log p(target) - log p(contrast) (attribution methods).
            candidates: the commands the decision was among (attribution methods).
            objective: with candidates, "choice" (default), "margin" or "logprob"
                (explainers/choice.py).
            aggregate: "token", or "word" to sum sub-word scores into words.
            progress: called as `progress(done, total)` while a long method runs.
            params: the method's own parameters (`parameter_names()`).
        """
        self.check_request(
            text,
            target,
            generate=generate,
            contrast=contrast,
            candidates=candidates,
            objective=objective,
            aggregate=aggregate,
        )
        params = self.check_params(params)
        if candidates is not None:
            obj = self.resolve_choice(model, text, candidates, target, objective or "choice")
        else:
            obj = self.resolve_target(model, text, target, generate=generate, contrast=contrast)
        return self.explain_prepared(obj, aggregate=aggregate, progress=progress, **params)

    def explain_prepared(
        self,
        obj: Objective,
        *,
        aggregate: str = "token",
        progress: Progress | None = None,
        **params: Any,
    ) -> Explanation:
        """The template's last steps on an objective prepared already (an agent's recorded
        decision, `agents.explain_step`); `params` are checked as in `explain`."""
        params = self.check_params(params)
        if self.reports_progress:
            params["progress"] = progress
        return self.explain_objective(obj, **params).aggregate(aggregate)

    # -- the template's steps ----------------------------------------------------------

    def check_request(
        self,
        text: str | None = None,
        target: str | int | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
        candidates: list[str] | None = None,
        objective: str | None = None,
        aggregate: str = "token",
    ) -> None:
        """The checks that need no model: what this method takes, and values that cannot
        work for any model. `text` None skips the text check (data-set mode)."""
        self.check_choice(candidates, objective, generate=generate, contrast=contrast)
        if text is not None and not str(text).strip():
            raise WorkbenchError("text is empty")
        if aggregate not in AGGREGATIONS:
            raise WorkbenchError(f"aggregate must be token or word, not {aggregate!r}")
        if target is not None:
            if not self.takes_target:
                raise WorkbenchError(f"{self.name} explains the model's own answer; drop target")
            if isinstance(target, str) and target == "":
                raise WorkbenchError("target is empty")
        if generate is not None:
            if not self.takes_generate:
                raise WorkbenchError(f"{self.name} takes no generate")
            if target is not None:
                raise WorkbenchError("give either target or generate, not both")
            if isinstance(generate, bool) or not isinstance(generate, int) or generate < 1:
                raise WorkbenchError(f"generate must be an integer >= 1, not {generate!r}")
        if contrast is not None:
            if not self.takes_contrast:
                raise WorkbenchError(
                    f"contrast applies to attribution methods, not {self.name} ({self.category})"
                )
            if contrast == "":
                raise WorkbenchError("contrast is empty")

    def check_choice(
        self,
        candidates: list[str] | None,
        objective: str | None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
    ) -> None:
        """A decision among candidates: only attribution methods explain one, and the
        choice objectives need the candidates."""
        if objective is not None:
            check_objective(objective)
        if candidates is None:
            if objective in CHOICE_OBJECTIVES:
                raise WorkbenchError(f"the {objective} objective needs candidates")
            return
        if not self.takes_candidates:
            raise WorkbenchError(
                f"{self.name} ({self.category}) cannot explain a choice among candidates; "
                "use an attribution method such as ig"
            )
        if generate is not None or contrast is not None:
            raise WorkbenchError("candidates take no generate or contrast")
        if len(candidates) < 2:
            raise WorkbenchError(f"a choice needs at least two candidates; got {len(candidates)}")

    def resolve_choice(
        self,
        model: LoadedModel,
        text: str,
        candidates: list[str],
        chosen: str | int | None,
        objective: str,
    ) -> Objective:
        """The decision among `candidates` on `model` (explainers/choice.py); with the
        logprob objective, the chosen candidate's text as an ordinary target."""
        if model.kind != "causal":
            raise WorkbenchError(
                f"{self.name} explains a choice of a causal LM, not a {model.kind}"
            )
        chosen_text = None if chosen is None else str(chosen)
        if objective == "logprob":
            obj = prepare_choice(model, text, candidates, chosen_text)
            return prepare(model, text, obj.candidates[obj.chosen])
        return prepare_choice(model, text, candidates, chosen_text, objective=objective)

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The method's parameters, checked and normalised without a model.

        A name the method does not take is an error that lists those it does; a value is
        checked by the method's `param_checks` (`steps must be >= 1, not 0`).
        """
        accepted = self.parameter_names()
        unknown = sorted(set(params) - accepted)
        if unknown:
            known = ", ".join(sorted(accepted)) or "none"
            raise WorkbenchError(
                f"{self.name} takes no parameter {unknown[0]!r}; its parameters: {known}"
            )
        return apply_checks(self.all_param_checks(), params)

    @classmethod
    def all_param_checks(cls) -> dict[str, ParamCheck]:
        """The `param_checks` of this class and its bases (a subclass's entry wins)."""
        checks: dict[str, ParamCheck] = {}
        for klass in reversed(cls.__mro__):
            checks.update(vars(klass).get("param_checks", {}))
        return checks

    def resolve_target(
        self,
        model: LoadedModel,
        text: str,
        target: str | int | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
    ) -> Objective:
        """Tokenize the input and resolve what to explain on `model` (see `prepare`)."""
        if model.kind not in self.model_kinds:
            kinds = " or ".join(self.model_kinds)
            raise WorkbenchError(
                f"{self.name} needs a {kinds} model; {model.name} is a {model.kind}"
            )
        return prepare(model, text, target, generate=generate, contrast=contrast)

    def explain_objective(self, obj: Objective, **params: Any) -> Explanation:
        raise NotImplementedError

    def parameter_names(self) -> set[str]:
        """The method's own keyword parameters (what `--param` and common options may set)."""
        impl = getattr(self, "attribute", None) or self.explain_objective
        skip = {"self", "obj", "model", "text", "kwargs", "params", "progress"}
        return {n for n in inspect.signature(impl).parameters if n not in skip}
