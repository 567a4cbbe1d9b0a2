"""The tip-set model: versions of a list of scored tips, with their provenance, and the
merge operations that revise a list.

Every version is stored with its parent, scope and provenance (the episodes it read and
every LLM call that wrote it), so a tip can be traced back to the games that taught it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.errors import WorkbenchError
from workbench.store import Store, new_id
from workbench.store import tips as tips_store

OPS = ("ADD", "EDIT", "AGREE", "REMOVE")

# ExpeL's votes: a new insight starts at 2, agreeing or editing adds 1, and an insight whose
# importance falls to 0 leaves the list.
ADD_SCORE = 2


@dataclass
class Tip:
    text: str
    score: int = 1


@dataclass
class TipOp:
    """One merge operation as the LLM wrote it; `target` is a 1-based tip number."""

    op: str
    target: int | None = None
    text: str | None = None
    old_text: str | None = None
    applied: bool = False
    note: str | None = None
    llm_call_id: str | None = None


@dataclass
class TipSet:
    """One version of a set of tips, with where it came from.

    `scope` is "game:<id>" for tips learned on one game's trials and "general" for a
    merged set; `parent_id` is the version it revises; `episodes` and `llm_call_ids` are
    its provenance (for a general set, every episode that fed it). A version whose LLM
    reply stayed unusable has status "failed" and keeps its parent's tips; one whose reply
    had tips dropped as defective (looping, cut off) has status "partial", `error` saying
    which.
    """

    kind: str
    scope: str
    tips: list[Tip] = field(default_factory=list)
    id: str = field(default_factory=new_id)
    parent_id: str | None = None
    version: int = 1
    status: str = "ok"
    error: str | None = None
    run_id: str | None = None
    condition: str | None = None
    game_id: str | None = None
    trial: int | None = None
    episodes: list[str] = field(default_factory=list)
    llm_call_ids: list[str] = field(default_factory=list)
    ops: list[TipOp] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.tips]

    def child(self, **changes: Any) -> TipSet:
        """A new version revising this one (same kind, scope and place in a run)."""
        base = {
            "kind": self.kind,
            "scope": self.scope,
            "tips": [Tip(t.text, t.score) for t in self.tips],
            "parent_id": self.id,
            "version": self.version + 1,
            "run_id": self.run_id,
            "condition": self.condition,
            "game_id": self.game_id,
            "trial": self.trial,
        }
        base.update(changes)
        return TipSet(**base)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, calls: Sequence[dict[str, Any]] = ()) -> str:
        """Write this version, its tips and operations, and the LLM calls that made it."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("tips", "ops")}
        tips_store.save_tipset(
            store,
            row,
            [asdict(t) for t in self.tips],
            [asdict(o) for o in self.ops],
            list(calls),
        )
        return self.id

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> TipSet:
        names = cls.__dataclass_fields__.keys()
        data = {k: v for k, v in row.items() if k in names and k not in ("tips", "ops")}
        data["tips"] = [Tip(t["text"], int(t["score"])) for t in row.get("tips", [])]
        data["ops"] = [TipOp(**o) for o in row.get("ops", [])]
        return cls(**data)

    @classmethod
    def load(cls, store: Store, tipset_id: str) -> TipSet:
        row = tips_store.get_tipset(store, tipset_id)
        if row is None:
            raise WorkbenchError(
                f"no tip set with id {tipset_id!r} in {store.path}; see `workbench tips list`"
            )
        return cls.from_row(row)


def _same_text(text: str) -> str:
    """Tips are the same when they differ only in case and a final full stop."""
    return text.lower().rstrip(".").strip()


def apply_ops(tips: list[Tip], ops: list[TipOp], max_tips: int) -> list[Tip]:
    """The list after the operations, ExpeL-style: ADD enters at score 2 (an ADD of a
    listed tip counts as AGREE), AGREE and EDIT add 1, REMOVE takes the tip out; then at
    most `max_tips` stay, the lowest scores leaving first (earlier tips win ties).

    Targets are 1-based numbers in `tips` as shown to the LLM. Each op's `applied`,
    `old_text` and `note` are filled in.
    """
    work = [Tip(t.text, t.score) for t in tips]
    removed: set[int] = set()
    for op in ops:
        if op.op == "ADD":
            assert op.text is not None
            same = [i for i, t in enumerate(work) if _same_text(t.text) == _same_text(op.text)]
            if same and same[0] not in removed:
                work[same[0]].score += 1
                op.applied, op.note = True, "already listed: counted as AGREE"
            else:
                work.append(Tip(op.text, ADD_SCORE))
                op.applied = True
            continue
        i = (op.target or 0) - 1
        if not 0 <= i < len(tips) or i in removed:
            op.note = f"there is no tip {op.target}" if i not in removed else "tip was removed"
            continue
        op.old_text = work[i].text
        op.applied = True
        if op.op == "EDIT":
            work[i].text = op.text or work[i].text
            work[i].score += 1
        elif op.op == "AGREE":
            work[i].score += 1
        else:
            removed.add(i)
    kept = [(i, t) for i, t in enumerate(work) if i not in removed and t.score > 0]
    if len(kept) > max_tips:
        best = sorted(kept, key=lambda it: (-it[1].score, it[0]))[:max_tips]
        keep = {i for i, _ in best}
        kept = [(i, t) for i, t in kept if i in keep]
    return [t for _, t in kept]


def diff_tipsets(a: TipSet, b: TipSet) -> list[tuple[str, str, str]]:
    """What changed from `a` to `b`, as (sign, tip, note): "-" removed, "+" added, "~"
    kept with another score. Tips are matched by text (case and final full stop ignored)."""
    old = {_same_text(t.text): t for t in a.tips}
    new = {_same_text(t.text): t for t in b.tips}
    out = [("-", t.text, f"score {t.score}") for k, t in old.items() if k not in new]
    for k, t in new.items():
        if k not in old:
            out.append(("+", t.text, f"score {t.score}"))
        elif old[k].score != t.score:
            out.append(("~", t.text, f"score {old[k].score} -> {t.score}"))
    return out
