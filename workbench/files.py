"""Files the workbench writes: all-or-nothing, and readable as the user's umask says.

`tempfile` makes private files (0600) and folders (0700) on purpose; a result, an export
or a cached model is meant to be shared like any file the user writes, so each helper
here gives the temporary file the user's usual mode before renaming it into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


def read_jsonl(path: str | os.PathLike, what: str = "dataset") -> list[tuple[int, Any]]:
    """The JSON value on each non-blank line of `path`, with its line number (from 1).

    A missing file, a folder or a line that is not JSON is a one-line error naming the file
    (`what` says what the file was meant to be, e.g. "dataset").
    """
    path = Path(path)
    if path.is_dir():
        raise WorkbenchError(f"{what} {str(path)!r} is a folder, not a JSONL file")
    if not path.is_file():
        raise WorkbenchError(f"no {what} file {str(path)!r}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise WorkbenchError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
    return records


def umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early with one line when `path` cannot be written: no folder, or a folder."""
    path = Path(path)
    if not path.parent.is_dir():
        raise WorkbenchError(f"cannot write {str(path)!r}: folder does not exist")
    if path.is_dir():
        raise WorkbenchError(f"cannot write {str(path)!r}: it is a folder")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it when the block ends without error.

    A failure (or Ctrl-C) removes the temporary file, so no half-written file is left.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` all at once."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def share_folder(folder: str | os.PathLike) -> None:
    """Give a folder made by `tempfile.mkdtemp` the user's usual mode before it is renamed."""
    os.chmod(folder, 0o777 & ~umask())
