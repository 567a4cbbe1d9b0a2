"""A batched environment over `textworld.gym`: many games stepping together.

Each slot of the batch holds one game at a time and can be given a new game as soon as its
episode ends (the runner keeps every slot busy instead of waiting for the slowest game, as
`textworld.gym`'s own batch environment does). With `workers > 0` the slots are spread over
that many processes, because a TextWorld step (z-machine plus the admissible-command and
fact computation) costs 5-15 ms of Python: at 64 parallel games that would otherwise take
most of a GPU step's time.

    >>> from games.env import BatchEnv
    >>> with BatchEnv(parallel=2) as env:                        # doctest: +SKIP
    ...     states = env.reset({0: "game-sets/l1/ab12.z8", 1: "game-sets/l1/cd34.z8"})
    ...     states = env.step({0: "inventory", 1: "look"})
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError


@dataclass
class GameState:
    """What the game says after a reset or a step."""

    observation: str
    score: int
    max_score: int
    moves: int
    done: bool
    won: bool
    lost: bool
    objective: str
    admissible_commands: list[str]
    inventory: str = ""
    description: str = ""
    facts: list[str] = field(default_factory=list)  # e.g. "in(carrot, fridge)"
    walkthrough: list[str] = field(default_factory=list)
    # The quest's commands still to do from this state (TextWorld's winning policy), which
    # is what an expert would do next after any detour; empty once won or lost.
    policy_commands: list[str] = field(default_factory=list)


def request_infos():
    from textworld import EnvInfos

    return EnvInfos(
        admissible_commands=True,
        objective=True,
        score=True,
        max_score=True,
        won=True,
        lost=True,
        moves=True,
        facts=True,
        inventory=True,
        description=True,
        policy_commands=True,
        extras=["walkthrough"],
    )


# The z-machine prints a prompt and a status line ("> -= Kitchen =-0/1") after each reply.
_STATUS_LINE = re.compile(r"\n>[^\n]*$")


def clean_observation(text: str) -> str:
    """The game's text without its prompt/status line and the ASCII-art title banner
    (hundreds of tokens of `$` and `\\` in every first observation)."""
    lines = _STATUS_LINE.sub("", text).splitlines()
    return "\n".join(line for line in lines if not _is_art(line)).strip()


def _is_art(line: str) -> bool:
    visible = [c for c in line if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    return len(visible) >= 8 and letters < len(visible) / 3


class _Game:
    """One slot's game, in whichever process owns the slot."""

    _env_ids: dict[str, str] = {}

    def __init__(self) -> None:
        self.env = None

    def reset(self, path: str) -> GameState:
        import textworld.gym

        self.close()
        env_id = self._env_ids.get(path)
        if env_id is None:
            # max_episode_steps=0: the runner counts steps itself (no Limit wrapper).
            env_id = textworld.gym.register_game(path, request_infos(), max_episode_steps=0)
            self._env_ids[path] = env_id
        self.env = textworld.gym.make(env_id)
        with warnings.catch_warnings():
            # jericho warns that it cannot detect score changes in TextWorld games; TextWorld
            # tracks the score itself, so the warning is noise.
            warnings.simplefilter("ignore")
            obs, infos = self.env.reset()
        return _state(obs, 0, False, infos)

    def step(self, command: str) -> GameState:
        if self.env is None:
            raise RuntimeError("step before reset")
        obs, score, done, infos = self.env.step(command)
        return _state(obs, score, done, infos)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def _state(obs: str, score: Any, done: bool, infos: dict[str, Any]) -> GameState:
    facts = [f"{p.name}({', '.join(a.name for a in p.arguments)})" for p in infos["facts"]]
    return GameState(
        observation=clean_observation(obs),
        score=int(infos.get("score", score) or 0),
        max_score=int(infos["max_score"]),
        moves=int(infos.get("moves") or 0),
        done=bool(done),
        won=bool(infos["won"]),
        lost=bool(infos["lost"]),
        objective=infos["objective"],
        admissible_commands=list(infos["admissible_commands"] or []),
        inventory=clean_observation(infos.get("inventory") or ""),
        description=clean_observation(infos.get("description") or ""),
        facts=sorted(facts),
        walkthrough=list(infos.get("extra.walkthrough") or []),
        policy_commands=list(infos.get("policy_commands") or []),
    )


def _serve(conn) -> None:
    """A worker process: owns some slots' games and answers reset/step/close requests."""
    games: dict[int, _Game] = {}
    while True:
        request = conn.recv()
        kind = request[0]
        if kind == "close":
            for game in games.values():
                game.close()
            conn.send(None)
            return
        try:
            if kind == "reset":
                reply = {s: games.setdefault(s, _Game()).reset(p) for s, p in request[1].items()}
            else:
                reply = {s: games[s].step(c) for s, c in request[1].items()}
            conn.send(("ok", reply))
        except Exception as exc:  # sent back so the parent can raise it with context
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class BatchEnv:
    """`parallel` game slots, stepped in-process (workers=0) or over worker processes."""

    def __init__(self, parallel: int, workers: int | str = "auto") -> None:
        if parallel < 1:
            raise WorkbenchError(f"parallel must be at least 1, not {parallel}")
        if workers == "auto":
            cpus = os.cpu_count() or 1
            workers = 0 if parallel < 4 or cpus <= 2 else min(parallel, cpus - 1)
        self.parallel = parallel
        self.workers = int(workers)
        self._local: dict[int, _Game] = {}
        self._conns = []
        self._procs = []
        ctx = mp.get_context("spawn")  # never fork a process that holds torch threads
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child,), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def reset(self, paths: dict[int, str | Path]) -> dict[int, GameState]:
        """Start the given game in each given slot (ending whatever it was playing)."""
        return self._call("reset", {s: str(p) for s, p in paths.items()})

    def step(self, commands: dict[int, str]) -> dict[int, GameState]:
        """Send one command to each given slot's game."""
        return self._call("step", commands)

    def _call(self, kind: str, args: dict[int, Any]) -> dict[int, GameState]:
        for slot in args:
            if not 0 <= slot < self.parallel:
                raise ValueError(f"slot {slot} outside 0..{self.parallel - 1}")
        if not self.workers:
            method = "reset" if kind == "reset" else "step"
            return {
                s: getattr(self._local.setdefault(s, _Game()), method)(a) for s, a in args.items()
            }
        by_worker: dict[int, dict[int, Any]] = {}
        for slot, arg in args.items():
            by_worker.setdefault(slot % self.workers, {})[slot] = arg
        for w, part in by_worker.items():
            self._conns[w].send((kind, part))
        results: dict[int, GameState] = {}
        errors = []
        for w in by_worker:
            status, payload = self._conns[w].recv()
            if status == "ok":
                results.update(payload)
            else:
                errors.append(payload)
        if errors:
            raise RuntimeError(f"game worker failed: {errors[0]}")
        return results

    def close(self) -> None:
        for game in self._local.values():
            game.close()
        self._local.clear()
        # Ask every worker first, then wait: workers close their games at the same time.
        for conn in self._conns:
            try:
                conn.send(("close",))
            except (OSError, EOFError):
                pass
        for conn, proc in zip(self._conns, self._procs):
            try:
                conn.recv()
            except (OSError, EOFError):
                pass
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> BatchEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
