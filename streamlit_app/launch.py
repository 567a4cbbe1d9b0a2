"""Starting the dashboard: checks that fail fast with one line, then `streamlit run`.

`workbench dashboard` calls `serve()`; the checks live here so that a bad database or a
busy port is reported before Streamlit starts (Streamlit itself would start and then show
a traceback in the browser, or pick another port without saying so).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.settings import db_path
from workbench.store import Store

APP = Path(__file__).with_name("app.py")
HOST = "127.0.0.1"


def check_database(path: str | os.PathLike | None) -> Path:
    """The database to show: it must exist (the dashboard never creates one) and be DuckDB.

    A writable file's schema is brought up to date here, once, before any page reads it;
    a read-only file is shown as it is.
    """
    resolved = db_path(path)
    if not resolved.exists():
        raise WorkbenchError(
            f"no database at {str(resolved)!r}; record something first "
            "(`workbench play ...`) or pass --db PATH"
        )
    Store(resolved, read_only=True)  # a DuckDB file
    Store(resolved).applied_migrations()  # the first read migrates a writable file
    return resolved.resolve()


def check_port(port: int) -> int:
    """A free TCP port on 127.0.0.1, or a one-line error."""
    if not 1 <= port <= 65535:
        raise WorkbenchError(f"port {port} is out of range; use 1-65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as Streamlit's server sets it: a port left in TIME_WAIT is usable,
        # one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise WorkbenchError(
                f"port {port} on {HOST} is in use ({exc.strerror}); pick another with --port"
            ) from exc
    return port


def streamlit_command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        HOST,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]


def streamlit_env(db: Path) -> dict[str, str]:
    """The server's environment: this one, with the database in $WORKBENCH_DB (where every
    page reads it: `workbench.settings.db_path`)."""
    return {**os.environ, "WORKBENCH_DB": str(db)}


def serve(db: str | os.PathLike | None, port: int) -> None:
    """Check the database and the port, then replace this process with the Streamlit
    server (so that stopping this process stops the server; nothing is left behind)."""
    path = check_database(db)
    check_port(port)
    command = streamlit_command(port)
    print(f"dashboard on http://{HOST}:{port} for {path} (Ctrl-C stops it)", file=sys.stderr)
    sys.stderr.flush()
    os.execve(command[0], command, streamlit_env(path))
