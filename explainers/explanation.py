"""`Explanation`: what every method says about one input, a score per (target row, input unit).

This is the lowest module of the package: the methods (explainers/explainer.py and the
families) build explanations, the renderers (explainers/render.py) draw them, and neither is
imported here. Two things plug in from above instead, so that dependencies point downward:

- a subclass with fields of its own (e.g. the causal family's `PatchingExplanation`) names
  its category in its class statement, and `Explanation.from_dict` builds that subclass for a
  record of that category;
- explainers/render.py installs the HTML and terminal renderings (`set_renderers`) that
  `to_html` and `show` use.

Both happen when the `explainers` package is imported, which Python does before any of its
modules (explainers/__init__.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from workbench.errors import WorkbenchError

if TYPE_CHECKING:
    from rich.console import Console

    from workbench.store import Store

AGGREGATIONS = ("token", "word")
DEFAULT_TOLERANCE = 0.05  # |delta| above 5% of |expected| is flagged as incomplete


class ExplainedInput(Protocol):
    """What an explanation is about: the input as units, the target rows, and the model.

    `explainers.objective.Objective` (tokens of a local model) and `Units`
    (words, reasoning steps or demonstrations of a prompting method) are the two kinds.
    """

    text: str
    input_tokens: list[str]
    target_tokens: list[str]
    word_ids: list[int]
    aggregation: str

    @property
    def model_name(self) -> str: ...

    @property
    def model_info(self) -> dict[str, Any] | None:
        """Which weights are explained (`workbench.models.ModelIdentity.to_dict()`: base,
        adapter and its hash, dtype), where known."""
        ...

    def record_extras(self) -> dict[str, Any]:
        """What a stored explanation needs to rebuild this input later (e.g. target ids)."""
        ...


class Method(Protocol):
    """What an explanation records of the method that made it (an `Explainer`)."""

    name: str
    category: str


@dataclass
class Units:
    """An input read as whole units (words, reasoning steps, demonstrations) and the answer
    they are scored for: what a prompting method explains."""

    model_name: str
    text: str
    input_tokens: list[str]
    target_tokens: list[str]
    aggregation: str = "word"
    model_info: dict[str, Any] | None = None  # the answering LLM's identity, where known

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

    A subclass with fields of its own is declared with its category,
    `class PatchingExplanation(Explanation, category="causal")`, so that `from_dict` (and the
    store's `load`) give records of that category back as that subclass.
    """

    _by_category: ClassVar[dict[str, type[Explanation]]] = {}

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
    # Which weights were explained: `workbench.models.ModelIdentity.to_dict()` (base model,
    # adapter folder and its hash, dtype); `model` alone names only the base model. Re-using
    # the explanation (`workbench evaluate --explanation`) loads this model again.
    model_info: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    id: str | None = None

    def __init_subclass__(cls, category: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if category is not None:
            Explanation._by_category[category] = cls

    @classmethod
    def from_objective(
        cls,
        method: Method,
        obj: ExplainedInput,
        scores: Any,
        *,
        params: dict[str, Any] | None = None,
        baseline: str | None = None,
        expected: list[float] | None = None,
        delta: list[float] | None = None,
        extras: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Explanation:
        """The explanation `method` gives of `obj`: scores [rows, units] and what goes with them.

        Model, text, tokens, targets and word boundaries come from `obj`, together with what
        a stored explanation needs to be re-evaluated (`obj.record_extras()`, e.g. target ids).
        `fields` are a subclass's own fields (e.g. a patching explanation's layers).
        """
        return cls(
            method=method.name,
            category=method.category,
            model=obj.model_name,
            model_info=obj.model_info,
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
            **fields,
        )

    def __post_init__(self) -> None:
        self.scores = score_matrix(self.scores)
        rows, cols = self.scores.shape
        if cols != len(self.input_tokens):
            raise ValueError(f"scores have {cols} columns for {len(self.input_tokens)} tokens")
        if self.target_tokens and rows != len(self.target_tokens):
            raise ValueError(f"scores have {rows} rows for {len(self.target_tokens)} targets")

    @property
    def model_label(self) -> str:
        """The explained model for people: base, adapter and its hash, dtype."""
        from workbench.models import model_label

        return model_label(self.model, self.model_info)

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
        """The explanation `to_record()` gave, as the subclass declared for its category."""
        if cls is Explanation:
            cls = Explanation._by_category.get(data.get("category", ""), Explanation)
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_html(self) -> str:
        return _renderers().html(self)

    def show(self, console: Console | None = None, tolerance: float = DEFAULT_TOLERANCE) -> None:
        """Print coloured tokens in a terminal; in Jupyter, display the HTML rendering."""
        if console is None and _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self.to_html()))
            return
        _renderers().terminal(self, console, tolerance)

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


@dataclass(frozen=True)
class Renderers:
    """How explanations are drawn: installed by explainers/render.py (`set_renderers`)."""

    html: Callable[[Explanation], str]
    terminal: Callable[[Explanation, Console | None, float], None]


_RENDERERS: list[Renderers] = []


def set_renderers(renderers: Renderers) -> None:
    _RENDERERS[:] = [renderers]


def _renderers() -> Renderers:
    if not _RENDERERS:  # only if explainers/render.py was never imported: a packaging bug
        raise RuntimeError("no renderers installed; import explainers (explainers/render.py)")
    return _RENDERERS[0]


def score_matrix(scores: Any) -> np.ndarray:
    """`scores` as a float64 matrix [rows, columns] (one row for a single vector)."""
    matrix = np.asarray(scores, dtype=np.float64)
    return matrix[None, :] if matrix.ndim == 1 else matrix


def completeness_tolerance(expected: float, relative: float = DEFAULT_TOLERANCE) -> float:
    # An absolute floor keeps rows whose expected change is ~0 from demanding exactness.
    return max(relative * abs(expected), 1e-3)


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
