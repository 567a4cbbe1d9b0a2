"""Explainability and introspective-agent workbench.

The core: settings, model loading, the DuckDB store and the LLM backends.
"""

__version__ = "0.1.0"
