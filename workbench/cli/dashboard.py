"""`workbench dashboard`: the Streamlit app over a store."""

from __future__ import annotations

from pathlib import Path

import typer

from workbench.cli.options import DbOption


def dashboard(
    db: Path | None = DbOption,
    port: int = typer.Option(8501, "--port", help="TCP port on 127.0.0.1 (1-65535)."),
) -> None:
    """Browse runs, episodes, tips and explanations in a Streamlit app on 127.0.0.1.

    Example: workbench dashboard --db workbench.duckdb --port 8501
    """
    from streamlit_app.launch import serve

    serve(db, port)
