"""Renamed ingredients: the same demonstration with the recipe's foods called otherwise.

In cooking games a food's name predicts its recipe (the generator gives each food a few
preparations), so a small model fine-tuned on a few dozen games learns "red apple: fry it"
instead of reading the cookbook, and guesses on the unseen foods of the valid and test
splits. Renaming each example's recipe ingredients to other foods, afresh every epoch and
consistently through the prompt and the expert's command, leaves the cookbook as the only
thing that says what to do (counterfactual data augmentation, as in Kaushik et al. 2020,
"Learning the Difference that Makes a Difference with Counterfactually-Augmented Data").
The new names are the ingredients of the other training games, so no held-out food is seen.

    >>> renamer = IngredientRenamer(train_games)                          # doctest: +SKIP
    >>> renamer(demo, random.Random(0)).command                            # doctest: +SKIP
    'cook yellow potato with stove'
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace

from agents.finetune.demonstrations import Demonstration
from games import GameInfo


class IngredientRenamer:
    """Renames a demonstration's recipe ingredients to other games' ingredients."""

    def __init__(self, games: Sequence[GameInfo]) -> None:
        self.ingredients = {g.id: [i.lower() for i in g.ingredients] for g in games}
        self.pool = sorted({i for names in self.ingredients.values() for i in names})

    def __call__(self, demo: Demonstration, rng: random.Random) -> Demonstration:
        """The demonstration with each of its game's ingredients replaced by a food from
        the pool that the prompt does not mention (so no two things share a name); as it
        was where its game has no recipe or the pool has too few foods."""
        own = self.ingredients.get(demo.game, [])
        text = f"{demo.prompt}\n{demo.command}\n" + "\n".join(demo.commands)
        free = [n for n in self.pool if not _mentions(text, n)]
        if not own or len(free) < len(own):
            return demo
        mapping = dict(zip(own, rng.sample(free, len(own))))
        # One pass over every name at once, longest first, so that a swap never chains.
        pattern = re.compile(
            r"\b(" + "|".join(re.escape(n) for n in sorted(own, key=len, reverse=True)) + r")\b",
            re.IGNORECASE,
        )

        def rename(text: str) -> str:
            return pattern.sub(lambda m: _same_case(m.group(0), mapping[m.group(0).lower()]), text)

        commands = [rename(c) for c in demo.commands]
        # The prompt lists the valid commands sorted, as `play` does: sorted again.
        prompt = rename(demo.prompt).replace("\n".join(commands), "\n".join(sorted(commands)), 1)
        return replace(
            demo, prompt=prompt, command=rename(demo.command), commands=tuple(sorted(commands))
        )


def _mentions(text: str, name: str) -> bool:
    return re.search(r"\b" + re.escape(name) + r"\b", text, re.IGNORECASE) is not None


def _same_case(found: str, new: str) -> str:
    return new[:1].upper() + new[1:] if found[:1].isupper() else new
