"""Explainability and introspective-agent workbench: core (settings, models, store, LLM backends)."""

__version__ = "0.1.0"
