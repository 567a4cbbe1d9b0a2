"""Causal interventions: activation patching, attribution patching and causal tracing,
batched over Hugging Face models through named hook points (workbench.anatomy), and
amnesic probing (`amnesic`). Probes say a fact is present in a hidden state; an
intervention says it is used."""

from explainers.causal import attribution, patching, tracing  # noqa: F401  (registers)
from explainers.causal.result import PatchingExplanation

__all__ = ["PatchingExplanation"]
