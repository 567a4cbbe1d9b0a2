"""Causal interventions: exact patching against a hand-written one-patch-per-forward
reference, what patching shows on a model trained so that one position carries the
answer, attribution patching's agreement with exact patching, causal tracing, amnesic
probing, the stored and rendered result, the CLI, and one-line errors for bad input."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.causal.result import PatchingExplanation
from explainers.explanation import Explanation
from tests.conftest import tiny_llama_config
from tests.explainers.conftest import copy_inputs
from tests.run_cli import run_inprocess
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import from_pretrained_objects

CLEAN = "the milk is in the fridge"
CORRUPT = "the apple is in the fridge"


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Tiny-model forwards on a shared machine: one torch thread (see conftest)."""


# -- a hand-written reference: one patch per forward, hooks written out per architecture ----

MODULES = {
    "tiny-llama": (lambda m: m.model.layers, lambda b: b.self_attn.o_proj, lambda b: b.mlp),
    "tiny-gpt2": (lambda m: m.transformer.h, lambda b: b.attn.c_proj, lambda b: b.mlp),
}


def _reference(lm, clean, corrupt, target_id, component, direction):
    """(patched values, clean value, corrupted value): every cell from its own forward."""
    model, tok = lm.model, lm.tokenizer
    blocks_of, proj_of, mlp_of = MODULES[lm.name]
    blocks = blocks_of(model)
    n_layers = len(blocks)
    ids = {k: torch.tensor([tok(t)["input_ids"]]) for k, t in (("clean", clean), ("corr", corrupt))}
    base, source = ("corr", "clean") if direction == "denoise" else ("clean", "corr")
    n = ids["clean"].shape[1]
    heads = model.config.num_attention_heads if lm.name == "tiny-llama" else model.config.n_head

    def module_and_kind(layer):
        if component == "resid":
            if layer == n_layers:
                return blocks[-1], "output"
            return blocks[layer], "input"
        if component == "attn":
            return proj_of(blocks[layer]), "output"
        if component == "mlp":
            return mlp_of(blocks[layer]), "output"
        return proj_of(blocks[layer]), "input"  # head: the projection's input

    def run(which, layer=None, edit=None):
        handles, seen = [], {}
        if layer is not None:
            module, kind = module_and_kind(layer)
            if kind == "input":

                def pre(mod, args):
                    seen["x"] = args[0].detach().clone()
                    return (edit(args[0]), *args[1:]) if edit else None

                handles.append(module.register_forward_pre_hook(pre))
            else:

                def post(mod, args, out):
                    x = out[0] if isinstance(out, tuple) else out
                    seen["x"] = x.detach().clone()
                    if edit is None:
                        return None
                    new = edit(x)
                    return (new, *out[1:]) if isinstance(out, tuple) else new

                handles.append(module.register_forward_hook(post))
        with torch.no_grad():
            logits = model(input_ids=ids[which]).logits[0, -1]
        for h in handles:
            h.remove()
        return float(torch.log_softmax(logits, -1)[target_id]), seen.get("x")

    clean_value, corrupt_value = run("clean")[0], run("corr")[0]
    layers = range(n_layers + 1) if component == "resid" else range(n_layers)
    rows = []
    for layer in layers:
        src = run(source, layer)[1]
        row = []
        columns = range(heads) if component == "head" else range(n)
        for col in columns:

            def edit(x, col=col, src=src):
                x = x.clone()
                if component == "head":
                    width = x.shape[-1] // heads
                    x[:, :, col * width : (col + 1) * width] = src[
                        :, :, col * width : (col + 1) * width
                    ]
                else:
                    x[:, col] = src[:, col]
                return x

            row.append(run(base, layer, edit)[0])
        rows.append(row)
    return np.array(rows), clean_value, corrupt_value


@pytest.mark.parametrize("model_name", ["tiny_causal", "tiny_gpt2"])
@pytest.mark.parametrize("component", ["resid", "attn", "mlp", "head"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_exact_patching_equals_one_patch_per_forward(request, model_name, component, direction):
    lm = request.getfixturevalue(model_name)
    target_id = lm.tokenizer("to", add_special_tokens=False)["input_ids"][0]
    values, clean, corrupt = _reference(lm, CLEAN, CORRUPT, target_id, component, direction)
    for engine, batch_size in (("auto", 3), ("full", None)):
        exp = explain(
            lm,
            CLEAN,
            method="activation_patching",
            target="to",
            corrupt=CORRUPT,
            component=component,
            direction=direction,
            engine=engine,
            batch_size=batch_size,
        )
        # Raw log-probabilities: a random tiny model's clean-corrupted difference is small,
        # so the normalised scores would magnify float32 rounding.
        np.testing.assert_allclose(exp.extras["values"], values, atol=2e-5, err_msg=engine)
        assert (exp.clean_value, exp.corrupt_value) == pytest.approx((clean, corrupt), abs=1e-5)
        restored = exp.scores * (exp.clean_value - exp.corrupt_value)
        np.testing.assert_allclose(restored, values - corrupt, atol=3e-5, err_msg=engine)
    assert model_anatomy(lm).has(component)


# -- a model where one position carries the answer ------------------------------------------


def _copy_pair(seed: int = 7) -> tuple[str, str, str, str, int]:
    """A clean copy-task input, its corruption (another object at the same place), the two
    answers and the object's position."""
    text, answer = copy_inputs(1, seed)[0]
    words = text.split()
    position = words.index(answer)
    other = "milk" if answer != "milk" else "apple"
    words[position] = other
    return text, " ".join(words), answer, other, position


def test_resid_patching_finds_the_position_that_carries_the_answer(trained_copy_model):
    clean, corrupt, answer, other, position = _copy_pair()
    exp = explain(
        trained_copy_model,
        clean,
        method="activation_patching",
        target=answer,
        contrast=other,
        corrupt=corrupt,
    )
    assert exp.clean_value > 2 and exp.corrupt_value < -2  # the model answers both correctly
    first, last = exp.scores[0], exp.scores[-1]
    final = len(exp.input_tokens) - 1
    # Layer 0: only the object's position restores the answer (and fully).
    assert first[position] == pytest.approx(1.0, abs=1e-4)
    assert np.abs(np.delete(first, position)).max() < 1e-4
    # After the last block: only the final position (where the answer is read) matters.
    assert last[final] == pytest.approx(1.0, abs=1e-4)
    assert np.abs(last[:final]).max() < 1e-4
    assert exp.best()[2] == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("component", ["resid", "attn", "mlp", "head"])
def test_attribution_patching_agrees_with_exact_patching(trained_copy_model, component):
    clean, corrupt, answer, other, _ = _copy_pair()
    exp = explain(
        trained_copy_model,
        clean,
        method="attribution_patching",
        target=answer,
        contrast=other,
        corrupt=corrupt,
        component=component,
        compare_exact=True,
    )
    assert exp.extras["exact_correlation"] >= 0.9
    assert np.asarray(exp.extras["exact_scores"]).shape == exp.scores.shape


def test_causal_tracing_restores_the_noised_token(trained_copy_model):
    clean, _, answer, _, position = _copy_pair()
    kwargs = dict(method="causal_tracing", target=answer, noise_tokens=[position], samples=3)
    exp = explain(trained_copy_model, clean, **kwargs)
    final = len(exp.input_tokens) - 1
    assert exp.corrupt_value < exp.clean_value - 1  # the noise hides the answer
    assert exp.scores[0, position] == pytest.approx(1.0, abs=1e-4)
    assert np.abs(np.delete(exp.scores[0], position)).max() < 1e-4
    assert exp.scores[-1, final] == pytest.approx(1.0, abs=1e-4)
    assert exp.corrupt_tokens[position].endswith("+noise")
    again = explain(trained_copy_model, clean, **kwargs)
    np.testing.assert_array_equal(exp.scores, again.scores)  # seeded
    other = explain(trained_copy_model, clean, **kwargs, seed=1)
    assert other.corrupt_value != exp.corrupt_value
    windowed = explain(trained_copy_model, clean, **kwargs, window=3, component="mlp")
    assert windowed.scores.shape == (2, len(exp.input_tokens))


def test_the_suffix_engine_is_checked_once_per_model(tiny_causal, tokenizer, monkeypatch):
    from explainers.causal.engine import Patcher

    checks = []
    real = Patcher._suffix_matches

    def counted(self):
        checks.append(self.lm.name)
        return real(self)

    monkeypatch.setattr(Patcher, "_suffix_matches", counted)
    fresh = from_pretrained_objects(copy.deepcopy(tiny_causal.model), tokenizer, name="fresh")
    kwargs = dict(method="causal_tracing", target="to", noise_tokens=[1], samples=3)
    exp = explain(fresh, CLEAN, **kwargs)
    explain(fresh, CLEAN, **kwargs, seed=1)
    assert checks == ["fresh"]  # one Patcher per noise sample, one check per model
    full = explain(fresh, CLEAN, **kwargs, engine="full")
    np.testing.assert_allclose(exp.scores, full.scores, atol=1e-5)


def test_amnesic_probing_hurts_more_than_random_directions(trained_copy_model):
    from explainers.causal.amnesic import amnesic_probing
    from explainers.probing.probes import ProbeDataset, ProbeExample

    examples = [
        ProbeExample(t, a) for t, a in copy_inputs(120, seed=5) if a in ("milk", "apple", "key")
    ]
    result = amnesic_probing(trained_copy_model, ProbeDataset("copy", examples), [1, 2], n_random=3)
    for layer in result.layers:
        assert layer.n_directions >= 1 and layer.accuracy > 0.9
        assert layer.logprob_change < layer.random_change - 5 * layer.random_std
    assert result.to_dict()["layers"][0]["excess"] == pytest.approx(result.layers[0].excess)


# -- BERT-style classifiers -----------------------------------------------------------------


@pytest.mark.parametrize("component", ["resid", "attn", "mlp", "head"])
def test_a_bert_classifier_is_patched_by_label(tiny_bert, component):
    exp = explain(
        tiny_bert,
        CLEAN,
        method="activation_patching",
        target="0",
        contrast="1",
        corrupt=CORRUPT,
        component=component,
    )
    assert exp.metric == "logit_diff" and exp.extras["contrast_tokens"] == ["LABEL_1"]
    if component == "resid":
        # Layer 0 (the embeddings): only the edited token differs between the two inputs.
        assert exp.scores[0, 1] == pytest.approx(1.0, abs=1e-3)
        assert np.abs(np.delete(exp.scores[0], 1)).max() < 1e-3
    anatomy = model_anatomy(tiny_bert)
    attn_out = anatomy.point("blocks.0.hook_attn_out").module
    assert attn_out is tiny_bert.model.bert.encoder.layer[0].attention.output.dense
    assert anatomy.head_dim == 8


# -- the result: JSON, store, renderings ----------------------------------------------------


def test_the_result_is_json_stored_and_rendered(tiny_causal, store):
    exp = explain(tiny_causal, CLEAN, method="activation_patching", target="to", corrupt=CORRUPT)
    data = json.loads(exp.to_json())
    assert data["method"] == "activation_patching" and data["component"] == "resid"
    assert data["input_tokens"] == CLEAN.split()
    assert data["layers"] == [0, 1, 2]
    assert len(data["scores"]) == 3 and all(len(r) == 6 for r in data["scores"])
    assert isinstance(data["clean_value"], float) and isinstance(data["corrupt_value"], float)
    assert data["hook_names"][0] == "blocks.0.hook_resid_pre"
    assert data["hook_names"][-1] == "blocks.1.hook_resid_post"
    exp.save(store)
    loaded = Explanation.load(store, exp.id)
    assert isinstance(loaded, PatchingExplanation)
    np.testing.assert_allclose(loaded.scores, exp.scores)
    head = explain(
        tiny_causal,
        CLEAN,
        method="activation_patching",
        target="to",
        corrupt=CORRUPT,
        component="head",
    )
    assert head.scores.shape == (2, 4) and json.loads(head.to_json())["positions"] == []
    html = explain(
        tiny_causal,
        "the <script> is in the fridge",
        method="activation_patching",
        target="to",
        corrupt="the apple is in the fridge",
    ).to_html()
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_a_wide_heatmap_numbers_its_columns_apart():
    """Over 16 layers the cells are 2-wide shades: every 5th layer is numbered, so that
    neighbouring numbers never run together ("1011121314")."""
    from rich.console import Console

    layers = list(range(24))
    exp = PatchingExplanation(
        method="activation_patching",
        category="causal",
        model="m",
        input_text="a b",
        input_tokens=["a", " b"],
        target_tokens=["c"],
        scores=np.linspace(-1, 1, 48).reshape(24, 2),
        layers=layers,
        hook_names=[f"blocks.{k}.hook_resid_pre" for k in layers],
        positions=[0, 1],
    )
    console = Console(record=True, width=120)
    exp.show(console=console)
    text = console.export_text()
    header = next(line for line in text.splitlines() if line.startswith("position"))
    assert header.split()[1:] == ["0", "5", "10", "15", "20"]
    assert "numbered every 5" in text and "  1 ␣b" in text  # whitespace shown in the labels


def test_hook_names_follow_transformer_lens(tiny_causal):
    hooks = model_anatomy(tiny_causal)
    assert hooks.names("resid") == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_post",
    ]
    assert hooks.point("blocks.1.attn_out").name == "blocks.1.hook_attn_out"  # alias
    assert hooks.point("blocks.0.attn.hook_z").groups == 4
    assert hooks.point("blocks.0.hook_mlp_out").module is tiny_causal.model.model.layers[0].mlp
    with pytest.raises(WorkbenchError, match="unknown hook name"):
        hooks.point("blocks.0.hook_q")


# -- bad input ------------------------------------------------------------------------------


def test_bad_input_is_a_one_line_error(tiny_causal, tokenizer):
    def patching(**kwargs):
        args = dict(method="activation_patching", target="to", corrupt=CORRUPT)
        return explain(tiny_causal, CLEAN, **{**args, **kwargs})

    with pytest.raises(WorkbenchError, match=r"different lengths \(6 vs 5 tokens\)"):
        patching(corrupt="the apple is in fridge")
    with pytest.raises(WorkbenchError, match="layer 3 is out of range: resid has layers 0 .. 2"):
        patching(layers=[3])
    with pytest.raises(WorkbenchError, match="layer 2 is out of range: mlp has layers 0 .. 1"):
        patching(layers="2", component="mlp")
    with pytest.raises(WorkbenchError, match="component must be one of"):
        patching(component="neuron")
    with pytest.raises(WorkbenchError, match="needs corrupt"):
        patching(corrupt=None)
    with pytest.raises(WorkbenchError, match="score the same"):
        patching(corrupt=CLEAN)
    with pytest.raises(WorkbenchError, match="noise token 6 is out of range"):
        explain(tiny_causal, CLEAN, method="causal_tracing", target="to", noise_tokens="1,6")
    with pytest.raises(WorkbenchError, match="needs noise_tokens"):
        explain(tiny_causal, CLEAN, method="causal_tracing", target="to")
    from explainers.metrics.evaluation import explanation_objective

    with pytest.raises(WorkbenchError, match="scores layers, not input tokens"):
        explanation_objective(patching(), tiny_causal)

    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer)))
    for block in model.model.layers:  # a block layout without an MLP the hooks can find
        block._modules["ffn_renamed"] = block._modules.pop("mlp")
    odd = from_pretrained_objects(model, tokenizer, name="odd")
    with pytest.raises(
        WorkbenchError, match="component 'mlp' is not available for LlamaForCausalLM"
    ):
        explain(
            odd, CLEAN, method="activation_patching", target="to", corrupt=CORRUPT, component="mlp"
        )


def test_unsupported_architectures_and_classifiers_are_one_line_errors(tokenizer, tiny_classifier):
    from explainers.causal.amnesic import amnesic_probing
    from explainers.probing.probes import ProbeDataset, ProbeExample

    class NoBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(len(tokenizer), 8)
            self.config = type("Config", (), {"is_encoder_decoder": False})()

        @property
        def base_model(self):
            return self

        def get_input_embeddings(self):
            return self.embed

    lm = from_pretrained_objects(NoBlocks(), tokenizer, name="no-blocks")
    with pytest.raises(WorkbenchError, match="cannot find the transformer blocks of NoBlocks"):
        explain(lm, CLEAN, method="activation_patching", target="to", corrupt=CORRUPT)
    data = ProbeDataset("x", [ProbeExample(f"the {w}", w) for w in ["milk", "apple"] * 4])
    with pytest.raises(WorkbenchError, match="needs a causal LM"):
        amnesic_probing(tiny_classifier, data)


# -- the command line -----------------------------------------------------------------------


def test_patch_command(capsys, tiny_model_dir, tmp_path):
    base = ["patch", "--clean", CLEAN, "--target", "to", "--model", str(tiny_model_dir)]
    db = ["--db", str(tmp_path / "w.duckdb")]
    code, out, err = run_inprocess(capsys, *base, "--corrupt", CORRUPT, "--dtype", "float32", *db)
    assert code == 0 and "blocks.0.hook_resid_pre" in out and "fridge" in out
    assert "saved as explanation" in err
    code, out, _ = run_inprocess(
        capsys,
        *base,
        "--corrupt",
        CORRUPT,
        "--format",
        "json",
        "--component",
        "head",
        "--no-save",
    )
    data = json.loads(out)
    assert code == 0 and data["component"] == "head" and len(data["scores"][0]) == 4
    code, out, _ = run_inprocess(
        capsys,
        *base,
        "--corrupt",
        CORRUPT,
        "--method",
        "attribution",
        "--compare-exact",
        "--format",
        "json",
        "--no-save",
    )
    assert code == 0 and "exact_correlation" in json.loads(out)["extras"]
    code, out, _ = run_inprocess(
        capsys, *base, "--noise-tokens", "1", "--samples", "2", "--format", "json", "--no-save"
    )
    assert code == 0 and json.loads(out)["method"] == "causal_tracing"
    out_file = tmp_path / "patch.html"
    code, _, _ = run_inprocess(
        capsys, *base, "--corrupt", CORRUPT, "--format", "html", "--out", str(out_file), "--no-save"
    )
    assert code == 0 and out_file.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--corrupt", "the apple is in fridge"], "different lengths"),
        (["--corrupt", CORRUPT, "--layers", "9"], "layer 9 is out of range"),
        (["--noise-tokens", "7"], "noise token 7 is out of range"),
        (["--corrupt", CORRUPT, "--noise-tokens", "1"], "give either --corrupt"),
        (["--corrupt", CORRUPT, "--samples", "3"], "--samples does not apply to patch --corrupt"),
        (["--corrupt", CORRUPT, "--compare-exact"], "--compare-exact does not apply to"),
    ],
)
def test_patch_command_errors(capsys, tiny_model_dir, extra, message):
    base = ["patch", "--clean", CLEAN, "--target", "to", "--model", str(tiny_model_dir)]
    code, out, err = run_inprocess(capsys, *base, *extra, "--no-save")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and not out


