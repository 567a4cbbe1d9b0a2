"""Reading LLM replies: tips, reflections and merge operations.

Small models echo their trajectory instead of advising ("> take carrot from fridge", "You
see a knife on the table."), so a line that is only a game command or only narrates what
the game showed is not a tip; a tip that loops or is cut off mid-sentence (a small model
running into its token limit) is dropped with its reason. A reply with nothing usable raises
`TipParseError`, which the writer answers with a retry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.tips.tipset import TipOp

MAX_TIP_CHARS = 300
MAX_REFLECTION_CHARS = 600


class TipParseError(ValueError):
    """An LLM reply from which no usable tips (or operations) could be read."""


_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\d+[.)]|tip\s*\d*\s*[:.)-])\s*", re.IGNORECASE)
_OP_LINE = re.compile(
    r"^\s*(?:[-*\u2022]\s*|\d+[.)]\s*)?\**(ADD|EDIT|AGREE|REMOVE)\b\**"
    r"\s*(?:(?:tip\s*)?#?\s*(\d+))?\s*[:.)-]?\s*(.*)$",
    re.IGNORECASE,
)

# The verbs of TextWorld's cooking grammar (`look`, `take X from Y`, `cook X with Y`, ...).
_COMMAND_VERBS = frozenset(
    "look inventory go examine take drop put insert open close eat drink cook slice dice "
    "chop prepare unlock lock".split()
)
# Words that make a line advice rather than a command: conditions, order, quantifiers,
# modals, the player, and the general nouns a tip uses instead of one game's objects.
_ADVICE_WORDS = frozenset(
    "what which whatever that all any every each everything before after then first last "
    "when whenever if until once unless while you your it them they need needs needed always "
    "never try should must can cannot not don't do and or to so because ingredient "
    "ingredients item items object objects thing things food recipe required necessary right "
    "correct other only".split()
)
# How the game narrates: "You see ...", "There is ...", "You are carrying ...", scores.
_NARRATION = re.compile(
    r"^(?:you\s+(?:can\s+)?(?:see|make\s+out)\b"
    r"|you\s+(?:notice|spot|find|arrive|enter|pick\s+up|take|open|close|eat|drop|put|insert|"
    r"slice|dice|chop|cook|prepare|unlock|scored?)\b"
    r"|you\s+are\s+(?:in|now|carrying|standing|holding)\b"
    r"|you\s+have\s+(?:entered|taken|opened|found|won|lost)\b|you've\s+(?:entered|just|taken)\b"
    r"|there\s+(?:is|are|was|were)\b|there's\b|your\s+score\b|\*\*\*"
    r"|the\s+[\w' -]+?\s+(?:contains|is\s+(?:empty|open|closed|locked|on|in)|are\s+(?:on|in))\b)",
    re.IGNORECASE,
)
# Words a finished sentence does not end on: a tip ending on one was cut off.
_DANGLING = frozenset(
    "the a an and or to of in on with from then if when before after your you is are "
    "that this it for by at as but so".split()
)
# A narration keeps its content after an opening "At the end of the game," or "In the kitchen,".
_SCENE_PREFIX = re.compile(r"^(?:at|in|on|inside|during|by)\b[^,]{0,40},\s*", re.IGNORECASE)
# What turns a narration into advice: a modal, a condition or an order of actions.
_ADVICE = re.compile(
    r"\b(?:should|must|need|needs|always|never|try|remember|make sure|don't|do not|avoid|"
    r"if|when|before|after|first|then|so|because|until)\b",
    re.IGNORECASE,
)


@dataclass
class ParsedTips:
    """The usable tips of a reply, and the tip lines dropped as defective, each as
    "reason: text" (a looping tip, one cut off mid-sentence)."""

    tips: list[str]
    dropped: list[str] = field(default_factory=list)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip("\"'`*").strip()


def tip_defect(tip: str, last: bool = False) -> str | None:
    """Why a tip line is unusable though it reads as advice, or None: it loops (a small
    model repeating itself until its token limit), or it is cut off mid-sentence (longer
    than a tip may be, or the reply's last line ending without punctuation while the
    sentence runs on)."""
    words = re.findall(r"[a-z']+", tip.lower())
    trigrams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if trigrams and max(trigrams.count(t) for t in set(trigrams)) >= 3:
        return "repeats itself"
    if len(tip) > MAX_TIP_CHARS:
        return "cut off mid-sentence"
    # A complete sentence ends in punctuation or a whole word; a reply stopped at its
    # token limit ends on a dangling function word ("... then take the").
    if last and not re.search(r"[.!?)\]\"']$", tip) and words and words[-1] in _DANGLING:
        return "cut off mid-sentence"
    return None


def is_game_command(text: str) -> bool:
    """Whether a line is only a game command ("> take carrot from fridge", "Open the
    fridge."), not advice about one ("Open the fridge before taking food.")."""
    if text.lstrip().startswith(">"):
        return True
    words = re.findall(r"[a-z']+", text.lower())
    if not words or words[0] not in _COMMAND_VERBS or re.search(r"[,;:!?]", text):
        return False
    return len(words) <= 8 and not _ADVICE_WORDS.intersection(words)


def is_observation(text: str) -> bool:
    """Whether a line only narrates what the game showed ("At the end of the game, you
    see a knife on the table."), with nothing the player should do about it."""
    body = _SCENE_PREFIX.sub("", text.strip(), count=1)
    return bool(_NARRATION.match(body)) and not _ADVICE.search(body)


def parse_tips(text: str, max_tips: int) -> ParsedTips:
    """The tips of a reply: its bulleted or numbered lines (plain lines if it has none),
    without headers, duplicates, game commands, observations or empty lines, at most
    `max_tips`; lines that loop or are cut off are dropped, with the reason (`tip_defect`).

    Raises `TipParseError` when nothing usable is left.
    """
    lines = [line for line in (text or "").splitlines() if line.strip()]
    bulleted = [line for line in lines if _BULLET.match(line)]
    chosen = bulleted or lines
    tips: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    echoed = 0
    for line in chosen:
        tip = _clean(_BULLET.sub("", line, count=1))
        # A line ending in a colon introduces the list ("Here are my tips:"), and a tip
        # needs a few words to say anything ("= Kitchen =" is the game's header, not a tip).
        if len(re.findall(r"[a-zA-Z]{2,}", tip)) < 3 or tip.endswith(":"):
            continue
        if is_game_command(tip) or is_observation(tip):
            echoed += 1
            continue
        defect = tip_defect(tip, last=line is lines[-1])
        if defect is not None:
            short = tip if len(tip) <= 60 else tip[:57] + "..."
            dropped.append(f"{defect}: {short!r}")
            continue
        key = tip.lower().rstrip(".")
        if key in seen:
            continue
        seen.add(key)
        tips.append(tip)
    if not tips:
        if not (text or "").strip():
            raise TipParseError("the reply has no tips")
        if dropped:
            raise TipParseError(f"no usable tip lines; dropped {'; '.join(dropped)}")
        if echoed:
            raise TipParseError("no tip lines, only game commands or observations")
        raise TipParseError("no tip lines")
    return ParsedTips(tips[:max_tips], dropped)


def parse_reflection(text: str) -> str:
    """The reflection of a reply (its "Reflection:" label dropped), clipped."""
    body = re.sub(r"^\s*\**reflection\**\s*:\s*", "", text or "", flags=re.IGNORECASE)
    body = re.sub(r"\s+", " ", body).strip()
    if len(body) < 10 or not re.search(r"[a-zA-Z]{3}", body):
        raise TipParseError("the reply has no reflection")
    return body[:MAX_REFLECTION_CHARS].rstrip()


def parse_ops(text: str) -> list[TipOp]:
    """ADD / EDIT / AGREE / REMOVE lines of a merge reply, in order.

    Lines that are not operations are ignored; an operation missing what it needs (ADD
    without text, EDIT without a number or text, AGREE/REMOVE without a number), or whose
    text is a game command or observation, is ignored too. Raises `TipParseError` when no
    operation is left.
    """
    ops: list[TipOp] = []
    for line in (text or "").splitlines():
        m = _OP_LINE.match(line)
        if not m:
            continue
        op, number, rest = (
            m.group(1).upper(),
            m.group(2),
            _clean(m.group(3) or "")[:MAX_TIP_CHARS].rstrip(),
        )
        target = int(number) if number else None
        if rest and (is_game_command(rest) or is_observation(rest)):
            continue
        if op == "ADD" and len(rest) >= 4:
            ops.append(TipOp("ADD", None, rest))
        elif op == "EDIT" and target is not None and len(rest) >= 4:
            ops.append(TipOp("EDIT", target, rest))
        elif op in ("AGREE", "REMOVE") and target is not None:
            ops.append(TipOp(op, target))
    if not ops:
        raise TipParseError("no ADD/EDIT/AGREE/REMOVE operations")
    return ops
