"""Generating and compiling tw-cooking games so that a seed means the same game everywhere.

Two things would otherwise make the same seed give different files:

- TextWorld iterates over sets of strings while it builds a game, so the order of what it
  writes depends on Python's per-process hash seed. Games are therefore generated in a
  child process (`python -m games.generation`) started with a fixed `PYTHONHASHSEED`.
- Inform stamps the compile date into the story file's header as its serial number. The
  serial is set to a constant after compiling (the interpreter does not read it).

The child reads its job as JSON on stdin and writes one JSON line per compiled game, so the
parent can record each game as soon as it is complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from games.levels import get_level
from workbench.errors import WorkbenchError

HASH_SEED = "0"
# Bytes 0x12-0x17 of a Z-machine header hold the serial number (by convention YYMMDD).
SERIAL_OFFSET = 0x12
SERIAL = b"000000"


def game_seed(seed: int, level: int, split: str, index: int) -> int:
    """The seed of the index-th game of a `make` call: distinct across levels and splits."""
    digest = hashlib.sha256(f"{seed}:{level}:{split}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def file_id(path: Path) -> str:
    """A game's id: the SHA-256 (first 16 hex digits) of its compiled file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def generate(
    tasks: Sequence[tuple[int, str, int]], folder: Path, jobs: int = 1
) -> Iterator[dict[str, Any]]:
    """Compile one game per (level, split, game seed) into `folder` in a child process with
    a fixed hash seed, yielding each game's manifest entry as soon as its files are in place
    (in the order of `tasks`)."""
    if not tasks:
        return
    job = {"tasks": [list(t) for t in tasks], "folder": str(folder), "jobs": jobs}
    # The child imports this very package, wherever the parent found it.
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONHASHSEED": HASH_SEED, "PYTHONPATH": path}
    with tempfile.TemporaryFile("w+") as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "games.generation"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
        try:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write(json.dumps(job))
            child.stdin.close()
            for line in child.stdout:
                yield json.loads(line)
            child.wait()
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        if child.returncode != 0:
            errors.seek(0)
            lines = errors.read().strip().splitlines() or ["(no message)"]
            raise WorkbenchError(f"game generation failed: {lines[-1]}")


def compile_one(level: int, split: str, seed: int, folder: str) -> dict[str, Any]:
    """Generate and compile one game in a scratch folder, then move it in under its id.

    Runs in the child process: its output only depends on the arguments there."""
    import textworld
    from textworld.challenges.tw_cooking import cooking
    from textworld.generator import compile_game

    lvl = get_level(level)
    scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".making-"))
    try:
        options = textworld.GameOptions()
        options.seeds = seed
        options.path = str(scratch / "game.z8")
        options.force_recompile = True
        game = cooking.make(lvl.tw_cooking_settings(split), options)
        compile_game(game, options)
        z8 = scratch / "game.z8"
        with z8.open("r+b") as fh:
            fh.seek(SERIAL_OFFSET)
            fh.write(SERIAL)
        gid = file_id(z8)
        target = Path(folder) / f"{gid}.z8"
        # The .json is written first: a .z8 without its .json is never left as "complete".
        os.replace(scratch / "game.json", target.with_suffix(".json"))
        os.replace(z8, target)
        return {
            "id": gid,
            "file": target.name,
            "level": level,
            "split": split,
            "seed": seed,
            "max_score": int(game.max_score),
            "walkthrough_steps": len(game.metadata.get("walkthrough") or []),
            "ingredients": [i[0] for i in game.metadata.get("ingredients", [])],
            "tw_uuid": game.metadata.get("uuid"),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _main() -> int:
    """The child: compile the job read from stdin, one JSON line per game on stdout."""
    job = json.loads(sys.stdin.read())
    # TextWorld and the Inform compiler print progress; only the results go to the parent.
    results = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    tasks = [(level, split, seed, job["folder"]) for level, split, seed in job["tasks"]]
    try:
        with contextlib.ExitStack() as stack:
            if job["jobs"] > 1:
                pool = stack.enter_context(ProcessPoolExecutor(max_workers=job["jobs"]))
                entries = pool.map(compile_one, *zip(*tasks))
            else:
                entries = (compile_one(*task) for task in tasks)
            for entry in entries:
                results.write(json.dumps(entry) + "\n")
                results.flush()
    except WorkbenchError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_main())
