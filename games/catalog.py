"""Game sets: folders of compiled tw-cooking games with a `manifest.json`.

A game's id is the SHA-256 (first 16 hex digits) of its compiled `.z8` file, and the file
is named after it. Generation is reproducible (`games.generation`), so the same seed gives
the same file and id in any process on any day, a game made twice is stored once, and any
copy of a game set refers to the same games. Several `make` calls may add to one folder:
the manifest is rewritten atomically under a file lock, and a game appears in it only once
its files are complete, so an interrupted `make` leaves the folder consistent.

    >>> from games import make, list_games
    >>> make(level=1, count=2, seed=7, split="train", out="game-sets/l1")   # doctest: +SKIP
    >>> [g.id for g in list_games("game-sets/l1")]                           # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from games.generation import file_id, game_seed, generate
from games.levels import check_split, get_level, level_of_settings
from workbench.errors import WorkbenchError
from workbench.files import write_atomically

MANIFEST = "manifest.json"
GAME_SUFFIXES = (".z8", ".ulx")


@dataclass(frozen=True)
class GameInfo:
    """One compiled game: where it is and what it asks of the player."""

    id: str
    path: Path
    level: int | None
    split: str | None
    seed: int | None
    max_score: int
    walkthrough_steps: int
    ingredients: list[str] = field(default_factory=list, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass
class MakeResult:
    out: Path
    added: list[GameInfo]
    existing: list[GameInfo]  # asked for again: same seed, same game, kept once


def make(
    level: int | Sequence[int],
    count: int,
    seed: int,
    split: str,
    out: str | os.PathLike,
    jobs: int = 1,
    on_game: Callable[[GameInfo], None] | None = None,
) -> MakeResult:
    """Make `count` tw-cooking games of a level (or of each of several levels) into the
    folder `out` (created if needed).

    The same (level, count, seed, split) makes the same games, with the same ids, in any
    process on any day (see `games.generation`); games the folder already holds for those
    seeds are not made again.

    Args:
        level: 1-10, see `games.levels`; several levels share one generating process.
        count: how many games (of each level).
        seed: base seed; each game's own seed is derived from it, the level, split and index.
        split: train, valid or test (tw-cooking's split of foods and preparations).
        out: the game-set folder; games already there are kept and the manifest extended.
        jobs: games compiled in parallel processes.
        on_game: called after each game is in the manifest (for a progress bar).
    """
    levels = [get_level(n).number for n in ([level] if isinstance(level, int) else level)]
    check_split(split)
    if not levels:
        raise WorkbenchError("level must name at least one level")
    if count < 1:
        raise WorkbenchError(f"count must be at least 1, not {count}")
    if jobs < 1:
        raise WorkbenchError(f"jobs must be at least 1, not {jobs}")
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"out {str(folder)!r} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    result = MakeResult(folder, [], [])

    def record(entry: dict[str, Any]) -> None:
        with _manifest_lock(folder):
            games = _read_manifest(folder)
            known = {g["id"] for g in games}
            info = _info_from_entry(folder, entry)
            if entry["id"] in known:
                result.existing.append(info)
            else:
                games.append(entry)
                _write_manifest(folder, games)
                result.added.append(info)
        if on_game is not None:
            on_game(info)

    made = _made_before(folder, split)
    tasks = []
    for n in levels:
        for i in range(count):
            task = (n, split, game_seed(seed, n, split, i))
            if task in made:
                record(made[task])
            else:
                tasks.append(task)
    for entry in generate(tasks, folder, jobs):
        record(entry)
    return result


def _made_before(folder: Path, split: str) -> dict[tuple[int, str, int], dict[str, Any]]:
    """The folder's complete games of a split, by (level, split, game seed)."""
    with _manifest_lock(folder):
        entries = _read_manifest(folder)
    return {
        (e["level"], split, e["seed"]): e
        for e in entries
        if e.get("split") == split
        and e.get("level") is not None
        and e.get("seed") is not None
        and (folder / e["file"]).is_file()
        and (folder / e["file"]).with_suffix(".json").is_file()
    }


def list_games(path: str | os.PathLike) -> list[GameInfo]:
    """The games of a game-set folder (from its manifest), or one compiled game file.

    A folder without a manifest (games made with `tw-make` directly) is read from its
    `.z8`/`.ulx` files and their `.json` companions.
    """
    target = Path(path)
    if not target.exists():
        raise WorkbenchError(f"games path {str(target)!r} does not exist")
    if target.is_file():
        return [_info_from_file(target)]
    if (target / MANIFEST).is_file():
        games = [_info_from_entry(target, e) for e in _read_manifest(target)]
    else:
        files = sorted(p for p in target.iterdir() if p.suffix in GAME_SUFFIXES)
        games = [_info_from_file(p) for p in files]
    if not games:
        raise WorkbenchError(
            f"no games in {str(target)!r}; make some with `games.make` (`workbench games make`)"
        )
    return games


def _info_from_entry(folder: Path, entry: dict[str, Any]) -> GameInfo:
    path = folder / entry["file"]
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise WorkbenchError(
            f"game {entry['file']} listed in {folder / MANIFEST} is missing (or its .json is)"
        )
    return GameInfo(
        id=entry["id"],
        path=path.resolve(),
        level=entry.get("level"),
        split=entry.get("split"),
        seed=entry.get("seed"),
        max_score=int(entry["max_score"]),
        walkthrough_steps=int(entry.get("walkthrough_steps", 0)),
        ingredients=list(entry.get("ingredients", [])),
    )


def _info_from_file(path: Path) -> GameInfo:
    """Check that a file is a compiled TextWorld game and read what its .json says."""
    if path.suffix not in GAME_SUFFIXES or not _has_game_header(path):
        raise WorkbenchError(
            f"{str(path)!r} is not a compiled TextWorld game (.z8 or .ulx with its .json)"
        )
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        metadata = meta.get("metadata", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise WorkbenchError(
            f"{str(path)!r} has no readable {meta_path.name}; TextWorld needs it to play"
        ) from exc
    settings = metadata.get("settings", {})
    quests = meta.get("quests", [])
    max_score = metadata.get("max_score")
    if max_score is None:
        max_score = sum(int(q.get("reward", 1)) for q in quests)
    return GameInfo(
        id=file_id(path),
        path=path.resolve(),
        level=level_of_settings(settings) if settings else None,
        split=settings.get("split"),
        seed=None,
        max_score=int(max_score),
        walkthrough_steps=len(metadata.get("walkthrough") or []),
        ingredients=[i[0] for i in metadata.get("ingredients", [])],
    )


def _has_game_header(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(64)
    if path.suffix == ".ulx":
        return head[:4] == b"Glul"
    # A z-machine story file starts with its version byte (1-8) and is at least 64 bytes.
    return len(head) == 64 and 1 <= head[0] <= 8


def _read_manifest(folder: Path) -> list[dict[str, Any]]:
    path = folder / MANIFEST
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
        return list(data["games"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkbenchError(f"{path} is not a game-set manifest") from exc


def _write_manifest(folder: Path, games: list[dict[str, Any]]) -> None:
    write_atomically(folder / MANIFEST, json.dumps({"version": 1, "games": games}, indent=1))


@contextlib.contextmanager
def _manifest_lock(folder: Path) -> Iterator[None]:
    with (folder / ".manifest.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
