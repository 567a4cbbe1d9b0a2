"""TextWorld cooking games: levels, generation, manifests and batched environments.

No other package imports TextWorld: agents and the CLI go through this one.

    >>> import games
    >>> games.make(level=3, count=20, seed=7, split="train", out="game-sets/l3")  # doctest: +SKIP
    >>> games.list_games("game-sets/l3")[0].max_score                              # doctest: +SKIP
    4
"""

from games.catalog import GameInfo, MakeResult, list_games, make
from games.env import BatchEnv, GameState
from games.levels import LEVELS, SPLITS, Level, get_level

__all__ = [
    "LEVELS",
    "SPLITS",
    "BatchEnv",
    "GameInfo",
    "GameState",
    "Level",
    "MakeResult",
    "get_level",
    "list_games",
    "make",
]
