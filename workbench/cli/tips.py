"""`workbench tips list|show|diff|merge`: tip sets the LLM wrote (Introspective Tips)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.modes import TIPS_MERGE, backend, refuse_unused
from workbench.cli.options import (
    DbOption,
    DeviceOption,
    DtypeOption,
    LlmOption,
    MaxTipsOption,
    ModelOption,
    TableFormat,
    TableFormatOption,
    command_group,
    open_store,
)
from workbench.cli.render import print_plain, status, write_json
from workbench.errors import WorkbenchError

app = command_group("Tip sets written by the LLM (Introspective Tips).")


def _run_id(store, run: str) -> str:
    from workbench.store import runs as runs_store

    return runs_store.require_run(store, run)["id"]


@app.command("list")
def tips_list(
    run: str | None = typer.Option(None, "--run", help="Only the tip sets of this play run."),
    kind: str | None = typer.Option(None, "--kind", help="self, expert, reflexion or general."),
    limit: int = typer.Option(50, "--limit", min=1, help="How many to show."),
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """List tip sets, newest first, with their provenance.

    Example: workbench tips list --run l1-self
    """
    from workbench.store import tips as tips_store

    store = open_store(db, read_only=True)
    run_id = _run_id(store, run) if run is not None else None
    rows = tips_store.list_tipsets(store, run_id=run_id, kind=kind, limit=limit)
    if fmt is TableFormat.json:
        write_json(rows)
        return
    if not rows:
        status("no tip sets yet; play with `workbench play --tips self ...`")
        return
    table = Table("id", "kind", "scope", "v", "parent", "status", "tips", "run", "trial")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["scope"],
            str(r["version"]),
            r["parent_id"] or "",
            r["status"],
            str(r["n_tips"]),
            r["run_name"] or "",
            "" if r["trial"] is None else str(r["trial"]),
        )
    Console().print(table)


@app.command("show")
def tips_show(
    tipset_id: str = typer.Argument(..., metavar="ID", help="Tip set id (from `tips list`)."),
    fmt: TableFormat = TableFormatOption,
    db: Path | None = DbOption,
) -> None:
    """Show a tip set: its tips with scores, operations and provenance.

    Example: workbench tips show 3f2a9c1b7d10
    """
    from agents.tips import TipSet

    tipset = TipSet.load(open_store(db, read_only=True), tipset_id)
    if fmt is TableFormat.json:
        write_json(tipset.to_dict())
        return
    out = Console()
    print_plain(
        out,
        f"tip set {tipset.id}: {tipset.kind}, {tipset.scope}, version {tipset.version}"
        f" (parent {tipset.parent_id or 'none'}), {tipset.status}"
        + (f": {tipset.error}" if tipset.error else ""),
    )
    print_plain(
        out,
        f"from episodes {', '.join(tipset.episodes) or 'none'};"
        f" LLM calls {', '.join(tipset.llm_call_ids) or 'none'}",
    )
    table = Table("#", "tip", "score")
    for i, tip in enumerate(tipset.tips, 1):
        table.add_row(str(i), tip.text, str(tip.score))
    out.print(table)
    if tipset.ops:
        ops = Table("op", "tip #", "text", "applied", "note", title="operations")
        for o in tipset.ops:
            ops.add_row(
                o.op,
                "" if o.target is None else str(o.target),
                o.text or o.old_text or "",
                "yes" if o.applied else "no",
                o.note or "",
            )
        out.print(ops)


@app.command("diff")
def tips_diff(
    a: str = typer.Argument(..., metavar="A", help="The older tip set id."),
    b: str = typer.Argument(..., metavar="B", help="The newer tip set id."),
    db: Path | None = DbOption,
) -> None:
    """What changed from tip set A to tip set B: tips removed, added, and rescored.

    Example: workbench tips diff 3f2a9c1b7d10 8e1d0c2b4a55
    """
    from agents.tips import TipSet, diff_tipsets

    store = open_store(db, read_only=True)
    changes = diff_tipsets(TipSet.load(store, a), TipSet.load(store, b))
    out = Console()
    if not changes:
        out.print(f"{a} and {b} hold the same tips with the same scores")
        return
    for sign, text, note in changes:
        print_plain(out, f"{sign} {text}" + (f"  ({note})" if note else ""))


@app.command("merge")
def tips_merge(
    ctx: typer.Context,
    run: str = typer.Option(..., "--run", help="Play run whose games' final tips to merge."),
    max_tips: int = MaxTipsOption,
    llm: str = LlmOption,
    model: str | None = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Merge the final self/expert tips of a run's games into one general tip set.

    ExpeL-style ADD/EDIT/AGREE/REMOVE; play with it: `workbench play --tips general --tipset ID`.

    Example: workbench tips merge --run l1-self --max-tips 8
    """
    refuse_unused(ctx, TIPS_MERGE[backend(llm)])
    from agents.tips import TipSet, TipWriter, build_general
    from workbench.llm import make_llm
    from workbench.store import tips as tips_store

    store = open_store(db)
    run_id = _run_id(store, run)
    sources = sorted(
        (TipSet.from_row(t) for t in tips_store.final_tipsets(store, run_id, ["self", "expert"])),
        key=lambda t: (t.game_id or "", t.condition or ""),
    )
    if not sources:
        raise WorkbenchError(f"run {run!r} has no self or expert tips to merge")
    language_model = make_llm(llm, model=model, device=device, dtype=dtype, progress=True)
    writer = TipWriter(language_model, max_tips=max_tips)
    general = build_general(writer, sources, store, run_id=run_id)
    status(
        f"general tip set {general.id} ({len(general.tips)} tips, version {general.version});"
        f" play with it: workbench play --tips general --tipset {general.id}"
    )
