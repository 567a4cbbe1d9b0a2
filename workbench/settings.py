"""Where the workbench keeps its files, overridable by environment variables."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "workbench.duckdb"


def cache_dir() -> Path:
    """Model downloads and converted weights (`WORKBENCH_CACHE`, default ~/.cache/workbench)."""
    root = os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench"
    return Path(root)


def db_path(explicit: str | os.PathLike | None = None) -> Path:
    """The store file: `--db`, else `WORKBENCH_DB`, else ./workbench.duckdb."""
    return Path(explicit or os.environ.get("WORKBENCH_DB") or DEFAULT_DB)
