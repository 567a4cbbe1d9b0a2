"""`workbench sae train|features|ablate`: sparse-autoencoder features of a layer.

A decision explained in features is `workbench explain-step --method sae --param sae=DIR`
(the registered `sae` method), stored like every step explanation.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from workbench.cli.concepts import start_on_runs
from workbench.cli.modes import (
    ONLY,
    SAE_ABLATE,
    SAE_FEATURES,
    SAE_LABEL,
    SAE_TRAIN,
    refuse_unused,
)
from workbench.cli.options import (
    AdapterOption,
    DbOption,
    DeviceOption,
    DtypeOption,
    GpusOption,
    ModelOption,
    TableFormat,
    TableFormatOption,
    command_group,
)
from workbench.cli.render import progress, write_json
from workbench.errors import WorkbenchError

app = command_group("Sparse-autoencoder features: train, label, list and search, ablate.")
SaeOption = typer.Option(..., "--sae", help="An SAE folder (from workbench sae train).")
MaxDecisionsOption = typer.Option(
    None, "--max-decisions", min=1, help="Read only each run's first N decisions."
)


@app.command("train")
def train(
    ctx: typer.Context,
    layer: int = typer.Option(..., "--layer", min=0, help="The resid layer (0 = embeddings)."),
    out: Path = typer.Option(..., "--out", help="New folder for the SAE (SAELens's format)."),
    runs: str | None = typer.Option(
        None, "--runs", help="Play runs whose prompts are read (R1,R2); their facts label."
    ),
    dataset: Path | None = typer.Option(
        None, "--dataset", help="JSONL of {text (or prompt), facts (optional)}, also or instead."
    ),
    width: int = typer.Option(0, "--width", min=0, help="Features (0: 8 x the stream's width)."),
    k: int = typer.Option(32, "--k", min=1, help="Active features per token (TopK)."),
    epochs: float = typer.Option(
        1.0, "--epochs", min=0.01, max=100.0, help="Passes over the activations."
    ),
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="Activations a step."),
    lr: float = typer.Option(0.0, "--lr", min=0.0, help="Adam's rate (0: scaled with width)."),
    heldout: float = typer.Option(
        0.1, "--heldout", min=0.01, max=0.49, help="Share of texts held out."
    ),
    pool: str = typer.Option(
        "max", "--pool", help="A text's feature value for labels: max (over it) or last token."
    ),
    max_decisions: int | None = MaxDecisionsOption,
    read_batch: int = typer.Option(8, "--read-batch", min=1, help="Texts a forward."),
    seed: int = typer.Option(0, "--seed", min=0, help="Fixes the split, init and order."),
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    gpus: int | None = GpusOption,
) -> None:
    """Train a TopK SAE on a layer's residual stream over agent prompts and/or a data set.

    Reports the held-out fraction of variance unexplained, L0, dead features, the spliced-in
    loss against zero ablation, and how many features a game fact labels (AUROC >= 0.95).

    Example: workbench sae train --layer 15 --runs valid-ft --k 32 --out saes/l15
    """
    if runs is None and dataset is None:
        raise WorkbenchError("give --runs, --dataset or both")
    refuse_unused(ctx, SAE_TRAIN["both" if runs and dataset else "runs" if runs else "dataset"])
    from agents.sae import check_out, dataset_texts, run_texts, train_on_texts
    from explainers.sae.labels import check_pool
    from explainers.sae.train import TrainConfig

    check_pool(pool)
    check_out(out)
    config = TrainConfig(
        width=width, k=k, epochs=epochs, batch_size=batch_size, lr=lr, heldout=heldout, seed=seed
    )
    texts = dataset_texts(dataset) if dataset is not None else []
    sources = [str(dataset.resolve())] if dataset is not None else []
    if runs is not None:
        names = [r.strip() for r in runs.split(",") if r.strip()]
        if not names:
            raise WorkbenchError("--runs names no run")
        store, lm = start_on_runs(
            names[0], model, adapter, device, dtype, gpus, db, names, save=False
        )
        with progress("reading the runs' prompts") as update:
            texts = run_texts(store, names, lm, max_decisions) + texts
            update(1, 1)
        sources.insert(0, "runs " + ",".join(names))
    else:
        from workbench.cli import launch
        from workbench.models import load_model

        launch.start(gpus, device)
        lm = load_model(model, device=device, dtype=dtype, progress=True, adapter=adapter)
    source = "; ".join(sources)
    with progress("reading activations") as update:
        result = train_on_texts(
            lm,
            texts,
            layer,
            out,
            config,
            dataset=source,
            batch_size=read_batch,
            pool=pool,
            progress=update,
        )
    if result is None:  # another torchrun rank
        return
    if fmt == TableFormat.json:
        write_json(result.to_dict())
        return
    console = Console()
    r, s = result.report, result.spliced
    console.print(f"SAE saved: {result.folder} (layer {layer}, {r.config['width']} features)")
    console.print(
        f"activations: {result.rows} from {result.texts} texts in "
        f"{result.extraction_seconds:.0f} s;"
        f" training {r.seconds:.0f} s ({r.steps} steps)"
    )
    console.print(
        f"held-out FVU {r.fvu:.3f}, L0 {r.l0:.1f}, dead {r.dead_fraction:.1%}; "
        f"loss clean {s.clean:.3f}, spliced {s.spliced:.3f}, zero-ablated {s.zero:.3f} "
        f"(recovered {s.recovered:.1%})"
    )
    console.print(
        f"labelled features: {result.labelled_features} for {result.labelled_facts} distinct "
        f"facts (of {result.scored_facts} scored)"
    )
    for f in result.top_labelled[:15]:
        console.print(f"  feature {f['feature']}: {f['fact']} (AUROC {f['auroc']:.3f})")


@app.command("label")
def label(
    ctx: typer.Context,
    sae: Path = SaeOption,
    runs: str = typer.Option(..., "--runs", help="Play runs whose prompts and facts label."),
    pool: str = typer.Option(
        "max", "--pool", help="A text's feature value: max (over it) or last token."
    ),
    max_decisions: int | None = MaxDecisionsOption,
    read_batch: int = typer.Option(8, "--read-batch", min=1, help="Texts a forward."),
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
    gpus: int | None = GpusOption,
) -> None:
    """Label a trained SAE's features anew by the facts of other runs, or with another
    --pool (its features.json is replaced).

    Example: workbench sae label --sae saes/l15 --runs valid-ft,train-ft --pool max
    """
    refuse_unused(ctx, SAE_LABEL[ONLY])
    from agents.sae import relabel, run_texts
    from explainers.sae.labels import check_pool
    from explainers.sae.model import load_sae

    check_pool(pool)
    load_sae(sae)  # an SAE folder, before any model loads
    names = [r.strip() for r in runs.split(",") if r.strip()]
    if not names:
        raise WorkbenchError("--runs names no run")
    store, lm = start_on_runs(names[0], model, adapter, device, dtype, gpus, db, names, save=False)
    with progress("reading the runs' prompts") as update:
        texts = run_texts(store, names, lm, max_decisions)
        update(1, 1)
    with progress("reading activations") as update:
        result = relabel(lm, sae, texts, pool=pool, batch_size=read_batch, progress=update)
    if result is None:
        return
    if fmt == TableFormat.json:
        write_json(result.to_dict())
        return
    console = Console()
    console.print(
        f"labelled features: {result.labelled_features} for {result.labelled_facts} distinct "
        f"facts (of {result.scored_facts} scored), {result.texts} texts, pool {pool}"
    )
    for f in result.top_labelled[:15]:
        console.print(f"  feature {f['feature']}: {f['fact']} (AUROC {f['auroc']:.3f})")


@app.command("features")
def features(
    ctx: typer.Context,
    sae: Path = SaeOption,
    fact: str | None = typer.Option(
        None, "--fact", help="Only features labelled best by facts matching this (* wildcard)."
    ),
    search: str | None = typer.Option(
        None, "--search", help="Only features whose top tokens contain this text."
    ),
    labelled: bool = typer.Option(False, "--labelled", help="Only labelled features."),
    limit: int = typer.Option(20, "--limit", min=1, help="Show at most N features."),
    fmt: TableFormat = TableFormatOption,
) -> None:
    """List and search an SAE's features: best fact with its AUROC, density, top contexts.

    Example: workbench sae features --sae saes/l15 --fact "in(knife*" --labelled
    """
    refuse_unused(ctx, SAE_FEATURES[ONLY])
    from explainers.sae.labels import load_labels
    from explainers.sae.labels import search as find

    summary, table = load_labels(sae)
    found = find(table, fact=fact, text=search, labelled_only=labelled)[:limit]
    if fmt == TableFormat.json:
        write_json({"summary": summary, "features": [f.to_dict() for f in found]})
        return
    out = Table(title=f"{len(found)} feature(s) of {sae}")
    for column in ("feature", "best fact", "AUROC", "density", "top contexts"):
        out.add_column(column)
    for f in found:
        contexts = " | ".join(f"…{c['before'][-30:]}[{c['token']}]{c['after']}" for c in f.top[:2])
        auroc = "" if f.auroc is None else f"{f.auroc:.3f}" + (" *" if f.labelled else "")
        out.add_row(str(f.feature), f.fact or "", auroc, f"{f.density:.4f}", contexts)
    Console().print(out)


@app.command("ablate")
def ablate(
    ctx: typer.Context,
    sae: Path = SaeOption,
    run: str = typer.Option(..., "--run", help="The play run whose decisions are read."),
    steps: int = typer.Option(8, "--steps", min=1, help="Integration steps of attribution."),
    max_decisions: int | None = MaxDecisionsOption,
    seed: int = typer.Option(0, "--seed", min=0, help="Fixes the control features."),
    fmt: TableFormat = TableFormatOption,
    model: str | None = ModelOption,
    adapter: Path | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    db: Path | None = DbOption,
) -> None:
    """Does a labelled feature carry the decisions? For each decision of a run, remove its
    labelled feature of largest attribution, and a random feature of about the same
    activation, and count the changed choices (Wilson intervals, paired McNemar test).

    Example: workbench sae ablate --sae saes/l15 --run valid-ft
    """
    refuse_unused(ctx, SAE_ABLATE[ONLY])
    from agents.sae import feature_ablation
    from explainers.sae.labels import read_labels
    from explainers.sae.model import load_sae

    model_sae, info = load_sae(sae)
    labels = read_labels(sae)
    if not any(f.get("labelled") for f in labels.values()):
        raise WorkbenchError(f"SAE {str(sae)!r} has no labelled feature")
    store, lm = start_on_runs(run, model, adapter, device, dtype, None, db, save=False)
    with progress("ablating features decision by decision") as update:
        result = feature_ablation(
            store,
            run,
            lm,
            model_sae,
            info,
            labels,
            steps=steps,
            max_decisions=max_decisions,
            seed=seed,
            progress=update,
        )
    if fmt == TableFormat.json:
        write_json(result.to_dict())
        return
    console = Console()
    f, c, t = result.flips, result.control_flips, result.test
    console.print(
        f"{f.n} decisions ({result.skipped} without a labelled feature): choice changed "
        f"{f.mean:.0%} [{f.low:.0%}, {f.high:.0%}] without the labelled feature, "
        f"{c.mean:.0%} [{c.low:.0%}, {c.high:.0%}] without the control "
        f"(McNemar p = {t.p_value:.3g}); mean change of the objective "
        f"{result.mean_delta:+.3f} vs {result.mean_control_delta:+.3f}"
    )
