"""The statistics behind every reported figure: intervals for success rates and scores, and
paired tests of two conditions played on the same games. Reports, the dashboard and
experiments all call these functions, so one number has one definition.

    >>> wilson_interval(0, 2)          # 0 of 2 games: not "0% [0%, 0%]"
    Interval(mean=0.0, low=0.0, high=0.6576..., n=2)
    >>> score_interval([0.0, 0.0]).high > 0  # nor for scores
    True
    >>> mcnemar([True, True, False], [False, True, False]).p_value
    1.0
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

NAN = math.nan


@functools.lru_cache(maxsize=256)
def _z(confidence: float) -> float:
    """The two-sided normal quantile (cached: a dashboard page asks for it per group)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


@functools.lru_cache(maxsize=256)
def _t(confidence: float, df: int) -> float:
    """The two-sided Student t quantile on `df` degrees of freedom (cached)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation in floats (`statistics` is exact and slow)."""
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval; `low` and `high` are NaN where there is
    too little data for one."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedTest:
    """Condition B against condition A on the same units (games, or game trials).

    `difference` is mean(B) - mean(A) with its interval; `p_value` is two-sided. For
    McNemar, `a_only` / `b_only` count the pairs only A / only B succeeded on.
    """

    test: str
    n: int
    difference: float
    low: float
    high: float
    p_value: float
    a_only: int | None = None
    b_only: int | None = None


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a success rate (Wilson 1927).

    Why Wilson: a t or normal interval over 0/1 outcomes collapses to [0%, 0%] when no game
    is won (its spread is zero) and can leave [0, 1]; Wilson's interval stays inside [0, 1]
    and is never degenerate, e.g. 0 of 2 gives [0%, 66%]. It is also close to nominal
    coverage for small n, where Clopper-Pearson is needlessly wide.

    `successes` may be fractional: a mean of per-game success rates (several trials per
    game) times the number of games, so each game counts once.
    """
    if n < 1:
        return Interval(NAN, NAN, NAN, 0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n={n}], not {successes}")
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n)


def score_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of scores in [0, 1] (normalised game scores) with a Student t interval whose
    spread cannot collapse, clipped to [0, 1].

    Why not a plain t interval: a handful of games that all score the same (two games,
    both 0) have zero sample spread, and the t interval collapses to [0%, 0%]. Here the
    spread is estimated as if two more games had been played, one scoring 0 and one 1 (the
    "plus two" of Agresti and Coull for proportions, applied to bounded scores): it never
    vanishes, and it fades as real games accumulate (20 games of 0 give [0%, 10%]).
    Why t: the spread comes from the same few games; t widens the interval for that. NaN
    bounds below two values. Success rates use `wilson_interval` instead.
    """
    n = len(values)
    if n == 0:
        return Interval(NAN, NAN, NAN, 0)
    if n < 2:
        return Interval(float(values[0]), NAN, NAN, n)
    mean = math.fsum(values) / n
    squares = math.fsum((v - mean) ** 2 for v in values) + mean**2 + (1 - mean) ** 2
    sd = math.sqrt(squares / (n + 1))  # n + 2 values, one degree of freedom for the mean
    half = _t(confidence, n - 1) * sd / math.sqrt(n)
    return Interval(mean, max(0.0, mean - half), min(1.0, mean + half), n)


def mcnemar(a: Sequence[bool], b: Sequence[bool], confidence: float = 0.95) -> PairedTest:
    """McNemar's exact test: did condition B succeed on other units than condition A?

    `a[i]` and `b[i]` are the outcomes of the same game (and trial) under A and B. Only the
    discordant pairs carry information; under "no difference" each is equally likely to
    favour A or B, so the exact two-sided binomial test on them is used (the chi-square
    version is unreliable with the handful of discordant games an experiment has). The
    interval is the Wald interval of the paired difference in success rates.
    """
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, not {len(a)} and {len(b)}")
    n = len(a)
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    if n == 0:
        return PairedTest("mcnemar", 0, NAN, NAN, NAN, NAN, 0, 0)
    from scipy.stats import binomtest

    discordant = a_only + b_only
    p_value = 1.0 if discordant == 0 else binomtest(b_only, discordant, 0.5).pvalue
    difference = (b_only - a_only) / n
    z = _z(confidence)
    se = math.sqrt(max(discordant / n - difference**2, 0.0) / n)
    return PairedTest(
        "mcnemar",
        n,
        difference,
        max(-1.0, difference - z * se),
        min(1.0, difference + z * se),
        float(p_value),
        a_only,
        b_only,
    )


def paired_t(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedTest:
    """Paired t-test of B - A on the same games, for normalised scores.

    Why paired: games differ far more from each other than conditions do, so comparing
    each game with itself removes that spread. Why t rather than a bootstrap: with the
    few games of an experiment a bootstrap's resamples repeat the same handful of values
    and its interval is too narrow. NaN below two pairs; identical differences give a
    zero-width interval (p 1 when they are all zero, else 0).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need equal lengths, not {len(a)} and {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b)]
    n = len(diffs)
    if n == 0:
        return PairedTest("paired t", 0, NAN, NAN, NAN, NAN)
    if n < 2:
        return PairedTest("paired t", n, diffs[0], NAN, NAN, NAN)
    mean, sd = _mean_sd(diffs)
    if sd <= 1e-12 * max(1.0, abs(mean)):  # identical differences (up to rounding)
        return PairedTest("paired t", n, mean, mean, mean, 1.0 if mean == 0 else 0.0)
    from scipy.stats import t

    se = sd / math.sqrt(n)
    half = _t(confidence, n - 1) * se
    p_value = 2 * float(t.sf(abs(mean / se), n - 1))
    return PairedTest("paired t", n, mean, mean - half, mean + half, p_value)
