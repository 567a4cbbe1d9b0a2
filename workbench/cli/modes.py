"""Which options each mode of a command reads: the one table that the commands check and the
option-walking test (tests/workbench/test_cli_options.py) reads.

Many commands work in modes (`evaluate --explanation|--text|--dataset`, `play --agent llm|
random|expert`, ...) and not every option means something in every mode. An option given in
a mode that does not read it is refused, one line and before any model loads, instead of
being dropped silently: `refuse_unused(ctx, EVALUATE["dataset"])` at the top of the command.

Every option of every command is listed here (the test fails otherwise), so a new option
cannot be added without deciding which modes read it. A command without modes has one mode,
`ONLY`, which reads all its options.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import product

import typer

from workbench.errors import WorkbenchError

ONLY = "only"  # the one mode of a command without modes


@dataclass(frozen=True)
class Mode:
    """One way of running a command: the options (Python parameter names) it reads."""

    label: str  # how an error names the mode: "evaluate --dataset"
    uses: frozenset[str]
    why: Mapping[str, str] = field(default_factory=dict)  # option -> why it does not apply
    # option -> a shorter label naming only what excludes it ("probe --dataset", not
    # "probe --dataset --no-save" for --history)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Facet:
    """One value of one axis of a command's modes (e.g. `--save` or `--no-save`)."""

    label: str  # "" adds nothing to the mode's label
    uses: tuple[str, ...] = ()
    why: Mapping[str, str] = field(default_factory=dict)


def modes(
    command: str,
    common: Iterable[str],
    *axes: Mapping[str, Facet],
    why: Mapping[str, str] | None = None,
) -> dict:
    """Every combination of one facet per axis, keyed by the facets' names (a string for one
    axis, a tuple for several): the options it reads are `common` plus its facets'; `why`
    gives reasons shared by every mode."""
    table = {}
    for combo in product(*(axis.items() for axis in axes)):
        key = combo[0][0] if len(combo) == 1 else tuple(name for name, _ in combo)
        facets = [f for _, f in combo]
        label = " ".join([command, *(f.label for f in facets if f.label)])
        uses = frozenset(common).union(*(f.uses for f in facets))
        reasons = {**(why or {}), **{k: v for f in facets for k, v in f.why.items()}}
        labels = {}
        for option in frozenset().union(*(f.uses for a in axes for f in a.values())) - uses:
            # The facets that exclude it: those of the axes where another facet reads it.
            excluding = [
                f.label
                for axis, f in zip(axes, facets)
                if f.label and any(option in g.uses for g in axis.values())
            ]
            labels[option] = " ".join([command, *excluding])
        table[key] = Mode(label, uses, reasons, labels)
    return table


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set option `name` (on the command line or through the environment),
    rather than its default: a default passed explicitly counts as given too."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def refuse_unused(ctx: typer.Context, mode: Mode) -> None:
    """One line naming the first option the user gave that `mode` does not read."""
    for param in ctx.command.params:
        if param.param_type_name != "option":
            continue  # an argument is always read
        if param.name in mode.uses or not given(ctx, param.name):
            continue
        flag = max(param.opts, key=len)  # --model rather than -m
        reason = mode.why.get(param.name)
        raise WorkbenchError(
            f"{flag} does not apply to {mode.labels.get(param.name, mode.label)}"
            + (f" ({reason})" if reason else "")
        )


def saving(save: bool) -> str:
    """The `SAVE` facet `--save/--no-save` selects."""
    return "save" if save else "no-save"


def backend(llm: str) -> str:
    """The LLM facet `--llm` selects: `openai:MODEL`, else a local model."""
    return "openai" if llm.startswith("openai") else "local"


def single(command: str, *options: str) -> dict[str, Mode]:
    """The table of a command without modes: its one mode reads every option."""
    return {ONLY: Mode(command, frozenset(options))}


