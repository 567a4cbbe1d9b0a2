"""Parameter checks: each method declares how its parameters' values are checked.

A method's `param_checks` table maps a parameter name to a check, and the base
`Explainer.check_params` applies it, with no model: values from the command line arrive as
strings and come out normalised (`"32"` -> 32), and a bad value is a one-line
`WorkbenchError` that names the parameter (`steps must be >= 1, not 0`).

    >>> checks = {"steps": Int(min=1), "alpha": Float(low=0.0), "norm": Choice("l1", "l2")}
    >>> apply_checks(checks, {"steps": "32", "norm": "l2"})
    {'steps': 32, 'norm': 'l2'}
    >>> apply_checks(checks, {"steps": 0})
    Traceback (most recent call last):
    workbench.errors.WorkbenchError: steps must be >= 1, not 0

A check is any callable `check(name, value) -> value`; the constructors below cover the
common kinds, and a method with an unusual value writes its own function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError

ParamCheck = Callable[[str, Any], Any]
"""`check(name, value)`: the value normalised, or a one-line `WorkbenchError` naming `name`."""


def apply_checks(checks: Mapping[str, ParamCheck], params: Mapping[str, Any]) -> dict[str, Any]:
    """`params` with each value that has a check replaced by its checked value."""
    return {name: checks[name](name, v) if name in checks else v for name, v in params.items()}


@dataclass(frozen=True)
class Int:
    """An integer >= `min` (None: any); `optional`: None is allowed too (e.g. "no batching")."""

    min: int | None = 1
    optional: bool = False

    def __call__(self, name: str, value: Any) -> int | None:
        if value is None and self.optional:
            return None
        return int_param(name, value, self.min)


@dataclass(frozen=True)
class Float:
    """A number within [low, high] (either bound may be open-ended)."""

    low: float | None = None
    high: float | None = None

    def __call__(self, name: str, value: Any) -> float:
        return float_param(name, value, self.low, self.high)


class Choice:
    """One of the given strings: `Choice("l1", "l2")` or `Choice(*NORMS)`."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, name: str, value: Any) -> str:
        return choice_param(name, value, self.choices)

    def __repr__(self) -> str:
        return f"Choice{self.choices!r}"


@dataclass(frozen=True)
class Bool:
    """True or False; command-line strings `true/false`, `yes/no`, `1/0` are parsed."""

    def __call__(self, name: str, value: Any) -> bool:
        return bool_param(name, value)


@dataclass(frozen=True)
class IntList:
    """Integers such as layers or positions: `"0,2,5-7"` (ranges inclusive, `-1` counts from
    the end), one integer, or a list; None, "" or "all" mean all (None)."""

    def __call__(self, name: str, value: Any) -> list[int] | None:
        return parse_int_list(name, value)


# -- the checks as functions (the constructors above call these) ---------------------------


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
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise WorkbenchError(f"{name} must be a number, not {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            bounds = f"between {low} and {high}"
        else:
            bounds = f">= {low}" if low is not None else f"<= {high}"
        raise WorkbenchError(f"{name} must be {bounds}, not {number}")
    return number


def choice_param(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        options = " or ".join(choices) if len(choices) == 2 else f"one of {', '.join(choices)}"
        raise WorkbenchError(f"{name} must be {options}, not {value!r}")
    return str(value)


_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


def bool_param(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise WorkbenchError(f"{name} must be true or false, not {value!r}")


def parse_int_list(name: str, value: Any) -> list[int] | None:
    """`"0,2,5-7"`, `"-3--1"`, an int, a list of ints -> ints (ranges inclusive); None, ""
    and "all" -> None (all). The one parser of layer and position lists.

        >>> parse_int_list("layers", "0,2,5-7"), parse_int_list("layers", "all")
        ([0, 2, 5, 6, 7], None)
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        out: list[int] = []
        for item in value.split(","):
            item = item.strip()
            # The first character may be a minus sign; a "-" after it separates a range.
            low, sep, high = item[1:].partition("-")
            try:
                if sep:
                    out.extend(range(int(item[0] + low), int(high) + 1))
                else:
                    out.append(int(item))
            except ValueError:
                raise WorkbenchError(
                    f"{name} takes 'all', numbers and ranges like 0,2,5-7; not {item!r}"
                ) from None
        return out
    try:
        return [int_param(name, v, None) for v in value]
    except TypeError:
        raise WorkbenchError(f"{name} must be a list of integers, not {value!r}") from None
