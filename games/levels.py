"""Difficulty levels 1-10 as `tw-cooking` settings, after the public GATA level table.

GATA (Adhikari et al. 2020, "Learning Dynamic Belief Graphs to Generalize on Text-Based
Games") sorts cooking games into levels by recipe size, number of rooms and the skills a
recipe needs. Every ingredient has to be found (`take` = recipe size), so the score counts
one point per ingredient taken, cut and cooked, plus preparing and eating the meal. Doors
and containers start closed (`open`) wherever there is more than one room to walk through.

    >>> from games.levels import get_level
    >>> get_level(9).max_score
    11
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from workbench.errors import WorkbenchError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Level:
    number: int
    recipe: int
    rooms: int
    cut: bool
    cook: bool
    max_score: int

    @property
    def take(self) -> int:
        return self.recipe

    @property
    def open(self) -> bool:
        return self.rooms > 1

    def tw_cooking_settings(self, split: str) -> dict[str, Any]:
        """The settings dict `textworld.challenges.tw_cooking.make` expects."""
        return {
            "recipe": self.recipe,
            "take": self.take,
            "go": self.rooms,
            "open": self.open,
            "cook": self.cook,
            "cut": self.cut,
            "drop": False,
            "recipe_seed": 0,
            "split": check_split(split),
        }

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "take": self.take, "open": self.open}


# number: (recipe size, rooms, cut, cook, max score), exactly the GATA table.
_TABLE = {
    1: (1, 1, False, False, 3),
    2: (1, 1, False, True, 4),
    3: (1, 1, True, False, 4),
    4: (1, 6, False, False, 3),
    5: (1, 9, False, False, 3),
    6: (1, 12, False, False, 3),
    7: (1, 1, True, True, 5),
    8: (3, 6, False, False, 5),
    9: (3, 6, True, True, 11),
    10: (3, 12, True, True, 11),
}
LEVELS: dict[int, Level] = {n: Level(n, *row) for n, row in _TABLE.items()}


def get_level(number: int) -> Level:
    if number not in LEVELS:
        raise WorkbenchError(f"level {number} does not exist; levels are 1-10")
    return LEVELS[number]


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise WorkbenchError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def level_of_settings(settings: dict[str, Any]) -> int | None:
    """The level whose settings a game was made with (None for other tw-cooking games)."""
    for level in LEVELS.values():
        if (
            int(settings.get("recipe", 0)) == level.recipe
            and int(settings.get("go", 1)) == level.rooms
            and bool(settings.get("cut")) == level.cut
            and bool(settings.get("cook")) == level.cook
            and int(settings.get("take", 0)) == level.take
        ):
            return level.number
    return None
