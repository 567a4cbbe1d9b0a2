"""LoRA fine-tuning on expert demonstrations: the baseline the Introspective Tips paper
(Chen et al. 2023) argues tips can replace.

The adapter is peft's LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language
Models") trained with a plain torch loop. Each example is the acting prompt, formatted the
way the local backend formats it (the chat template), followed by the expert's command and
the end-of-sequence token, encoded the way the backend encodes a candidate command; the loss
is the cross-entropy of the command's tokens only. Games, not steps, are split into training
and held-out sets (seeded), so the held-out loss measures games the adapter never saw.

The adapter folder holds what peft saves (`adapter_config.json`, naming the base model, and
`adapter_model.safetensors`), the demonstrations it was trained on (`demonstrations.jsonl`)
and a manifest (`finetune.json`): base model, games, hyperparameters, losses, seconds.

    >>> from agents.finetune import FinetuneSettings, finetune
    >>> result = finetune(load_model(), games.list_games("game-sets/l1-3"),
    ...                   "adapters/l1-3", FinetuneSettings(epochs=2))   # doctest: +SKIP
    >>> load_model(adapter="adapters/l1-3")                             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from agents.finetune.demonstrations import (
    Demonstration,
    demonstrations,
    recovery_demonstrations,
    write_demonstrations,
)
from agents.finetune.evaluation import imitation_accuracy
from agents.finetune.renaming import IngredientRenamer
from agents.prompt import PromptTemplate
from games import GameInfo
from workbench.anatomy import block_linears, model_anatomy
from workbench.errors import WorkbenchError
from workbench.llm.local import LocalLLM, machine_threads
from workbench.models import LoadedModel, base_model_id

MANIFEST = "finetune.json"
DEMONSTRATIONS = "demonstrations.jsonl"
Progress = Callable[..., None]
PRECISIONS = ("auto", "float32", "bfloat16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype training autocasts to (None: no autocast, the model's own dtype)."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cpu" and _cpu_has_bf16() else None


def _cpu_has_bf16() -> bool:
    # torch's own CPU feature checks (private, so absent ones count as no).
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


@dataclass(frozen=True)
class FinetuneSettings:
    """The hyperparameters of one fine-tuning run, checked on creation.

    The defaults are the benchmark's (BENCHMARKS.md, run 10) but for `lr` and `top_layers`,
    which depend on the model's size: for SmolLM2-135M the benchmark takes lr 2e-3 and the
    last 10 of its 30 blocks.

    Args:
        epochs: passes over the training examples (at least 1).
        lr: AdamW's peak learning rate (linear warm-up over the first tenth, then decay).
        rank / alpha / dropout: LoRA's rank, scale (default 2 x rank) and dropout (none by
            default: renaming regularises already, and dropout copies every adapted layer's
            input, 13% of a CPU step).
        batch_size: examples per optimizer step.
        heldout_fraction: share of the games held out for the held-out loss (0 for none).
        seed: fixes the held-out games, the example order, LoRA's initialisation and dropout.
        target_modules: the layers LoRA adapts ("all-linear": every linear layer of the
            transformer blocks, not the output layer).
        top_layers: adapt only the last N transformer blocks (None: all). The backward pass
            then stops at the first adapted block: on a CPU, the top half of SmolLM2's 30
            blocks trains about 1.4x faster per example than all of them.
        recoveries: detour episodes a game besides its walkthrough (see
            `recovery_demonstrations`): states after a wrong command, labelled with what the
            winning policy does from there. 0 for the walkthroughs alone.
        rename_ingredients: train each epoch on the examples with their recipe's foods
            renamed to other training games' foods (`IngredientRenamer`), so that the
            cookbook, not a food's name, says what to do; held-out losses and choices are
            on the examples as played.
        precision: "auto", "float32" or "bfloat16". bfloat16 runs the forward and backward
            passes under bf16 autocast while LoRA's weights and AdamW's state stay float32
            (mixed precision); "auto" picks it on GPUs and on CPUs with native bf16
            (AVX512-BF16 or AMX; BENCHMARKS.md has the CPU figure), float32 elsewhere.
    """

    epochs: int = 3
    lr: float = 5e-4
    rank: int = 16
    alpha: int | None = None
    dropout: float = 0.0
    batch_size: int = 4
    heldout_fraction: float = 0.1
    seed: int = 0
    target_modules: str | tuple[str, ...] = "all-linear"
    top_layers: int | None = None
    recoveries: int = 1
    rename_ingredients: bool = True
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise WorkbenchError(f"epochs must be at least 1, not {self.epochs}")
        if not self.lr > 0:
            raise WorkbenchError(f"lr must be positive, not {self.lr}")
        if self.rank < 1:
            raise WorkbenchError(f"rank must be at least 1, not {self.rank}")
        if not 0 <= self.dropout < 1:
            raise WorkbenchError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.batch_size < 1:
            raise WorkbenchError(f"batch size must be at least 1, not {self.batch_size}")
        if self.recoveries < 0:
            raise WorkbenchError(f"recoveries must be 0 or more, not {self.recoveries}")
        if self.top_layers is not None and self.top_layers < 1:
            raise WorkbenchError(f"top layers must be at least 1, not {self.top_layers}")
        if self.precision not in PRECISIONS:
            raise WorkbenchError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        if not 0 <= self.heldout_fraction < 1:
            raise WorkbenchError(f"heldout fraction must be in [0, 1), not {self.heldout_fraction}")

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["alpha"] = self.lora_alpha
        if not isinstance(self.target_modules, str):
            found["target_modules"] = list(self.target_modules)
        return found


@dataclass
class FinetuneResult:
    """A trained adapter: where it is and its manifest (what `finetune.json` holds)."""

    out: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_loss(self) -> float | None:
        return self.manifest["loss"]["heldout"]

    @property
    def train_loss(self) -> float:
        return self.manifest["loss"]["train"]


def split_games(game_ids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) game ids: a seeded shuffle of the sorted ids, at least one game
    held out when `fraction` > 0 and there are two games or more, at least one trained on."""
    ids = sorted(set(game_ids))
    random.Random(f"finetune-split:{seed}").shuffle(ids)
    held = (
        0
        if fraction == 0 or len(ids) < 2
        else min(len(ids) - 1, max(1, round(fraction * len(ids))))
    )
    return sorted(ids[held:]), sorted(ids[:held])


