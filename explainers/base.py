"""The `Explanation` every method returns, the `Explainer` base class and the method registry.

Methods register under a name and a taxonomy category (Zhao et al. 2023, "Explainability
for Large Language Models: A Survey"): attribution, attention, probing, prompting, and
causal (interventions on activations).

Every method follows one template, `Explainer.explain`: check the request and the
method's parameters (no model needed: `validate_params` runs the same checks before a
model loads), resolve what to explain on the model (`resolve_target`), compute
(`explain_objective`), aggregate. Long computations report `progress(done, total)`.

    >>> from explainers.base import known_methods, validate_params
    >>> "ig" in known_methods()
    True
    >>> validate_params("ig", {"steps": "32"})
    {'steps': 32}
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from workbench.errors import UnknownMethodError, WorkbenchError

if TYPE_CHECKING:
    from explainers.attribution.objective import Objective
    from workbench.models import LoadedModel
    from workbench.store import Store

CATEGORIES = ("attribution", "attention", "probing", "prompting", "causal")
AGGREGATIONS = ("token", "word")
DEFAULT_TOLERANCE = 0.05  # |delta| above 5% of |expected| is flagged as incomplete

Progress = Callable[[int, int], None]
"""`progress(done, total)`: called as a long computation advances (IG knots, perturbation
samples, data-set inputs, metric evaluations, probe layers). `total` may grow while the
work runs (adaptive IG refines until its budget); the last call has done == total."""

# What `explain` takes besides the method's own parameters; `validate_params` checks these too.
REQUEST_OPTIONS = ("text", "target", "generate", "contrast", "aggregate")


class ExplainedInput(Protocol):
    """What an explanation is about: the input as units, the target rows, and the model.

    `explainers.attribution.objective.Objective` (tokens of a local model) and `Units`
    (words, reasoning steps or demonstrations of a prompting method) are the two kinds.
    """

    text: str
    input_tokens: list[str]
    target_tokens: list[str]
    word_ids: list[int]
    aggregation: str

    @property
    def model_name(self) -> str: ...

    def record_extras(self) -> dict[str, Any]:
        """What a stored explanation needs to rebuild this input later (e.g. target ids)."""
        ...


@dataclass
class Units:
    """An input read as whole units (words, reasoning steps, demonstrations) and the answer
    they are scored for: what a prompting method explains."""

    model_name: str
    text: str
    input_tokens: list[str]
    target_tokens: list[str]
    aggregation: str = "word"

    @property
    def word_ids(self) -> list[int]:
        return list(range(len(self.input_tokens)))

    def record_extras(self) -> dict[str, Any]:
        return {}


@dataclass
class Explanation:
    """What a method says about one input: a score per (target row, input token).

    `scores` has one row per target token (one row for a classifier's label) and one column
    per input token. Methods with a completeness property (integrated gradients) fill
    `expected` (f(input) - f(baseline) per row) and `delta` (row sum - expected).

    `status` is "ok" unless the method could not do all it was asked (e.g. "budget_spent":
    adaptive IG ran out of knots); `warnings` say why, in words, and every rendering shows
    them. Build one with `from_objective`; store or send one as `to_record()`.
    """

    method: str
    category: str
    model: str
    input_text: str
    input_tokens: list[str]
    target_tokens: list[str]
    scores: np.ndarray
    baseline: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    expected: list[float] | None = None
    delta: list[float] | None = None
    word_ids: list[int] | None = None  # input token -> word index, for word aggregation
    aggregation: str = "token"
    extras: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    status: str = "ok"
    warnings: list[str] = field(default_factory=list)
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    id: str | None = None

    @classmethod
    def from_objective(
        cls,
        method: Explainer,
        obj: ExplainedInput,
        scores: Any,
        *,
        params: dict[str, Any] | None = None,
        baseline: str | None = None,
        expected: list[float] | None = None,
        delta: list[float] | None = None,
        extras: dict[str, Any] | None = None,
    ) -> Explanation:
        """The explanation `method` gives of `obj`: scores [rows, units] and what goes with them.

        Model, text, tokens, targets and word boundaries come from `obj`, together with what
        a stored explanation needs to be re-evaluated (`obj.record_extras()`, e.g. target ids).
        """
        return cls(
            method=method.name,
            category=method.category,
            model=obj.model_name,
            input_text=obj.text,
            input_tokens=list(obj.input_tokens),
            target_tokens=list(obj.target_tokens),
            scores=scores,
            baseline=baseline,
            params=dict(params or {}),
            expected=expected,
            delta=delta,
            word_ids=list(obj.word_ids),
            aggregation=obj.aggregation,
            extras={**(extras or {}), **obj.record_extras()},
        )

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim == 1:
            self.scores = self.scores[None, :]
        rows, cols = self.scores.shape
        if cols != len(self.input_tokens):
            raise ValueError(f"scores have {cols} columns for {len(self.input_tokens)} tokens")
        if self.target_tokens and rows != len(self.target_tokens):
            raise ValueError(f"scores have {rows} rows for {len(self.target_tokens)} targets")

    def warn(self, message: str, status: str | None = None) -> None:
        """Record a warning (shown by every rendering) and, where given, a status code."""
        self.warnings.append(message)
        if status is not None:
            self.status = status

    # -- completeness ------------------------------------------------------------------

    def incomplete_rows(self, tolerance: float = DEFAULT_TOLERANCE) -> list[int]:
        """Rows whose |delta| exceeds `tolerance` x |expected| (empty without completeness)."""
        if self.expected is None or self.delta is None:
            return []
        return [
            i
            for i, (exp, d) in enumerate(zip(self.expected, self.delta))
            if abs(d) > completeness_tolerance(exp, tolerance)
        ]

    # -- views -------------------------------------------------------------------------

    def aggregate(self, level: str = "word") -> Explanation:
        """Sum sub-word scores into words (a new Explanation; this one is unchanged)."""
        if level == "token":
            return self
        if level != "word":
            raise WorkbenchError(f"aggregate must be token or word, not {level!r}")
        if self.aggregation == "word":
            return self
        if self.word_ids is None:
            raise WorkbenchError(f"{self.method} explanation has no word boundaries to aggregate")
        n_words = max(self.word_ids) + 1
        words = [""] * n_words
        for tok, w in zip(self.input_tokens, self.word_ids):
            words[w] += tok
        summed = np.zeros((self.scores.shape[0], n_words))
        np.add.at(summed.T, np.asarray(self.word_ids), self.scores.T)
        data = {**self.__dict__, "input_tokens": words, "scores": summed}
        data.update(word_ids=list(range(n_words)), aggregation="word", id=None)
        data.update(warnings=list(self.warnings))
        return Explanation(**data)

    def top_tokens(self, row: int = 0, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores[row])[:k]
        return [(self.input_tokens[i], float(self.scores[row, i])) for i in order]

    # -- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scores"] = self.scores.tolist()
        return data

    def to_record(self) -> dict[str, Any]:
        """Plain JSON-ready data (lists, floats, strings): what the store keeps and
        `--format json` prints. `from_dict(to_record())` gives this explanation back."""
        return _plain(self.to_dict())

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_record(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
        if cls is Explanation and data.get("category") == "causal":
            # Patching results have layer rows and fields of their own.
            from explainers.causal.result import PatchingExplanation

            return PatchingExplanation.from_dict(data)
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_html(self) -> str:
        from explainers.render import render_html

        return render_html(self)

    def show(self, console: Any = None, tolerance: float = DEFAULT_TOLERANCE) -> None:
        """Print coloured tokens in a terminal; in Jupyter, display the HTML rendering."""
        if console is None and _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self.to_html()))
            return
        from explainers.render import render_terminal

        render_terminal(self, console=console, tolerance=tolerance)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save(self, store: Store, run_id: str | None = None) -> str:
        """Write this explanation to the store; sets and returns its id."""
        from workbench.store.explanations import save_explanation

        self.id = save_explanation(store, self.to_record(), run_id=run_id)
        return self.id

    @classmethod
    def load(cls, store: Store, exp_id: str) -> Explanation:
        from workbench.store.explanations import get_explanation

        record = get_explanation(store, exp_id)
        if record is None:
            raise WorkbenchError(f"no explanation with id {exp_id!r} in {store.path}")
        return cls.from_dict(record)


def completeness_tolerance(expected: float, relative: float = DEFAULT_TOLERANCE) -> float:
    # An absolute floor keeps rows whose expected change is ~0 from demanding exactness.
    return max(relative * abs(expected), 1e-3)


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
    (or `attribute`'s, for the families that compute through one); it checks their values
    in `check_params`, which needs no model.
    """

    name: ClassVar[str]
    category: ClassVar[str]
    summary: ClassVar[str] = ""
    takes_target: ClassVar[bool] = True
    takes_generate: ClassVar[bool] = True
    takes_contrast: ClassVar[bool] = False
    model_kinds: ClassVar[tuple[str, ...]] = ("causal", "classifier")
    reports_progress: ClassVar[bool] = False  # whether `progress` reaches the computation

    @timed
    def explain(
        self,
        model: LoadedModel,
        text: str,
        target: str | int | None = None,
        *,
        generate: int | None = None,
        contrast: str | None = None,
        aggregate: str = "token",
        progress: Progress | None = None,
        **params: Any,
    ) -> Explanation:
        """Explain `model` on `text`: every method runs these four steps.

        Args:
            target: a continuation (causal LM) or label name/index (classifier) to explain;
                default: the model's own top next token or predicted label.
            generate: explain the model's greedy continuation of this many tokens.
            contrast: explain log p(target) - log p(contrast) (attribution methods).
            aggregate: "token", or "word" to sum sub-word scores into words.
            progress: called as `progress(done, total)` while a long method runs.
            params: the method's own parameters (`parameter_names()`).
        """
        self.check_request(text, target, generate=generate, contrast=contrast, aggregate=aggregate)
        params = self.check_params(params)
        obj = self.resolve_target(model, text, target, generate=generate, contrast=contrast)
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
        aggregate: str = "token",
    ) -> None:
        """The checks that need no model: what this method takes, and values that cannot
        work for any model. `text` None skips the text check (data-set mode)."""
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

    def check_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The method's parameters, checked and normalised without a model.

        A name the method does not take is an error that lists those it does; subclasses
        check values after calling this (`steps must be >= 1`).
        """
        accepted = self.parameter_names()
        unknown = sorted(set(params) - accepted)
        if unknown:
            known = ", ".join(sorted(accepted)) or "none"
            raise WorkbenchError(
                f"{self.name} takes no parameter {unknown[0]!r}; its parameters: {known}"
            )
        return dict(params)

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
        from explainers.attribution.objective import prepare

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
        aggregate=request.get("aggregate", "token"),
    )
    own = explainer.check_params({k: v for k, v in params.items() if k not in REQUEST_OPTIONS})
    return {**request, **own}


# -- parameter checks shared by the methods ------------------------------------------------


def int_param(name: str, value: Any, minimum: int | None = 1) -> int:
    """`value` as an integer >= `minimum` (None: any); command-line strings are parsed."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        bound = "" if minimum is None else f" >= {minimum}"
        raise WorkbenchError(f"{name} must be an integer{bound}, not {value!r}") from None
    if minimum is not None and number < minimum:
        raise WorkbenchError(f"{name} must be >= {minimum}, not {number}")
    return number