# Shared facets.
SAVE = {
    "save": Facet("", ("save", "db")),
    "no-save": Facet("--no-save", ("save",), {"db": "nothing is stored"}),
}
LOCAL = ("model", "device", "dtype")
# `--llm openai:MODEL` runs on an endpoint: no weights are loaded here.
ENDPOINT_WHY = {
    k: "the endpoint runs the model" for k in ("device", "dtype", "device_map", "adapter")
}
OPENAI = Facet("--llm openai:MODEL", ("model",), ENDPOINT_WHY)

EXPLAIN = modes(
    "explain",
    # --out, --format: checked against each other by the command.
    ("method", "target", "generate", "contrast", "steps", "baseline", "aggregate", "fmt", "out")
    + ("param", "llm", "objective"),
    {
        "text": Facet(
            "--text",
            ("text", "candidates"),
            {"gpus": "--gpus splits a --dataset over GPUs"},
        ),
        "dataset": Facet(
            "--dataset",
            ("dataset", "gpus"),
            {"candidates": 'with --dataset, each line gives its own "candidates" list'},
        ),
    },
    SAVE,
    {"local": Facet("", (*LOCAL, "adapter", "device_map")), "openai": OPENAI},
)

_METRICS = ("fmt", "removal", "convention", "model", "device", "dtype")
_STORED = "the stored explanation has its own"
_FROM_FILE = "the {} come from the file"
EVALUATE = {
    "explanation": Mode(
        "evaluate --explanation",
        frozenset((*_METRICS, "rationale", "explanation", "db", "save")),
        {k: _STORED for k in ("method", "target", "param", "aggregate")},
    ),
    **{
        ("text", key): mode
        for key, mode in modes(
            "evaluate --text",
            (*_METRICS, "rationale", "text", "method", "target", "aggregate", "param"),
            SAVE,
            why={
                "random_reference": "it adds a random row to --dataset summaries",
                "gpus": "--gpus splits a --dataset over GPUs",
            },
        ).items()
    },
    "dataset": Mode(
        "evaluate --dataset",
        frozenset(
            (*_METRICS, "dataset", "method", "aggregate", "param", "random_reference", "gpus")
        ),
        {
            "target": _FROM_FILE.format("targets"),
            "rationale": _FROM_FILE.format("rationales"),
            "db": "nothing is stored",
            "save": "nothing is stored",
        },
    ),
}

COMPARE = single(
    "compare",
    *("methods", "text", "target", "rationale", "plot", "fmt", "removal", "convention"),
    *("aggregate", "random_reference", "model", "device", "dtype", "param", "db", "run_name"),
)

_FROM_GAMES = ("games_dir", "max_games", "random_episodes", "max_steps", "history")
_AMNESIC = ("random_directions", "intervene_examples")
PROBE = modes(
    "probe",
    ("layers", "test_size", "seed", "batch_size", "plot", "fmt", "intervene", "gpus")
    + (*LOCAL, "adapter", "device_map"),
    {
        "task": Facet("--task", ("task", *_FROM_GAMES)),
        "dataset": Facet(
            "--dataset",
            ("dataset",),
            {k: "the examples come from the file, not from playing games" for k in _FROM_GAMES},
        ),
    },
    SAVE,
    {
        "intervene": Facet("--intervene", _AMNESIC),
        "plain": Facet("", (), {k: "give --intervene" for k in _AMNESIC}),
    },
)

_TRACING = ("noise_tokens", "samples", "window", "noise", "seed")
_EXACT_ONLY = "causal tracing is exact and denoising"
PATCH = modes(
    "patch",
    ("clean", "target", "contrast", "component", "layers", "fmt", "out", *LOCAL, "adapter"),
    {
        "exact": Facet(
            "--corrupt",
            ("corrupt", "method", "direction", "batch_size"),
            {"compare_exact": "it goes with --method attribution"},
        ),
        "attribution": Facet(
            "--method attribution",
            ("corrupt", "method", "direction", "compare_exact"),
            {"batch_size": "only --compare-exact patches in batches"},
        ),
        "attribution-exact": Facet(
            "--method attribution --compare-exact",
            ("corrupt", "method", "direction", "compare_exact", "batch_size"),
        ),
        "tracing": Facet(
            "--noise-tokens",
            (*_TRACING, "batch_size"),
            {k: _EXACT_ONLY for k in ("method", "direction", "compare_exact")},
        ),
    },
    SAVE,
    why={k: "it goes with causal tracing (--noise-tokens)" for k in _TRACING},
)