def check_out(out: str | os.PathLike) -> Path:
    """The adapter folder, checked before anything slow: not a file, no adapter in it yet."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise WorkbenchError(f"out {str(folder)!r} is a file, not a folder")
    if (folder / MANIFEST).exists() or (folder / "adapter_config.json").exists():
        raise WorkbenchError(
            f"out {str(folder)!r} already holds an adapter; pick another folder or remove it"
        )
    return folder


def finetune(
    lm: LoadedModel,
    games: Sequence[GameInfo],
    out: str | os.PathLike,
    settings: FinetuneSettings | None = None,
    *,
    template: PromptTemplate | None = None,
    parallel: int = 8,
    workers: int | str = "auto",
    progress: Progress | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter for `lm` on the expert demonstrations of `games` into `out`.

    The model is left as it was (the adapter is removed from it after saving); load the
    fine-tuned model with `load_model(..., adapter=out)`.

    Args:
        lm: the base model (a causal LM, without an adapter).
        games: the games whose walkthroughs are the demonstrations.
        out: a new folder for the adapter, its demonstrations and manifest.
        settings: hyperparameters (`FinetuneSettings`).
        template: the acting prompt (default: the one `play` uses).
        parallel / workers: games replayed together, as for `agents.play`.
        progress: `progress(done, total, description=...)` after each optimizer step.
        on_phase: told what happens next, in a line.
    """
    settings = settings or FinetuneSettings()
    template = template or PromptTemplate()
    folder = check_out(out)
    _check_base(lm, games)
    started = time.perf_counter()
    if on_phase:
        on_phase(f"replaying {len(games)} walkthroughs")
    demos = demonstrations(games, template, parallel=parallel, workers=workers)
    demos += recovery_demonstrations(
        games,
        template,
        per_game=settings.recoveries,
        seed=settings.seed,
        parallel=parallel,
        workers=workers,
    )
    write_demonstrations(demos, folder / DEMONSTRATIONS)
    data = _TrainingSet.split(LocalLLM(lm), demos, games, settings)
    if on_phase:
        on_phase(
            f"training on {len(data.train)} steps of {len(data.train_games)} games"
            f" ({len(data.heldout)} steps of {len(data.heldout_games)} games held out)"
        )
    trainer = _Trainer(lm, settings)
    with _training_threads(lm) as train_threads:
        try:
            fit_started = time.perf_counter()
            history = trainer.fit(data.epoch_examples, data.heldout, progress)
            fit_seconds = time.perf_counter() - fit_started
            if data.heldout_demos and on_phase:
                on_phase(f"choosing on the {len(data.heldout_demos)} held-out steps")
            # Which decisions the adapter got right on games it never saw (the loss averages
            # over every token of a command, most of them easy).
            accuracy = (
                imitation_accuracy(data.llm, data.heldout_demos).to_dict()
                if data.heldout_demos
                else None
            )
            trainer.save(folder)
        finally:
            trainer.restore()
    manifest = {
        **_provenance(lm, games, data, settings, template),
        "loss": {
            "train": history[-1]["train_loss"],
            "heldout": history[-1]["heldout_loss"],
            "heldout_before": history[0]["heldout_loss"],
        },
        "history": history,
        "heldout_choices": accuracy,
        "device": str(lm.device),
        "dtype": str(lm.dtype).removeprefix("torch."),
        "autocast": str(trainer.autocast).removeprefix("torch.") if trainer.autocast else None,
        "threads": train_threads,
        "train_seconds": round(fit_seconds, 1),  # the torch loop, held-out losses included
        "seconds": round(time.perf_counter() - started, 1),  # replays and encoding too
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return FinetuneResult(folder, manifest)


def _check_base(lm: LoadedModel, games: Sequence[GameInfo]) -> None:
    if lm.kind != "causal":
        raise WorkbenchError(f"fine-tuning needs a causal LM; {lm.name} is a classifier")
    if lm.adapter:
        raise WorkbenchError("fine-tuning starts from a base model, not one with an adapter")
    if not games:
        raise WorkbenchError("no games to fine-tune on")


@dataclass
class _TrainingSet:
    """The demonstrations split by game into training and held-out examples, encoded as the
    acting backend formats prompts; each epoch may rename the recipe foods afresh."""

    llm: LocalLLM  # the backend's own prompt formatting and thread count
    settings: FinetuneSettings
    train_demos: list[Demonstration]
    heldout_demos: list[Demonstration]
    train_games: list[str]
    heldout_games: list[str]
    renamer: IngredientRenamer

    @classmethod
    def split(
        cls,
        llm: LocalLLM,
        demos: list[Demonstration],
        games: Sequence[GameInfo],
        settings: FinetuneSettings,
    ) -> _TrainingSet:
        train_ids, heldout_ids = split_games(
            [d.game for d in demos], settings.heldout_fraction, settings.seed
        )
        held = set(heldout_ids)
        return cls(
            llm,
            settings,
            [d for d in demos if d.game not in held],
            [d for d in demos if d.game in held],
            train_ids,
            heldout_ids,
            IngredientRenamer([g for g in games if g.id not in held]),
        )

    @cached_property
    def train(self) -> list[_Example]:
        return [_encode(self.llm, d) for d in self.train_demos]

    @cached_property
    def heldout(self) -> list[_Example]:
        return [_encode(self.llm, d) for d in self.heldout_demos]

    def epoch_examples(self, epoch: int) -> list[_Example]:
        if not self.settings.rename_ingredients:
            return self.train
        rng = random.Random(f"finetune-rename:{self.settings.seed}:{epoch}")
        return [_encode(self.llm, self.renamer(d, rng)) for d in self.train_demos]


@contextlib.contextmanager
def _training_threads(lm: LoadedModel) -> Iterator[int]:
    """Every core for training on the CPU (the games are replayed by now: 1.75x faster per
    step on 2 cores than the one thread the acting backend leaves itself beside games);
    yields the thread count, and restores the one before."""
    threads = torch.get_num_threads()
    if lm.device.type == "cpu":
        torch.set_num_threads(machine_threads())
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)


