"""Integrated gradients on the embedding layer (Sundararajan et al. 2017, "Axiomatic
Attribution for Deep Networks").

score[r, p] = (x_p - x'_p) . integral_0^1 d f_r(x' + a (x - x')) / d x_p da, where x are the
prompt's embeddings, x' the baseline's and f_r the objective of target row r. The integral
is a trapezoid rule over knots 0 = a_0 < ... < a_n = 1, so `steps=n` evaluates n + 1 points
(captum's `riemann_trapezoid` with n_steps = n + 1 gives the same numbers).

Completeness: each row should sum to f_r(x) - f_r(x') (`expected`); `delta` is the gap. On
real LLMs f jumps sharply along the path, so a fixed step count can be several nats off.
`steps="auto"` refines adaptively: f is known at every knot (it comes with the gradient),
so each interval's error is its trapezoid estimate minus the true change of f over it; the
worst intervals are halved until every row is within tolerance or the budget is spent.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="ig", steps="auto")
"""

from __future__ import annotations

import numpy as np
import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.attribution.objective import Objective
from explainers.base import DEFAULT_TOLERANCE, completeness_tolerance, register
from workbench.errors import WorkbenchError

AUTO_START_INTERVALS = 16
AUTO_MAX_KNOTS = 512
MIN_INTERVAL = 1e-6  # narrower intervals are not split again


@register
class IntegratedGradients(AttributionExplainer):
    name = "ig"
    summary = "integrated gradients along the straight path from a baseline (completeness-checked)"

    def attribute(
        self,
        obj: Objective,
        steps: int | str = 32,
        baseline: str = "pad",
        tolerance: float = DEFAULT_TOLERANCE,
        max_knots: int = AUTO_MAX_KNOTS,
        batch_size: int | None = None,
    ) -> Attribution:
        auto = steps == "auto"
        if not auto:
            try:
                steps = int(steps)
            except (TypeError, ValueError):
                message = f"--steps must be a positive integer or 'auto', not {steps!r}"
                raise WorkbenchError(message) from None
            if steps <= 0:
                raise WorkbenchError(f"--steps must be a positive integer or 'auto', not {steps}")
        x = obj.input_embeddings
        x0 = obj.baseline_embeddings(baseline)
        path = PathIntegral(obj, x, x0, batch_size)
        first = AUTO_START_INTERVALS if auto else steps
        path.evaluate(torch.linspace(0.0, 1.0, first + 1, dtype=torch.float64))
        converged = True
        if auto:
            converged = path.refine(tolerance, max_knots)
        scores, expected, delta = path.result()
        params = {
            "steps": "auto" if auto else steps,
            "knots": path.n_knots,
            "rule": "trapezoid" if not auto else "adaptive trapezoid",
            "tolerance": tolerance,
        }
        extras: dict = {"converged": converged} if auto else {}
        if auto and not converged:
            extras["jumps"] = path.jumps(tolerance)
        if path.n_nonfinite:
            extras["nonfinite_gradient_knots"] = path.n_nonfinite
        return Attribution(scores, params, baseline, expected, delta, extras)