_LLM_AGENT = ("llm", "select", "prompt", "history", "example", "tips", "tipset", "max_tips")
_LLM_AGENT += ("tip_prompts",)
_OPENAI_TUNING = ("concurrency", "timeout", "retries")
_PLAY = ("games_paths", "agent", "trials", "parallel", "max_steps", "seed", "run_name")
_PLAY += ("conditions", "workers", "db", "gpus")
PLAY = {
    ("llm", *key): mode
    for key, mode in modes(
        "play",
        (*_PLAY, *_LLM_AGENT),
        {
            "local": Facet(
                "--llm local",
                (*LOCAL, "adapter"),
                {k: "it tunes --llm openai:MODEL" for k in _OPENAI_TUNING},
            ),
            "openai": Facet(OPENAI.label, ("model", *_OPENAI_TUNING), ENDPOINT_WHY),
        },
        {
            "choose": Facet("", ("score_mode",), {"temperature": "it goes with --select generate"}),
            "generate": Facet(
                "--select generate",
                ("temperature",),
                {"score_mode": "it goes with --select choose"},
            ),
        },
    ).items()
}
for _agent in ("random", "expert"):
    _unused = (*_LLM_AGENT, "score_mode", "temperature", *_OPENAI_TUNING, *LOCAL, "adapter")
    PLAY[(_agent,)] = Mode(
        f"play --agent {_agent}", frozenset(_PLAY), {k: "this agent uses no LLM" for k in _unused}
    )

EXPLAIN_STEP = modes(
    "explain-step",
    ("run", "episode", "step", "fmt", "db", "model", "adapter", "device", "dtype", "patch"),
    {
        "attribution": Facet(
            "",
            ("method", "param", "objective"),
            {"positions": "give --patch", "layers": "give --patch"},
        ),
        "patch": Facet(
            "--patch",
            ("positions", "layers"),
            {
                "method": "--patch patches instead of attributing",
                "param": "--patch patches",
                "objective": "--patch compares the chosen command's log-probability",
            },
        ),
    },
)

_PREDICT = ("plot", "folds", "seed", "method", "model", "adapter", "device", "dtype", "gpus")
MISTAKES = modes(
    "mistakes",
    ("run", "fmt", "db", "predict"),
    {
        "list": Facet("", (), {k: "it goes with --predict" for k in _PREDICT}),
        "predict": Facet("--predict", _PREDICT),
    },
)

TIPS_MERGE = modes(
    "tips merge", ("run", "max_tips", "llm", "db"), {"local": Facet("", LOCAL), "openai": OPENAI}
)

EXPERIMENT = modes(
    "experiment introspective-tips",
    ("train", "test", "trials", "name", "llm", "select", "max_tips", "max_steps", "parallel")
    + ("seed", "fmt", "db", "gpus"),
    {"local": Facet("", (*LOCAL, "adapter")), "openai": OPENAI},
)