def _provenance(
    lm: LoadedModel,
    games: Sequence[GameInfo],
    data: _TrainingSet,
    settings: FinetuneSettings,
    template: PromptTemplate,
) -> dict[str, Any]:
    """What the adapter was trained from: base model, games, split, settings and prompt
    (what data influence and a re-run need)."""
    return {
        "base_model": base_model_id(lm.name),
        "games": sorted({g.id for g in games}),
        "game_sets": sorted({str(g.path.parent) for g in games}),
        "levels": sorted({g.level for g in games if g.level is not None}),
        "train_games": data.train_games,
        "heldout_games": data.heldout_games,
        "examples": {"train": len(data.train), "heldout": len(data.heldout)},
        "hyperparameters": settings.to_dict(),
        "prompt": {"template": template.text, "history_steps": template.history_steps},
    }


@dataclass
class _Example:
    ids: list[int]
    answer: int  # the last `answer` ids are the command and end-of-sequence token


def _encode(llm: LocalLLM, demo: Demonstration) -> _Example:
    """The prompt as the backend formats it, then the command as the backend encodes a
    candidate, then end-of-sequence (so that generation also learns to stop)."""
    tokenizer = llm.lm.tokenizer
    prompt, command = tokenizer(
        [llm.format_prompt(demo.prompt), demo.command], add_special_tokens=False
    )["input_ids"]
    eos = tokenizer.eos_token_id
    answer = command + ([eos] if eos is not None else [])
    return _Example(prompt + answer, len(answer))


