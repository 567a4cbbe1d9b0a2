"""Explainability and introspective-agent workbench.

The core: settings, model loading, the DuckDB store and the LLM backends.
"""

from workbench.shadowing import guard_packages

__version__ = "0.1.0"

guard_packages()
