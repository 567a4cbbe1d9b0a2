"""Introspective tips: the LLM reads trajectories and writes short tips for its own prompt.

The method of Chen et al. 2023, "Introspective Tips: Large Language Model for In-Context
Decision Making", with no fine-tuning:

- `self`: after each episode the LLM reads its trajectory and the tips it had, and writes
  a few general tips; the next trial of the same game plays with them.
- `expert`: the same, comparing its trajectory with the expert's (the walkthrough replayed
  in the environment, so with the game's real replies).
- `general`: tips from many training games merged into one capped set by ADD / EDIT /
  AGREE / REMOVE operations with importance scores, as in ExpeL (Zhao et al. 2023,
  "ExpeL: LLM Agents Are Experiential Learners"), then used zero-shot on other games.
- Baselines: `none`, and `reflexion` (Shinn et al. 2023, "Reflexion: Language Agents with
  Verbal Reinforcement Learning"): after a failed episode, a reflection specific to that
  game; the last few are kept.

The package, by concept:

- `tipset`: `TipSet` versions with provenance, merge operations (`apply_ops`), diffs;
- `parsing`: reading tips, reflections and operations out of LLM replies;
- `prompts`: the tip-writing prompt templates (`TipPrompts`, overridable from files);
- `trajectory_text`: episodes and tip lists as the prompts show them;
- `writer`: `TipWriter` (asks, retries, builds versions) and `build_general`;
- `play`: `play_tips`, trials with tips written between them.

    >>> from agents.tips import TipWriter, play_tips
    >>> result = play_tips(games.list_games("game-sets/l1"), ["self"], llm=llm,
    ...                    writer=TipWriter(llm, max_tips=3), trials=3, store=Store(),
    ...                    run_name="self-l1")                       # doctest: +SKIP
"""

from agents.tips.parsing import TipParseError, parse_ops, parse_reflection, parse_tips
from agents.tips.play import LEARNING_MODES, TIP_MODES, TipPlayResult, play_tips
from agents.tips.prompts import DEFAULT_TIP_PROMPTS, TipPrompts
from agents.tips.tipset import Tip, TipOp, TipSet, apply_ops, diff_tipsets
from agents.tips.writer import TipRequest, TipWriter, build_general

__all__ = [
    "DEFAULT_TIP_PROMPTS",
    "LEARNING_MODES",
    "TIP_MODES",
    "Tip",
    "TipOp",
    "TipParseError",
    "TipPlayResult",
    "TipPrompts",
    "TipRequest",
    "TipSet",
    "TipWriter",
    "apply_ops",
    "build_general",
    "diff_tipsets",
    "parse_ops",
    "parse_reflection",
    "parse_tips",
    "play_tips",
]