class _Trainer:
    """The torch loop around a peft LoRA model; `restore` gives the base model back."""

    def __init__(self, lm: LoadedModel, settings: FinetuneSettings) -> None:
        from peft import LoraConfig, get_peft_model

        self.lm = lm
        self.settings = settings
        self._grad = {n: p.requires_grad for n, p in lm.model.named_parameters()}
        torch.manual_seed(settings.seed)  # LoRA's initialisation, then dropout
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.dropout,
            target_modules=_targets(lm, settings),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():
            # peft asks transformers a deprecated question (is_gradient_checkpointing).
            warnings.simplefilter("ignore", FutureWarning)
            self.model = get_peft_model(lm.model, config)
        self.model.peft_config["default"].base_model_name_or_path = base_model_id(lm.name)
        self._keeps_logits = lm.keeps_logits
        self.autocast = autocast_dtype(settings.precision, lm.device)

    def fit(
        self,
        epoch_examples: Callable[[int], list[_Example]],
        heldout: list[_Example],
        progress: Progress | None,
    ) -> list[dict[str, Any]]:
        """Train; `epoch_examples(epoch)` gives each epoch's examples (the same number)."""
        s = self.settings
        train = epoch_examples(1)
        if not train:
            raise WorkbenchError("no training examples (every game is held out)")
        rng = random.Random(f"finetune-order:{s.seed}")
        steps_per_epoch = math.ceil(len(train) / s.batch_size)
        total = steps_per_epoch * s.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=0.0)
        warmup = max(1, total // 10)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda i: (
                (i + 1) / warmup if i < warmup else max(0.0, (total - i) / (total - warmup + 1))
            ),
        )
        history = [{"epoch": 0, "train_loss": None, "heldout_loss": self.evaluate(heldout)}]
        done = 0
        if progress:
            progress(0, total, description=f"epoch 1/{s.epochs}")
        for epoch in range(1, s.epochs + 1):
            self.model.train()
            summed, tokens = 0.0, 0
            train = train if epoch == 1 else epoch_examples(epoch)
            for batch in _batches(train, s.batch_size, rng):
                loss, n = self._loss(batch)
                if not torch.isfinite(loss):
                    # Saving an adapter of NaNs would only fail later, in every command
                    # that loads it.
                    raise WorkbenchError(
                        f"training diverged: the loss is {loss.item()} at step {done + 1} of "
                        f"{total}; try a lower lr than {s.lr:g}"
                    )
                optimizer.zero_grad(set_to_none=True)
                (loss / n).backward()
                optimizer.step()
                schedule.step()
                summed += loss.item()
                tokens += n
                done += 1
                if progress:
                    progress(
                        done,
                        total,
                        description=f"epoch {epoch}/{s.epochs} loss {summed / tokens:.3f}",
                    )
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": round(summed / tokens, 5),
                    "heldout_loss": self.evaluate(heldout),
                }
            )
        self.model.eval()
        return history

    @torch.no_grad()
    def evaluate(self, examples: list[_Example]) -> float | None:
        """Mean cross-entropy per answer token (None without examples)."""
        if not examples:
            return None
        self.model.eval()
        summed, tokens = 0.0, 0
        ordered = sorted(examples, key=lambda e: len(e.ids))  # little padding
        for start in range(0, len(ordered), self.settings.batch_size):
            loss, n = self._loss(ordered[start : start + self.settings.batch_size])
            summed += loss.item()
            tokens += n
        return round(summed / tokens, 5)

    def _loss(self, batch: list[_Example]) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of the answer tokens, and how many there are.

        Rows are right-padded: with left padding the pad positions are queries that may see
        no key at all, and CUDA's scaled-dot-product attention backward turns such rows into
        NaN gradients for the whole batch (measured on an H200, torch 2.11: finite alone,
        NaN together; the eager attention is fine). Only the positions that predict answer
        tokens (one contiguous span over the batch) get the vocabulary projection."""
        device = self.lm.device
        pad = self.lm.tokenizer.pad_token_id or 0
        width = max(len(e.ids) for e in batch)
        # Position t predicts token t + 1: row i's answer is predicted from
        # [len - answer - 1, len - 1).
        first = min(len(e.ids) - e.answer - 1 for e in batch)
        last = max(len(e.ids) - 1 for e in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        targets = torch.full((len(batch), last - first), -100, dtype=torch.long)
        for i, e in enumerate(batch):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = 1
            end = len(e.ids) - 1 - first
            targets[i, end - e.answer : end] = torch.tensor(e.ids[-e.answer :])
        span = torch.arange(first, last, device=device)
        extra = {"logits_to_keep": span} if self._keeps_logits else {}
        with torch.autocast(
            device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        ):
            logits = self.model(
                input_ids=ids.to(device), attention_mask=mask.to(device), **extra
            ).logits
        if not self._keeps_logits:
            logits = logits[:, first:last]
        wanted = targets.to(device)
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            wanted.reshape(-1),
            ignore_index=-100,
            reduction="sum",
        )
        return loss, int((wanted != -100).sum())

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        # Only the LoRA weights, also where the output layer is adapted.
        self.model.save_pretrained(str(folder), save_embedding_layers=False)

    def restore(self) -> None:
        """Take the LoRA layers out again: the cached base model is shared with every
        other user of `load_model` in this process."""
        base = self.model.unload()
        for name, param in base.named_parameters():
            param.requires_grad_(self._grad.get(name, param.requires_grad))
        base.eval()


def _targets(lm: LoadedModel, settings: FinetuneSettings) -> str | list[str]:
    """What LoRA adapts, as peft takes it: the setting itself, or with `top_layers` the full
    names of the matching linear layers of the last blocks (found by workbench.anatomy)."""
    wanted = settings.target_modules
    if settings.top_layers is None:
        return wanted if isinstance(wanted, str) else list(wanted)
    blocks = model_anatomy(lm).n_layers
    if settings.top_layers > blocks:
        raise WorkbenchError(
            f"top layers must be at most the model's {blocks} blocks, not {settings.top_layers}"
        )
    names = block_linears(lm, range(blocks - settings.top_layers, blocks))
    return [n for n in names if wanted == "all-linear" or n.rsplit(".", 1)[-1] in wanted]


def _batches(examples: list[_Example], size: int, rng: random.Random) -> list[list[_Example]]:
    """A seeded shuffle into batches of similar length (less padding): shuffle, sort runs
    of 8 batches' worth by length, cut into batches, shuffle the batches."""
    order = list(examples)
    rng.shuffle(order)
    batches = []
    run = 8 * size
    for start in range(0, len(order), run):
        chunk = sorted(order[start : start + run], key=lambda e: len(e.ids))
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches
