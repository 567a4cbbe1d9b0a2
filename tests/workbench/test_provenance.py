"""Model provenance: a result records which weights made it (base model, adapter and its hash,
dtype), the CLI shows them, and re-using an explanation loads the same weights again."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.run_cli import run_inprocess
from workbench.errors import ModelLoadError
from workbench.llm.local import LocalLLM
from workbench.models import ModelIdentity, adapter_sha256, load_identity, load_model

TEXT = "the milk is in the fridge"


def _lora(base_dir, out, seed: int):
    """A LoRA adapter for the tiny model with random (not zero) weights, so it changes the
    model's outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    config.init_lora_weights = False  # random A and B: the adapter is not a no-op
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    return _lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "lora", seed=0)


def test_a_loaded_model_knows_its_adapter_and_its_hash(tiny_model_dir, adapter_dir):
    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float32", adapter=adapter_dir)
    identity = lm.identity
    assert identity.base == str(tiny_model_dir) and identity.dtype == "float32"
    assert identity.adapter == str(adapter_dir.resolve())
    assert identity.adapter_sha256 == adapter_sha256(adapter_dir)
    assert ModelIdentity.from_dict(identity.to_dict()) == identity
    assert LocalLLM(lm).model_info == identity.to_dict()  # what its prompting methods record
    assert identity.label == (
        f"{tiny_model_dir} + adapter {adapter_dir.resolve()} "
        f"(sha256 {identity.adapter_sha256[:8]}) (float32)"
    )
    assert identity.short_label == f"tiny-llama + lora ({identity.adapter_sha256[:8]})"
    assert load_model(str(tiny_model_dir), device="cpu", dtype="float32").identity.adapter is None


def _explain(capsys, db, tiny_model_dir, *adapter: str) -> dict:
    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--text",
        TEXT,
        "--target",
        " milk",
        "--method",
        "saliency",
        "--model",
        str(tiny_model_dir),
        *adapter,
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--db",
        str(db),
        "--format",
        "json",
    )
    assert code == 0, err
    return json.loads(out)


def _evaluate(capsys, db, exp_id: str, *more: str) -> tuple[int, str, str]:
    return run_inprocess(
        capsys,
        "evaluate",
        "--explanation",
        exp_id,
        "--db",
        str(db),
        "--device",
        "cpu",
        "--format",
        "json",
        "--no-save",
        *more,
    )


def test_explain_with_an_adapter_stores_shows_and_reuses_it(
    capsys, monkeypatch, tmp_path, tiny_model_dir, adapter_dir
):
    from explainers import Explanation
    from explainers.metrics import evaluate
    from workbench.store import Store

    db = tmp_path / "wb.duckdb"
    record = _explain(capsys, db, tiny_model_dir, "--adapter", str(adapter_dir))
    info = record["model_info"]
    assert info["adapter"] == str(adapter_dir.resolve())
    assert info["adapter_sha256"] == adapter_sha256(adapter_dir)
    assert info["base"] == str(tiny_model_dir) and info["dtype"] == "float32"

    monkeypatch.setenv("COLUMNS", "200")  # a table's cells are whole on a wide terminal
    code, out, err = run_inprocess(capsys, "explanations", "list", "--db", str(db))
    assert code == 0, err
    assert f"tiny-llama + lora ({info['adapter_sha256'][:8]})" in out
    exp_id = Explanation.load(Store(db, read_only=True), record["id"]).id
    code, out, err = run_inprocess(capsys, "explanations", "show", exp_id, "--db", str(db))
    assert code == 0 and f"sha256 {info['adapter_sha256'][:8]}" in " ".join(out.split())

    # Re-evaluating the explanation loads the adapter again: its metrics are the adapter
    # model's, not the base model's.
    code, out, err = _evaluate(capsys, db, exp_id)
    assert code == 0, err
    exp = Explanation.load(Store(db, read_only=True), exp_id)
    tuned = _finite(evaluate(exp, load_model(str(tiny_model_dir), adapter=adapter_dir)).metrics)
    base = _finite(evaluate(exp, load_model(str(tiny_model_dir))).metrics)
    reused = {name: json.loads(out)[name] for name in tuned}
    assert tuned and reused == pytest.approx(tuned)
    assert base.keys() == tuned.keys() and base != pytest.approx(tuned)


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if value == value}  # not NaN