def test_probe_intervene_command(capsys, tiny_model_dir, tiny_classifier_dir, tmp_path):
    path = tmp_path / "d.jsonl"
    words = ["milk", "apple", "key", "box"]
    path.write_text(
        "\n".join(
            json.dumps({"text": f"the {w} is in the {v}", "label": w})
            for w in words
            for v in ("fridge", "kitchen", "box", "oven")
        )
    )
    code, out, _ = run_inprocess(
        capsys,
        "probe",
        "--dataset",
        str(path),
        "--model",
        str(tiny_model_dir),
        "--layers",
        "1,2",
        "--intervene",
        "--random-directions",
        "2",
        "--format",
        "json",
        "--no-save",
    )
    layers = json.loads(out)["params"]["intervene"]["layers"]
    assert code == 0 and [r["layer"] for r in layers] == [1, 2]
    assert {"logprob_change", "random_change", "random_std", "excess"} <= set(layers[0])
    code, out, err = run_inprocess(
        capsys,
        "probe",
        "--dataset",
        str(path),
        "--model",
        str(tiny_classifier_dir),
        "--intervene",
        "--no-save",
    )
    assert code == 1 and "--intervene needs a causal LM" in err and not out


# -- the dashboard --------------------------------------------------------------------------


def test_the_dashboard_shows_a_stored_heatmap(tiny_causal, store, monkeypatch):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    kwargs = dict(method="activation_patching", target="to", corrupt=CORRUPT)
    resid = explain(tiny_causal, "the <script> is in the fridge", **kwargs)
    resid.save(store)
    explain(tiny_causal, CLEAN, **kwargs, component="head").save(store)
    monkeypatch.setenv("WORKBENCH_DB", str(store.path))
    app = Path(__file__).parents[2] / "streamlit_app" / "app.py"
    at = AppTest.from_file(str(app), default_timeout=60)
    at.query_params["explanation"] = resid.id
    at.run()
    at.switch_page("views/patching.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.get("vega_lite_chart")
    assert any("of resid" in c.value for c in at.caption)
    shown_as_markup = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("<script>" in text for text in shown_as_markup)
    at.switch_page("views/explanations.py").run()  # the generic page sends it here
    assert not at.exception and "rows are layers" in at.info[0].value
