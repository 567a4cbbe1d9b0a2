"""Attention methods: rollout and flow against hand-worked matrices, value norms, the four
methods on a tiny model, their renderings, and `workbench explain` with them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.attention.flow import attention_flow
from explainers.attention.rollout import attention_rollout
from explainers.attention.value_norm import value_norm_maps
from tests.run_cli import run_inprocess
from workbench.errors import WorkbenchError

TEXT = "the milk is in the fridge to get the milk open the"
# Two layers of one head over two tokens: token 1 splits its attention evenly.
HALF = np.array([[[1.0, 0.0], [0.5, 0.5]], [[1.0, 0.0], [0.5, 0.5]]])


def test_rollout_multiplies_layers_by_hand():
    # No residual: A2 A1, row 1 = 0.5 * [1, 0] + 0.5 * [0.5, 0.5] = [0.75, 0.25].
    np.testing.assert_allclose(attention_rollout(HALF, residual=0.0)[-1], [[1, 0], [0.75, 0.25]])
    # With the residual: A' = 0.5 A + 0.5 I = [[1, 0], [0.25, 0.75]];
    # (A')^2 row 1 = 0.25 * [1, 0] + 0.75 * [0.25, 0.75] = [0.4375, 0.5625].
    rollout = attention_rollout(HALF, residual=0.5)
    np.testing.assert_allclose(rollout[0], [[1, 0], [0.25, 0.75]])
    np.testing.assert_allclose(rollout[-1], [[1, 0], [0.4375, 0.5625]])


def test_rollout_averages_heads_and_renormalises_rows():
    # Two heads [L=1, H=2]: their mean is [[1, 0], [0.5, 0.5]]; rows of the result sum to 1.
    heads = np.array([[[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]]])
    np.testing.assert_allclose(attention_rollout(heads, residual=0.0)[0], [[1, 0], [0.5, 0.5]])
    unnormalised = np.array([[[2.0, 0.0], [1.0, 3.0]]])
    np.testing.assert_allclose(attention_rollout(unnormalised, 0.0)[0], [[1, 0], [0.25, 0.75]])


def test_flow_is_max_flow_not_product_by_hand():
    # Output token 1 reaches input 0 by two routes of capacity 0.5 each: flow 1.0, while
    # rollout multiplies to 0.75. To input 1 only the route through (1, 1) leads: 0.5.
    flow = attention_flow(HALF, residual=0.0)
    np.testing.assert_allclose(flow, [[1.0, 0.0], [1.0, 0.5]], atol=1e-6)
    # One layer: the flow is the (mixed) attention itself.
    one = attention_flow(HALF[:1], residual=0.5)
    np.testing.assert_allclose(one, [[1.0, 0.0], [0.25, 0.75]], atol=1e-6)


def test_flow_is_bounded_by_the_narrowest_layer():
    # Three tokens. Output 2 reaches input 0 through (1, 1), capped by min(0.9, 0.2), and
    # through (1, 2), capped by min(0.1, 0.1): flow 0.3 (rollout would say 0.9*0.2 + 0.1*0.1).
    layer1 = np.array([[1.0, 0, 0], [0.2, 0.8, 0], [0.1, 0.0, 0.9]])
    layer2 = np.array([[1.0, 0, 0], [0.0, 1.0, 0], [0.0, 0.9, 0.1]])
    flow = attention_flow(np.stack([layer1, layer2]), residual=0.0, rows=[2])
    np.testing.assert_allclose(flow[0], [0.3, 0.8, 0.1], atol=1e-6)


def test_value_norms_add_head_vectors_before_the_norm():
    # Two heads attend fully to token 0 with opposite value vectors: each head moves a unit
    # vector (norm 1), but together they cancel, so the layer-level norm is 0.
    alpha = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]])[None]
    f = torch.tensor([[[1.0, 0.0], [0.0, 3.0]], [[-1.0, 0.0], [0.0, 3.0]]])
    heads, layers = value_norm_maps(alpha, [f])
    np.testing.assert_allclose(heads[0, :, :, 0], [[1, 1], [1, 1]])
    np.testing.assert_allclose(layers[0], [[0, 0], [0, 0]], atol=1e-6)


@pytest.mark.parametrize("method", ["attention", "rollout", "flow", "attn_norm"])
def test_methods_explain_the_last_position_with_maps_in_extras(tiny_causal, method):
    implementation = tiny_causal.model.config._attn_implementation
    exp = explain(tiny_causal, TEXT, method=method, target="door")
    n = len(exp.input_tokens)
    assert exp.category == "attention"
    assert exp.scores.shape == (1, n)
    assert exp.extras["rows"] == [n - 1]
    final = np.asarray(exp.extras["map"])
    assert final.shape == (n, n)
    np.testing.assert_allclose(exp.scores[0], final[n - 1], atol=1e-5)
    assert np.allclose(np.triu(final, 1), 0), "a causal model never looks ahead"
    if method in ("attention", "rollout"):
        np.testing.assert_allclose(final.sum(1), 1.0, atol=1e-4)
    if method in ("attention", "attn_norm"):
        assert np.asarray(exp.extras["heads"]).shape == (2, 4, n, n)
    # the model is back on its own attention implementation afterwards
    assert tiny_causal.model.config._attn_implementation == implementation


def test_raw_attention_picks_layer_and_head(tiny_causal):
    exp = explain(tiny_causal, TEXT, method="attention", target="door", layer=0, head=2)
    heads = np.asarray(exp.extras["heads"])
    np.testing.assert_allclose(exp.scores[0], heads[0, 2, -1], atol=1e-5)
    assert exp.params == {"layer": 0, "head": 2}


def test_multi_token_target_rows_follow_teacher_forcing(tiny_causal):
    exp = explain(tiny_causal, TEXT, method="rollout", target="door open")
    n = len(exp.input_tokens)
    assert exp.extras["rows"] == [n - 1, n]
    assert exp.extras["tokens"][n] == "door"
    assert exp.scores.shape == (2, n)


def test_layer_and_head_out_of_range(tiny_causal):
    with pytest.raises(WorkbenchError, match="layer 5 is out of range: the model has 2 layers"):
        explain(tiny_causal, TEXT, method="attention", layer=5)
    with pytest.raises(WorkbenchError, match="head 4 is out of range"):
        explain(tiny_causal, TEXT, method="attn_norm", head=4)


def test_model_that_cannot_return_attention_says_which_option(tiny_causal, monkeypatch):
    model = tiny_causal.model
    monkeypatch.setattr(model.config, "_attn_implementation_internal", "flash_attention_2")

    def refuse(name: str) -> None:
        raise ValueError("not supported")

    monkeypatch.setattr(model, "set_attn_implementation", refuse)
    with pytest.raises(WorkbenchError, match="attn_implementation='eager'"):
        explain(tiny_causal, TEXT, method="rollout", target="door")


def test_terminal_shows_head_view_and_grid(tiny_causal):
    from rich.console import Console

    exp = explain(tiny_causal, TEXT, method="attention", target="door", layer=1)
    console = Console(record=True, width=200)
    exp.show(console=console)
    text = console.export_text()
    assert "head view, layer 1" in text
    assert "layer-by-head grid" in text
    assert "head  3" in text


def test_html_has_head_view_grid_and_escaped_tokens(tiny_causal):
    exp = explain(tiny_causal, "the <script> is in the", method="attention", target="door")
    page = exp.to_html()
    assert "head view, layer 1" in page and "layer-by-head grid" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    rollout = explain(tiny_causal, "the <script> is in the", method="rollout").to_html()
    assert "by layer" in rollout and "token-to-token map" in rollout


def test_cli_explain_rollout_json(capsys, tiny_model_dir):
    code, out, err = run_inprocess(
        capsys, "explain", "--method", "rollout", "--text", TEXT, "--target", "door",
        "--model", str(tiny_model_dir), "--format", "json", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert record["category"] == "attention"
    assert len(record["extras"]["map"]) == len(record["input_tokens"])


def test_cli_explain_bad_layer_is_one_line(capsys, tiny_model_dir):
    code, out, err = run_inprocess(
        capsys, "explain", "--method", "attn_norm", "--text", TEXT, "--param", "layer=9",
        "--model", str(tiny_model_dir), "--no-save",
    )  # fmt: skip
    assert code == 1
    assert err.strip().startswith("error: layer 9 is out of range")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