class PathIntegral:
    """Knots along the straight path with f and the projected gradient at each."""

    def __init__(self, obj: Objective, x: torch.Tensor, x0: torch.Tensor, batch_size: int | None):
        self.obj, self.x, self.x0, self.batch_size = obj, x, x0, batch_size
        self.diff = x - x0  # [P, D]
        self.alphas = torch.zeros(0, dtype=torch.float64)
        self.f = torch.zeros(0, obj.n_rows)  # [K, rows]
        self.h = torch.zeros(0, obj.n_rows, x.shape[0])  # [K, rows, P]: grad . (x - x')

    @property
    def n_knots(self) -> int:
        return int(self.alphas.numel())

    def evaluate(self, alphas: torch.Tensor) -> None:
        diff = self.diff.to(self.obj.lm.device)
        embeds = self.x0.unsqueeze(0) + alphas.float().view(-1, 1, 1).to(diff.device) * diff
        f, h = batched_row_gradients(
            self.obj, embeds, lambda grad, _: (grad * diff).sum(-1), self.batch_size
        )
        alphas = torch.cat([self.alphas, alphas])
        order = torch.argsort(alphas)
        self.alphas = alphas[order]
        self.f = torch.cat([self.f, f])[order]
        self.h = torch.cat([self.h, h])[order]

    @property
    def n_nonfinite(self) -> int:
        return int((~torch.isfinite(self.h)).any(-1).any(-1).sum())

    def finite_h(self) -> torch.Tensor:
        """h with non-finite knots replaced by the nearest finite knot's values.

        Gradients can overflow at a degenerate point: at the all-zero embedding a
        bias-free pre-norm transformer (Llama, SmolLM) keeps every hidden state at exactly
        zero, and each RMSNorm then multiplies the gradient by 1/sqrt(eps). f itself stays
        finite there, so the interval errors (and the completeness check) still measure
        the cost of the substitution, and `steps="auto"` refines it away.
        """
        h = self.h
        bad = ~torch.isfinite(h).all(-1)  # [K, rows]
        if not bool(bad.any()):
            return h
        h = h.clone()
        for r in range(h.shape[1]):
            good = torch.nonzero(~bad[:, r]).flatten()
            if good.numel() == 0:
                raise WorkbenchError("integrated gradients: every gradient on the path overflowed")
            for k in torch.nonzero(bad[:, r]).flatten().tolist():
                nearest = good[torch.argmin((self.alphas[good] - self.alphas[k]).abs())]
                h[k, r] = h[nearest, r]
        return h

    def interval_errors(self) -> torch.Tensor:
        """[intervals, rows]: trapezoid estimate of each interval's change minus the true one."""
        width = (self.alphas[1:] - self.alphas[:-1]).float().unsqueeze(1)
        slope = self.finite_h().sum(-1)  # df/da at each knot, [K, rows]
        estimate = width * (slope[1:] + slope[:-1]) / 2
        return estimate - (self.f[1:] - self.f[:-1])

    def refine(self, tolerance: float, max_knots: int) -> bool:
        """Halve the worst intervals until every row's delta is within tolerance."""
        while True:
            errors = self.interval_errors()
            expected = self.f[-1] - self.f[0]
            tol = torch.tensor([completeness_tolerance(float(e), tolerance) for e in expected])
            if bool((errors.sum(0).abs() <= tol).all()):
                return True
            budget = max_knots - self.n_knots
            if budget <= 0:
                return False
            badness = (errors.abs() / tol).max(dim=1).values  # [intervals]
            # An interval this narrow that still misses is a jump of f, not a curve:
            # halving it again cannot help (e.g. at the all-zero embedding, where RMSNorm
            # makes f discontinuous), so leave it and report it.
            width = self.alphas[1:] - self.alphas[:-1]
            badness[width < MIN_INTERVAL] = 0.0
            splittable = int((badness > 0.05).sum())
            if splittable == 0:
                return False
            n_split = min(budget, max(8, splittable // 2), splittable)
            worst = torch.topk(badness, n_split).indices
            mids = (self.alphas[worst] + self.alphas[worst + 1]) / 2
            self.evaluate(mids)

    def jumps(self, tolerance: float) -> list[dict[str, float]]:
        """Intervals narrower than MIN_INTERVAL over which f still changes beyond tolerance."""
        errors = self.interval_errors()
        expected = self.f[-1] - self.f[0]
        found = []
        for i in range(errors.shape[0]):
            a, b = float(self.alphas[i]), float(self.alphas[i + 1])
            for r in range(errors.shape[1]):
                tol = completeness_tolerance(float(expected[r]), tolerance)
                if b - a < MIN_INTERVAL and abs(float(errors[i, r])) > tol:
                    change = float(self.f[i + 1, r] - self.f[i, r])
                    found.append({"row": r, "alpha": a, "width": b - a, "change": change})
        return found

    def result(self) -> tuple[np.ndarray, list[float], list[float]]:
        a = self.alphas
        weights = torch.zeros_like(a)
        weights[1:] += (a[1:] - a[:-1]) / 2
        weights[:-1] += (a[1:] - a[:-1]) / 2
        scores = (weights.float().view(-1, 1, 1) * self.finite_h()).sum(0)  # [rows, P]
        expected = self.f[-1] - self.f[0]
        delta = scores.sum(-1) - expected
        return scores.numpy().astype(np.float64), expected.tolist(), delta.tolist()
