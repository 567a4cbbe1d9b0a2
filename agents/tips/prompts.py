"""The prompts that ask the LLM for tips, as plain templates a user can read and override.

Each is a Python `str.format` template. Put files named `self.txt`, `expert.txt`,
`reflexion.txt` or `merge.txt` in a folder and load it with `TipPrompts.from_dir` to
replace any of them (the others keep their defaults).

Fields: {tips} (the tips already held, rendered), {trajectory} (the agent's episode),
{expert} (the expert's episode), {max_tips}, {reflections} (earlier reflections),
{current} (the numbered general list) and {new_tips} (tips learned from one more game).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields
from pathlib import Path

from workbench.errors import WorkbenchError

# Chen et al. 2023, "Introspective Tips": the agent reads its own trajectory (and the tips
# it had) and writes short, general tips for the next attempt.
SELF = """\
You just played a text adventure game about cooking. Read what happened and write tips \
that would help a player win this kind of game in fewer commands.

{tips}
Your game:
{trajectory}

Write at most {max_tips} short, general tips, one per line, each line starting with "- ". \
Keep tips that helped, correct tips that misled you, and do not describe this one game's \
room or objects. Write only the tips."""

# The same, with the expert's winning trajectory to compare against.
EXPERT = """\
You just played a text adventure game about cooking. Below is your game, then how an \
expert won the same game. Compare them: where did your commands differ from the expert's, \
and what should you do differently?

{tips}
Your game:
{trajectory}

The expert's game:
{expert}

Write at most {max_tips} short, general tips, one per line, each line starting with "- ". \
Write only the tips."""

# Reflexion (Shinn et al. 2023): after a failure, a specific diagnosis and plan for the next
# attempt at the same game, kept in an episodic memory of the last few reflections.
REFLEXION = """\
You played a text adventure game about cooking and did not win.

{reflections}
Your game:
{trajectory}

In two or three sentences, say why you did not win and give a concrete plan for your next \
attempt at this same game, naming the exact commands to type. Start with "Reflection:"."""

# ExpeL (Zhao et al. 2023): insights from many games kept in one list, updated by
# ADD / EDIT / AGREE / REMOVE operations whose votes decide which insights stay.
MERGE = """\
You keep a list of general tips for playing text adventure games about cooking. Below are \
tips learned from one more game. Update the list with operations, one per line:
ADD: <a new tip>
EDIT <number>: <a better wording of that tip>
AGREE <number>
REMOVE <number>

The list keeps at most {max_tips} tips, so prefer AGREE or EDIT when a new tip says what a \
listed one already says, and REMOVE tips that are wrong or too specific to one game.

The current list:
{current}

Tips from the new game:
{new_tips}

Write only the operations."""

_FIELDS = {
    "self": {"tips", "trajectory", "max_tips"},
    "expert": {"tips", "trajectory", "expert", "max_tips"},
    "reflexion": {"reflections", "trajectory"},
    "merge": {"current", "new_tips", "max_tips"},
}


@dataclass(frozen=True)
class TipPrompts:
    """The four tip-writing prompts; validated so that a typo fails before any LLM call."""

    self: str = SELF
    expert: str = EXPERT
    reflexion: str = REFLEXION
    merge: str = MERGE

    def __post_init__(self) -> None:
        for f in fields(self):
            text = getattr(self, f.name)
            try:
                used = {n for _, n, _, _ in string.Formatter().parse(text) if n is not None}
            except ValueError as exc:
                raise WorkbenchError(f"the {f.name} tip prompt is malformed: {exc}") from exc
            unknown = sorted(used - _FIELDS[f.name])
            if unknown:
                raise WorkbenchError(
                    f"the {f.name} tip prompt has unknown field(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(_FIELDS[f.name]))}"
                )

    @classmethod
    def from_dir(cls, folder: str | Path) -> TipPrompts:
        path = Path(folder)
        if not path.is_dir():
            raise WorkbenchError(f"tip prompt folder {str(path)!r} does not exist")
        given = {
            f.name: (path / f"{f.name}.txt").read_text(encoding="utf-8")
            for f in fields(cls)
            if (path / f"{f.name}.txt").is_file()
        }
        if not given:
            raise WorkbenchError(
                f"{str(path)!r} has none of self.txt, expert.txt, reflexion.txt, merge.txt"
            )
        return cls(**given)


DEFAULT_TIP_PROMPTS = TipPrompts()
