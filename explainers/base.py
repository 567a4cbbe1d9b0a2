"""The `Explanation` every method returns, the `Explainer` base class and the method registry.

Methods register under a name and a taxonomy category (Zhao et al. 2023, "Explainability
for Large Language Models: A Survey"): attribution, attention, probing, prompting.

    >>> from explainers.base import known_methods
    >>> "ig" in known_methods()
    True
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from workbench.errors import UnknownMethodError, WorkbenchError

if TYPE_CHECKING:
    from workbench.models import LoadedModel
    from workbench.store import Store

CATEGORIES = ("attribution", "attention", "probing", "prompting")
DEFAULT_TOLERANCE = 0.05  # |delta| above 5% of |expected| is flagged as incomplete


@dataclass
class Explanation:
    """What a method says about one input: a score per (target row, input token).

    `scores` has one row per target token (one row for a classifier's label) and one column
    per input token. Methods with a completeness property (integrated gradients) fill
    `expected` (f(input) - f(baseline) per row) and `delta` (row sum - expected).
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
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    id: str | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim == 1:
            self.scores = self.scores[None, :]
        rows, cols = self.scores.shape
        if cols != len(self.input_tokens):
            raise ValueError(f"scores have {cols} columns for {len(self.input_tokens)} tokens")
        if self.target_tokens and rows != len(self.target_tokens):
            raise ValueError(f"scores have {rows} rows for {len(self.target_tokens)} targets")

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
            raise WorkbenchError(f"unknown aggregation {level!r}; choose token or word")
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
        return Explanation(**data)

    def top_tokens(self, row: int = 0, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.scores[row])[:k]
        return [(self.input_tokens[i], float(self.scores[row, i])) for i in order]

    # -- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scores"] = self.scores.tolist()
        return data

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Explanation:
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
        record = self.to_dict()
        self.id = store.save_explanation(
            json.loads(json.dumps(record, default=_json_default)), run_id=run_id
        )
        return self.id

    @classmethod
    def load(cls, store: Store, exp_id: str) -> Explanation:
        record = store.get_explanation(exp_id)
        if record is None:
            raise WorkbenchError(f"no explanation with id {exp_id!r} in {store.path}")
        return cls.from_dict(record)


def completeness_tolerance(expected: float, relative: float = DEFAULT_TOLERANCE) -> float:
    # An absolute floor keeps rows whose expected change is ~0 from demanding exactness.
    return max(relative * abs(expected), 1e-3)


class Explainer:
    """Base class: subclasses set `name`, `category`, `summary` and implement `explain`."""

    name: ClassVar[str]
    category: ClassVar[str]
    summary: ClassVar[str] = ""

    def explain(self, model: LoadedModel, text: str, **kwargs: Any) -> Explanation:
        raise NotImplementedError

    def parameter_names(self) -> set[str]:
        """The method's own keyword parameters (what `--param` and common options may set)."""
        impl = getattr(self, "attribute", None) or self.explain
        skip = {"self", "obj", "model", "text", "kwargs", "params"}
        return {n for n in inspect.signature(impl).parameters if n not in skip}


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
    import explainers.probing  # noqa: F401
    import explainers.prompting  # noqa: F401


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


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
