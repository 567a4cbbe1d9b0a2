import pytest

from tests.games.compiled import (  # noqa: F401
    compiled_sets,
    games_base,
    level1_games,
    level_games,
)


def tipped_run(path, games, lm):
    """A store at `path` with run "g": the tiny model playing `games` for 3 steps under two
    general tips (what explain-step and the decision features are tested on)."""
    from agents.tips import Tip, TipSet, play_tips
    from workbench.llm.local import LocalLLM
    from workbench.store import Store

    store = Store(path)
    general = TipSet("general", "general", [Tip("Take the fridge food."), Tip("Eat the meal.")])
    general.save(store)
    play_tips(
        games,
        ["general"],
        llm=LocalLLM(lm),
        store=store,
        tipset=general,
        max_steps=3,
        run_name="g",
        workers=0,
    )
    return store


@pytest.fixture(scope="session")
def played_run(tmp_path_factory, level1_games, tiny_causal):  # noqa: F811
    """A store with run "c": the tiny model playing two level-1 games for 12 steps each
    (24 decisions, with the facts true at each): what the concepts and SAE tests read."""
    from agents.runner import play
    from workbench.llm.local import LocalLLM
    from workbench.store import Store

    store = Store(tmp_path_factory.mktemp("played") / "c.duckdb")
    play(
        level1_games,
        "llm",
        llm=LocalLLM(tiny_causal),
        max_steps=12,
        store=store,
        run_name="c",
        workers=0,
    )
    return store