def test_a_changed_or_missing_adapter_is_refused(capsys, tmp_path, tiny_model_dir):
    adapter = _lora(tiny_model_dir, tmp_path / "lora", seed=1)
    db = tmp_path / "wb.duckdb"
    exp_id = _explain(capsys, db, tiny_model_dir, "--adapter", str(adapter))["id"]
    recorded = adapter_sha256(adapter)

    _lora(tiny_model_dir, adapter, seed=2)  # re-trained into the same folder
    capsys.readouterr()  # (transformers' loading bar)
    code, _, err = _evaluate(capsys, db, exp_id)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: adapter {str(adapter.resolve())!r} has changed since this result was made "
        f"(sha256 {adapter_sha256(adapter)[:8]}, was {recorded[:8]})"
    ]
    shutil.rmtree(adapter)
    code, _, err = _evaluate(capsys, db, exp_id)
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: adapter {str(adapter.resolve())!r} of this result no longer exists"
    ]
    with pytest.raises(ModelLoadError, match="no longer exists"):
        load_identity(ModelIdentity(str(tiny_model_dir), "float32", str(adapter), recorded))


def test_a_runs_model_reloads_on_the_asked_device_and_dtype_with_its_adapter(
    store, tmp_path, tiny_model_dir
):
    """explain-step without --model: the run's base and adapter, on --device in --dtype; an
    adapter re-trained since the run is refused (its decisions would not be the run's)."""
    from agents.recorded_step import run_model
    from workbench.store import runs

    adapter = _lora(tiny_model_dir, tmp_path / "lora", seed=3)
    played = load_model(str(tiny_model_dir), device="cpu", dtype="float32", adapter=adapter)
    runs.create_run(store, "with-lora", "play", {"llm": LocalLLM(played).describe()})

    lm = run_model(store, "with-lora", device="cpu", dtype="bfloat16")
    assert lm.dtype == torch.bfloat16 and lm.device.type == "cpu"
    assert lm.identity.adapter == str(adapter.resolve())
    assert lm.identity.adapter_sha256 == played.adapter_sha256

    _lora(tiny_model_dir, adapter, seed=4)
    with pytest.raises(ModelLoadError, match="has changed since this result was made"):
        run_model(store, "with-lora", device="cpu")


def test_probe_results_keep_the_model_identity(store):
    from workbench.store.probes import get_probe, list_probes, save_probe

    info = ModelIdentity("tiny", "float32", "/adapters/l1", "ab" * 32).to_dict()
    record = {"task": "t", "model": "tiny", "n_examples": 4, "labels": ["a", "b"]}
    probe_id = save_probe(store, {**record, "split": "random", "layers": [], "model_info": info})
    assert get_probe(store, probe_id)["model_info"] == info
    assert list_probes(store)[0]["model_info"] == info


def test_a_prompting_explanation_keeps_its_llms_identity():
    from explainers import explain
    from tests.workbench.openai_server import ScriptedOpenAIServer
    from workbench.llm.openai_backend import OpenAILLM

    def reply(prompt: str) -> str:
        if "Important words" in prompt:
            return "Answer: the fridge\nImportant words: milk, fridge\nWhy: it says so."
        return "Answer: fridge" if "fridge" in prompt else "Answer: I don't know"

    class Served(OpenAILLM):
        """An endpoint whose weights are known (as a local LLM's are)."""

        model_info = ModelIdentity("served", "bfloat16", "/adapters/a", "c0ffee" * 10).to_dict()

    with ScriptedOpenAIServer(reply=reply) as server:
        endpoint = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        known = Served("scripted", base_url=server.base_url, backoff=0.01)
        unknown_weights = explain(None, TEXT, method="counterfactual_test", llm=endpoint)
        known_weights = explain(None, TEXT, method="counterfactual_test", llm=known)
    assert unknown_weights.model_info is None and unknown_weights.model_label == "scripted"
    assert known_weights.model_info == Served.model_info
