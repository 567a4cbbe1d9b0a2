"""LLM agents that play TextWorld games and learn from introspective tips.

>>> import agents, games
>>> from workbench.store import Store
>>> result = agents.play(games.list_games("game-sets/l1"), agent="expert",
...                      store=Store(), run_name="expert-l1")     # doctest: +SKIP
>>> agents.report(Store(), run="expert-l1").rows[0].success.mean    # doctest: +SKIP
1.0
"""

# First: importing workbench installs the guard that names a folder shadowing one of the
# workbench's packages (a game set saved as ./games), before `games` is imported below.
import workbench  # noqa: F401
from agents.policies import AGENTS, SELECTIONS, Agent, LLMAgent, make_agent
from agents.prompt import DEFAULT_TEMPLATE, PromptTemplate, worked_example
from agents.report import Report, report
from agents.runner import PlayResult, episode_specs, play, run_episodes
from agents.trajectory import Condition, Episode, EpisodeSpec, LLMCall, Step

__all__ = [
    "AGENTS",
    "DEFAULT_TEMPLATE",
    "SELECTIONS",
    "Agent",
    "Condition",
    "Episode",
    "EpisodeSpec",
    "LLMAgent",
    "LLMCall",
    "PlayResult",
    "PromptTemplate",
    "Report",
    "Step",
    "episode_specs",
    "make_agent",
    "play",
    "report",
    "run_episodes",
    "worked_example",
]
