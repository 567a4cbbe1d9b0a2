"""Attention methods: raw weights, rollout, flow and value-norm-weighted attention."""

from explainers.attention import flow, raw, rollout, value_norm  # noqa: F401  (registers)