_CONCEPT_READS = ("run", "concept", "candidate", "where", "max_decisions", "seed", "plot", "fmt")
_CONCEPT_READS += (*LOCAL, "adapter", "db", "save", "gpus")
TCAV = single("tcav", *_CONCEPT_READS, "layers", "source", "positions", "n_random", "resamples")
_SOURCES = ("layer", "source", "direction_file", "pairs", "plus", "minus")
_FROM_FILE = "the direction comes from the --direction file"
STEER = modes(
    "steer",
    (*_CONCEPT_READS, "alphas", "positions", "n_random", "games", "save_direction"),
    {
        "file": Facet("--direction", ("direction_file",), {k: _FROM_FILE for k in _SOURCES}),
        "means": Facet("--source means", ("layer", "source")),
        "probe": Facet("--source probe", ("layer", "source")),
        "caa": Facet("--source caa", ("layer", "source", "pairs")),
        "actadd": Facet("--source actadd", ("layer", "source", "plus", "minus")),
    },
    {
        "episodes": Facet("--games", ("episode_alphas",)),
        "decisions": Facet("", (), {"episode_alphas": "give --games N"}),
    },
    why={
        "pairs": "give --source caa",
        "plus": "give --source actadd",
        "minus": "give --source actadd",
    },
)
_SAE_FIT = ("layer", "out", "width", "k", "epochs", "batch_size", "lr", "heldout", "pool")
SAE_TRAIN = modes(
    "sae train",
    (*_SAE_FIT, "read_batch", "seed", "fmt", "model", "adapter", "device", "dtype", "gpus"),
    {
        "runs": Facet("--runs", ("runs", "max_decisions", "db")),
        "dataset": Facet("--dataset", ("dataset",)),
        "both": Facet("--runs --dataset", ("runs", "max_decisions", "db", "dataset")),
    },
    why={"max_decisions": "give --runs", "db": "give --runs"},
)
SAE_LABEL = single(
    "sae label",
    "sae",
    "runs",
    "pool",
    "max_decisions",
    "read_batch",
    "fmt",
    *LOCAL,
    "adapter",
    "db",
    "gpus",
)
SAE_FEATURES = single("sae features", "sae", "fact", "search", "labelled", "limit", "fmt")
SAE_ABLATE = single(
    "sae ablate", "sae", "run", "steps", "max_decisions", "seed", "fmt", *LOCAL, "adapter", "db"
)
RSA = single(
    "rsa",
    "runs",
    "layers",
    "metric",
    "permutations",
    "max_states",
    "seed",
    "plot",
    "fmt",
    *LOCAL,
    "adapter",
    "db",
    "save",
    "gpus",
)

# Every command, by its path: the option-walking test reads this.
TABLES: dict[str, dict] = {
    "demo": single("demo", "db"),
    "explain": EXPLAIN,
    "evaluate": EVALUATE,
    "compare": COMPARE,
    "probe": PROBE,
    "patch": PATCH,
    "play": PLAY,
    "report": single("report", "run", "fmt", "db"),
    "explain-step": EXPLAIN_STEP,
    "mistakes": MISTAKES,
    "tcav": TCAV,
    "sae train": SAE_TRAIN,
    "sae label": SAE_LABEL,
    "sae features": SAE_FEATURES,
    "sae ablate": SAE_ABLATE,
    "steer": STEER,
    "rsa": RSA,
    "finetune": single(
        "finetune",
        *("games_paths", "out", "epochs", "lr", "rank", "dropout", "batch_size", "top_layers"),
        *("recoveries", "heldout_fraction", "rename_ingredients", "precision", "seed"),
        *("history", "parallel", "json_out", "model", "device", "dtype"),
    ),
    "export": single("export", "table", "fmt", "out", "run", "db"),
    "dashboard": single("dashboard", "db", "port"),
    "explanations list": single("explanations list", "db", "limit", "method"),
    "explanations show": single("explanations show", "db", "fmt", "out"),
    "games make": single("games make", "level", "count", "seed", "split", "out", "jobs"),
    "games list": single("games list", "fmt"),
    "runs list": single("runs list", "fmt", "db"),
    "episodes list": single("episodes list", "run", "fmt", "db"),
    "tips list": single("tips list", "run", "kind", "limit", "fmt", "db"),
    "tips show": single("tips show", "fmt", "db"),
    "tips diff": single("tips diff", "db"),
    "tips merge": TIPS_MERGE,
    "experiment introspective-tips": EXPERIMENT,
}
