"""Integrated gradients on the embedding layer (Sundararajan et al. 2017, "Axiomatic
Attribution for Deep Networks").

score[r, p] = (x_p - x'_p) . integral_0^1 d f_r(x' + a (x - x')) / d x_p da, where x are the
prompt's embeddings, x' the baseline's and f_r the objective of target row r. The integral
is a trapezoid rule over knots 0 = a_0 < ... < a_n = 1 (captum's `riemann_trapezoid` with
n_steps = n + 1 gives the same numbers, up to its weights; see the tests).

Completeness: each row should sum to f_r(x) - f_r(x') (`expected`); `delta` is the gap.

`steps="auto"` (the default) refines adaptively, on Simpson panels (a, midpoint, b): f is
known at every knot (it comes with the gradient), so each panel's error is its estimate of
the change of f minus the true change; the worst panels are split in two until every row's
delta is within `tolerance` of its expected change or `max_knots` knots are spent. Each
panel uses Simpson's rule where that integrates the row's slope better than the trapezoid
over its two halves, else the trapezoid (next to a jump of f, Simpson's heavy middle weight
overshoots). A row counts as complete when its delta is within tolerance and its panels'
absolute errors sum to at most MAX_CANCELLATION x tolerance, so that large errors of
opposite signs cannot cancel into a false "ok" (the zero baseline's jump did, once). On the
ten prompts of `benchmarks/ig_accuracy_bench.py` (default model) this takes 87-153 knots
against the plain adaptive trapezoid's 25-175, 128 s of CPU against 158 s. A spent budget
sets the explanation's status to "budget_spent" with a warning, and so does a jump of f that
no knot count can integrate (status "jump"; try another baseline).

`steps=n` evaluates n + 1 evenly spaced knots: one batch, a predictable cost, and no
accuracy guarantee. On real LLMs f jumps sharply along the path, so a fixed count can be
nats off, and more steps need not help. Measured on SmolLM2-135M-Instruct (pad baseline,
the model's next token; |delta| as a share of |expected|; "auto" with the adaptive
trapezoid that preceded the Simpson panels):

    prompt (expected, nats)                  8 steps   32 steps  128 steps  auto
    "The milk is in the fridge. ..." (18.6)    44%       10%        27%      0.3%, 36 knots
    "Is a fridge used to keep ..." (2.2)      145%     1159%       197%      0.5%, 197 knots*
    "You are in a kitchen. ..." (6.2)          27%       16%       209%      0.7%, 156 knots*

Fixed steps ran in bfloat16 (float32 gave 1471% and 147% at 32 steps on the last two).
* auto in float32, the CPU default: in bfloat16, rounding noise kept both above 50% after
the 512-knot budget, and the warning then says to load float32.
Fixed steps that miss the tolerance set the status "incomplete". Data-set mode
(`ig_batch`) uses fixed steps, since that is what batches across inputs.

    >>> from explainers import explain                       # doctest: +SKIP
    >>> exp = explain(lm, "The milk is in the", target=" fridge", method="ig")
    >>> exp.params["knots"], exp.status
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from explainers.attribution.base import Attribution, AttributionExplainer
from explainers.attribution.gradients import batched_row_gradients
from explainers.explainer import Progress
from explainers.explanation import DEFAULT_TOLERANCE, completeness_tolerance
from explainers.objective import Objective
from explainers.params import Float, Int, int_param
from explainers.registry import register
from workbench.errors import WorkbenchError

AUTO_START_INTERVALS = 16
DEFAULT_MAX_KNOTS = 512
MIN_INTERVAL = 1e-6  # narrower panels are not split again
MAX_CANCELLATION = 4.0  # converged only if the panels' absolute errors sum to <= 4 x tolerance


def check_steps(name: str, steps: Any) -> int | str:
    """ "auto", or a number of steps >= 1 (command-line strings are parsed)."""
    if steps == "auto":
        return "auto"
    try:
        return int_param(name, steps)
    except WorkbenchError:
        raise WorkbenchError(f"{name} must be 'auto' or an integer >= 1, not {steps!r}") from None


@register
class IntegratedGradients(AttributionExplainer):
    name = "ig"
    summary = "integrated gradients along the straight path from a baseline (completeness-checked)"
    reports_progress = True

    param_checks = {
        "steps": check_steps,
        "tolerance": Float(low=0.0),
        "max_knots": Int(min=AUTO_START_INTERVALS + 1),
    }

    def attribute(
        self,
        obj: Objective,
        steps: int | str = "auto",
        baseline: str = "pad",
        tolerance: float = DEFAULT_TOLERANCE,
        max_knots: int = DEFAULT_MAX_KNOTS,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> Attribution:
        """Args:
        steps: "auto" (refine until complete, within `max_knots`) or a fixed step count.
        baseline: the path's start: pad (the pad token, else EOS), eos or zero.
        tolerance: completeness target, as a fraction of each row's expected change.
        max_knots: the knot budget of `steps="auto"` (each knot is one forward and one
            backward per target row).
        batch_size: knots per forward (default: as many as fit, see gradients.py).
        """
        auto = steps == "auto"
        path = PathIntegral(obj, obj.input_embeddings, obj.baseline_embeddings(baseline))
        first = AUTO_START_INTERVALS if auto else int(steps)
        # Progress counts the knots known so far: refinement adds rounds of knots only while
        # the integral misses its tolerance, so the total grows with the work really left
        # (a bar over the `max_knots` budget would jump to its end on convergence).
        path.evaluate(
            torch.linspace(0.0, 1.0, first + 1, dtype=torch.float64), batch_size, progress
        )
        converged = path.refine(tolerance, max_knots, batch_size, progress) if auto else None
        if progress is not None:
            progress(path.n_knots, path.n_knots)
        scores, expected, delta = path.result()
        result = Attribution(
            scores,
            {
                "steps": "auto" if auto else int(steps),
                "knots": path.n_knots,
                "rule": "adaptive Simpson" if auto else "trapezoid",
                "tolerance": tolerance,
                **({"max_knots": max_knots} if auto else {}),
            },
            baseline,
            expected,
            delta,
        )
        if path.n_nonfinite:
            result.extras["nonfinite_gradient_knots"] = path.n_nonfinite
        jumps = path.jumps(tolerance) if auto and not converged else []
        if auto:
            result.extras["converged"] = converged
        if jumps:
            result.extras["jumps"] = jumps
        result.status, result.warnings = completeness_status(
            expected, delta, tolerance, result.params["steps"], max_knots, jumps
        )
        if result.status == "budget_spent" and obj.lm.dtype != torch.float32:
            # Measured on SmolLM2-135M: two prompts that spend 512 knots in bfloat16 meet 5%
            # with 197 and 156 knots in float32; rounding noise does not shrink by halving.
            dtype = str(obj.lm.dtype).removeprefix("torch.")
            result.warnings.append(
                f"the model runs in {dtype}, whose rounding noise in f and its gradients no "
                "knot count integrates away: load it with dtype float32 for exact scores"
            )
        return result


def completeness_status(
    expected: list[float],
    delta: list[float],
    tolerance: float,
    steps: int | str,
    max_knots: int = DEFAULT_MAX_KNOTS,
    jumps: list[dict[str, float]] | None = None,
) -> tuple[str, list[str]]:
    """An IG explanation's status and warnings: "ok" when every row meets completeness
    within `tolerance`, else "jump" (f jumps where no knot count helps), "budget_spent"
    (auto ran out of knots) or "incomplete" (fixed steps)."""
    missed = [
        r
        for r, (e, d) in enumerate(zip(expected, delta))
        if abs(d) > completeness_tolerance(e, tolerance)
    ]
    if not missed:
        return "ok", []
    rows = f"{len(missed)} of {len(expected)} target rows"
    if jumps:
        return "jump", [
            f"target {jump['row'] + 1}'s log-probability jumps by {jump['change']:+.2f} "
            f"within alpha {jump['alpha']:.3g}+{jump['width']:.1g}; no path integral can "
            "attribute a jump: try another baseline"
            for jump in jumps
        ]
    if steps == "auto":
        return "budget_spent", [
            f"knot budget spent: after max_knots={max_knots} knots, {rows} still miss "
            f"completeness by more than {tolerance:.0%}; raise max_knots for exact scores"
        ]
    return "incomplete", [
        f"{rows} miss completeness by more than {tolerance:.0%} with steps={steps}; "
        "steps='auto' refines until they meet it"
    ]


class PathIntegral:
    """Knots along the straight path with f and the projected gradient at each."""

    def __init__(self, obj: Objective, x: torch.Tensor, x0: torch.Tensor):
        self.obj, self.x, self.x0 = obj, x, x0
        self.diff = x - x0  # [P, D]
        self.alphas = torch.zeros(0, dtype=torch.float64)
        self.f = torch.zeros(0, obj.n_rows)  # [K, rows]
        self.h = torch.zeros(0, obj.n_rows, x.shape[0])  # [K, rows, P]: grad . (x - x')
        # Simpson panels (a, midpoint, b) of the adaptive rule, as alphas; None: the
        # trapezoid over every knot (fixed steps, captum's rule).
        self.panels: torch.Tensor | None = None

    @property
    def n_knots(self) -> int:
        return int(self.alphas.numel())

    def evaluate(
        self,
        alphas: torch.Tensor,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Add knots at `alphas`; `progress(knots so far, -)` after each batch."""
        diff = self.diff.to(self.obj.lm.device)
        embeds = self.x0.unsqueeze(0) + alphas.float().view(-1, 1, 1).to(diff.device) * diff
        before = self.n_knots

        def report(done: int, total: int) -> None:
            if progress is not None:
                progress(before + done, before + total)

        f, h = batched_row_gradients(
            self.obj, embeds, lambda grad, _: (grad * diff).sum(-1), batch_size, progress=report
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

    def start_panels(self) -> None:
        """Pair the knots evaluated so far (an even number of equal intervals) into Simpson
        panels: from here on the rule is Simpson's on each panel."""
        a = self.alphas
        if (a.numel() - 1) % 2:
            raise ValueError("Simpson panels need an even number of intervals")
        self.panels = torch.stack([a[:-1:2], a[1::2], a[2::2]], dim=1)

    def _panel_knots(self) -> torch.Tensor:
        """[panels, 3]: each panel's knot indices."""
        assert self.panels is not None
        return torch.searchsorted(self.alphas, self.panels.contiguous())

    def panel_errors(self) -> torch.Tensor:
        """[panels, rows]: each panel's estimate of the change of f minus the true change
        (f is known at every knot, so the error of the rule is known exactly)."""
        return self._panel_rules()[0]

    def _panel_rules(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each panel's error, and whether Simpson's rule (else the trapezoid over its two
        halves) integrates that row's slope better there, [panels, rows] both. Simpson is
        exact for cubics; next to a jump of f (the singular all-zero baseline, a token
        flipping) its large middle weight can overshoot where the trapezoid does not, and
        the known change of f says which of the two did better."""
        k = self._panel_knots()
        slope = self.finite_h().sum(-1)  # df/da at each knot, [K, rows]
        width = (self.panels[:, 2] - self.panels[:, 0]).float().unsqueeze(1)
        ends, middle = slope[k[:, 0]] + slope[k[:, 2]], slope[k[:, 1]]
        change = self.f[k[:, 2]] - self.f[k[:, 0]]
        simpson = width * (ends + 4 * middle) / 6 - change
        trapezoid = width * (ends + 2 * middle) / 4 - change
        use_simpson = simpson.abs() <= trapezoid.abs()
        return torch.where(use_simpson, simpson, trapezoid), use_simpson

    def refine(
        self,
        tolerance: float,
        max_knots: int,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> bool:
        """Split the worst Simpson panels in two (two new knots each, at their quarter
        points) until every row's delta is within tolerance; False when the budget is spent
        or only jumps are left first.

        Simpson's rule is exact for cubics, so where f is smooth a few panels do what the
        trapezoid needed dozens of intervals for, while the exact per-panel error still
        finds, and refines, the sharp steps of f that real LLMs have along the path."""
        if self.panels is None:
            self.start_panels()
        while True:
            errors = self.panel_errors()
            expected = self.f[-1] - self.f[0]
            tol = torch.tensor([completeness_tolerance(float(e), tolerance) for e in expected])
            # Complete, and not by luck: panels' errors of opposite signs can cancel in the
            # row's total (on the default model the zero baseline's jump at alpha 0, +5.8
            # nats, once cancelled against its neighbours' -6.3 within 0.5 nats), so their
            # absolute sum must be small too.
            total, spread = errors.sum(0).abs(), errors.abs().sum(0)
            if bool(((total <= tol) & (spread <= MAX_CANCELLATION * tol)).all()):
                return True
            budget = (max_knots - self.n_knots) // 2  # panels that can still be split
            if budget <= 0:
                return False
            badness = (errors.abs() / tol).max(dim=1).values  # [panels]
            # A panel this narrow that still misses is a jump of f, not a curve: halving it
            # again cannot help (e.g. at the all-zero embedding, where RMSNorm makes f
            # discontinuous), so leave it and report it.
            width = self.panels[:, 2] - self.panels[:, 0]
            badness[width < MIN_INTERVAL] = 0.0
            splittable = int((badness > 0.05).sum())
            if splittable == 0:
                return False
            n_split = min(budget, max(4, splittable // 2), splittable)
            worst = torch.topk(badness, n_split).indices
            a, m, b = self.panels[worst].unbind(1)
            left, right = (a + m) / 2, (m + b) / 2
            keep = torch.ones(len(self.panels), dtype=torch.bool)
            keep[worst] = False
            children = torch.cat([torch.stack([a, left, m], 1), torch.stack([m, right, b], 1)])
            self.panels = torch.cat([self.panels[keep], children])
            self.panels = self.panels[torch.argsort(self.panels[:, 0])]
            self.evaluate(torch.cat([left, right]), batch_size, progress)

    def jumps(self, tolerance: float) -> list[dict[str, float]]:
        """Panels narrower than MIN_INTERVAL over which f still changes beyond tolerance."""
        if self.panels is None:
            return []
        errors = self.panel_errors()
        expected = self.f[-1] - self.f[0]
        k = self._panel_knots()
        found = []
        for i in range(errors.shape[0]):
            a, b = float(self.panels[i, 0]), float(self.panels[i, 2])
            for r in range(errors.shape[1]):
                tol = completeness_tolerance(float(expected[r]), tolerance)
                if b - a < MIN_INTERVAL and abs(float(errors[i, r])) > tol:
                    change = float(self.f[k[i, 2], r] - self.f[k[i, 0], r])
                    found.append({"row": r, "alpha": a, "width": b - a, "change": change})
        return found

    def result(self) -> tuple[np.ndarray, list[float], list[float]]:
        a = self.alphas
        weights = torch.zeros_like(a)
        if self.panels is None:  # the trapezoid over every knot
            weights[1:] += (a[1:] - a[:-1]) / 2
            weights[:-1] += (a[1:] - a[:-1]) / 2
            weights = weights.unsqueeze(1).expand(-1, self.h.shape[1])
        else:  # per panel and row Simpson's 1/6, 4/6, 1/6 of its width, or the trapezoid's
            k = self._panel_knots()
            use_simpson = self._panel_rules()[1].double()  # [panels, rows]
            width = (self.panels[:, 2] - self.panels[:, 0]).unsqueeze(1)
            end = width * (use_simpson / 6 + (1 - use_simpson) / 4)
            weights = torch.zeros(a.numel(), self.h.shape[1], dtype=torch.float64)
            weights.index_add_(0, k[:, 0], end)
            weights.index_add_(0, k[:, 1], width - 2 * end)
            weights.index_add_(0, k[:, 2], end)
        scores = (weights.float().unsqueeze(-1) * self.finite_h()).sum(0)  # [rows, P]
        expected = self.f[-1] - self.f[0]
        delta = scores.sum(-1) - expected
        return scores.numpy().astype(np.float64), expected.tolist(), delta.tolist()
