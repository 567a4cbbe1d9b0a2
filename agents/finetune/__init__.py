"""Fine-tuning on expert trajectories: a LoRA adapter trained on the agent's own prompts
along each game's walkthrough, the baseline for in-context tips.

    >>> from agents.finetune import FinetuneSettings, finetune
    >>> finetune(load_model(), games.list_games("game-sets/l1-3"), "adapters/l1-3",
    ...          FinetuneSettings(epochs=2, seed=0))                   # doctest: +SKIP
"""

from agents.finetune.demonstrations import (
    Demonstration,
    demonstrations,
    read_demonstrations,
    recovery_demonstrations,
    write_demonstrations,
)
from agents.finetune.evaluation import Choice, ImitationAccuracy, imitation_accuracy
from agents.finetune.renaming import IngredientRenamer
from agents.finetune.training import (
    DEMONSTRATIONS,
    MANIFEST,
    FinetuneResult,
    FinetuneSettings,
    check_out,
    finetune,
    split_games,
)

__all__ = [
    "DEMONSTRATIONS",
    "MANIFEST",
    "Choice",
    "Demonstration",
    "FinetuneResult",
    "FinetuneSettings",
    "ImitationAccuracy",
    "IngredientRenamer",
    "check_out",
    "demonstrations",
    "finetune",
    "imitation_accuracy",
    "read_demonstrations",
    "recovery_demonstrations",
    "split_games",
    "write_demonstrations",
]