def float_param(
    name: str, value: Any, low: float | None = None, high: float | None = None
) -> float:
    """`value` as a float within [low, high] (either bound may be open-ended)."""
    try:
        number = float(value)
        if isinstance(value, bool):
            raise ValueError
    except (TypeError, ValueError):
        raise WorkbenchError(f"{name} must be a number, not {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (
            f"between {low} and {high}"
            if low is not None and high is not None
            else (f">= {low}" if low is not None else f"<= {high}")
        )
        raise WorkbenchError(f"{name} must be {bounds}, not {number}")
    return number


def choice_param(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        options = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        raise WorkbenchError(f"{name} must be {options}, not {value!r}")
    return str(value)


def optional_int_param(name: str, value: Any, minimum: int = 1) -> int | None:
    return None if value is None else int_param(name, value, minimum)


_REGISTRY: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make a method available to `explain()` and `workbench explain`."""
    if cls.category not in CATEGORIES:
        raise ValueError(f"{cls.__name__}: category must be one of {CATEGORIES}")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def known_methods() -> dict[str, type[Explainer]]:
    _load_builtin_methods()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Explainer:
    methods = known_methods()
    if name not in methods:
        raise UnknownMethodError(name, list(methods))
    return methods[name]()


def _load_builtin_methods() -> None:
    # Importing the category packages registers their methods.
    import explainers.attention  # noqa: F401
    import explainers.attribution  # noqa: F401
    import explainers.causal  # noqa: F401
    import explainers.probing  # noqa: F401
    import explainers.prompting  # noqa: F401


def _plain(obj: Any) -> Any:
    """`obj` with numpy values, tuples and non-string keys made plain JSON types; anything
    else JSON cannot hold becomes its string."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
