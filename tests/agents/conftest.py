from tests.games.compiled import (  # noqa: F401
    compiled_sets,
    games_base,
    level1_games,
    level_games,
)
