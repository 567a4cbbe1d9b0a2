"""Probing: the logit lens against the model's own output, probes on a feature planted in a
tiny trained model, the game-state datasets, the store, and `workbench probe`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from explainers import explain
from explainers.probing.features import extract_features
from explainers.probing.probes import ProbeDataset, control_labels, run_probe
from tests.conftest import tiny_llama_config, tiny_tokenizer
from tests.run_cli import run_inprocess
from workbench.errors import WorkbenchError

TEXT = "the milk is in the fridge to get the milk open the"
FILLER = "the milk is in fridge to get open a an on table take from kitchen door red blue".split()


# -- logit lens ------------------------------------------------------------------------


def test_logit_lens_last_layer_is_the_models_prediction(tiny_causal):
    exp = explain(tiny_causal, TEXT, method="logit_lens", top_k=3)
    ids = tiny_causal.tokenizer(TEXT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(tiny_causal.model(ids).logits[0].float(), -1)
    predicted = tiny_causal.tokenizer.decode([int(probs[-1].argmax())])
    assert exp.extras["layers"] == [0, 1, 2]
    top_last = exp.extras["top"][-1][-1]
    assert top_last[0][0] == predicted == exp.target_tokens[0]
    assert top_last[0][1] == pytest.approx(float(probs[-1].max()), abs=1e-4)
    assert exp.extras["target_rank"][0][-1][-1] == 0
    # scores: the final layer's probability of the target at every prompt position
    target_id = tiny_causal.tokenizer.convert_tokens_to_ids(predicted)
    np.testing.assert_allclose(exp.scores[0], probs[:, target_id].numpy(), atol=1e-4)


def test_logit_lens_ranks_a_given_target(tiny_causal):
    exp = explain(tiny_causal, TEXT, method="logit_lens", target="door open")
    ranks = np.asarray(exp.extras["target_rank"])
    assert ranks.shape == (2, 3, len(exp.extras["tokens"]))
    logits = tiny_causal.model(tiny_causal.tokenizer(TEXT, return_tensors="pt")["input_ids"]).logits
    door = tiny_causal.tokenizer.convert_tokens_to_ids("door")
    expected_rank = int((logits[0, -1] > logits[0, -1, door]).sum())
    assert ranks[0, -1, exp.extras["rows"][0]] == expected_rank


def test_logit_lens_rejects_layers_out_of_range(tiny_causal):
    with pytest.raises(WorkbenchError, match="layer 7 is out of range"):
        explain(tiny_causal, TEXT, method="logit_lens", layers=[0, 7])


def test_logit_lens_renders_a_layer_by_position_table(tiny_causal):
    from rich.console import Console

    exp = explain(tiny_causal, TEXT, method="logit_lens")
    console = Console(record=True, width=250)
    exp.show(console=console)
    assert "logit lens: top next token per layer and position" in console.export_text()
    assert "logit lens" in exp.to_html()


def test_logit_lens_table_fits_80_columns_and_shows_what_it_leaves_out(tiny_causal):
    from rich.console import Console

    exp = explain(tiny_causal, TEXT, method="logit_lens")
    last_layer = len(exp.extras["layers"]) - 1
    exp.extras["top"][last_layer][-1][0] = [" \n", 0.123456]  # a whitespace token on top
    console = Console(record=True, width=80)
    exp.show(console=console)
    text = console.export_text()
    n = len(exp.extras["tokens"])
    shown = [line for line in text.splitlines() if "logit lens: top next token" in line][0]
    assert "left out" in shown and f"of {n}" in shown
    assert "␣↵" in text and "12%" in text  # whitespace visible; the probability readable
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.…" not in text and "0…" not in text


# -- probes on a planted feature -------------------------------------------------------


@pytest.fixture(scope="module")
def planted():
    """A tiny LM trained so that its last position knows whether "apple" occurred earlier.

    It must predict "M" after a sequence with "apple" and "Q" after one without; the last
    token is a filler word either way, so only layers after attention can carry the fact.
    """
    from transformers import LlamaForCausalLM

    from workbench.models import from_pretrained_objects

    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    texts, labels = [], []
    for _ in range(400):
        words = [rng.choice(FILLER) for _ in range(6)]
        has_apple = rng.random() < 0.5
        if has_apple:
            words[rng.randrange(5)] = "apple"
        texts.append(" ".join(words))
        labels.append("yes" if has_apple else "no")
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), num_hidden_layers=2))
    ids = torch.tensor([tokenizer(t)["input_ids"] for t in texts])
    answer = torch.tensor(
        [tokenizer.convert_tokens_to_ids("M" if y == "yes" else "Q") for y in labels]
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        logits = model(ids).logits[:, -1]
        loss = torch.nn.functional.cross_entropy(logits, answer)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    lm = from_pretrained_objects(model, tokenizer, name="planted")
    # each input is its own type: the control task's labels are then pure noise
    records = [{"text": t, "label": y, "type": t} for t, y in zip(texts, labels)]
    return lm, ProbeDataset.from_records("planted:apple", records)


def test_probe_finds_the_planted_feature_where_it_is_carried(planted):
    lm, data = planted
    seen = []
    result = run_probe(lm, data, layers=[0, 2], seed=0, progress=lambda *a: seen.append(a))
    n = len(data.examples)
    assert seen[-1] == (n + 2, n + 2) and seen[-2] == (n + 1, n + 2)  # examples, then layers
    by_layer = {r.layer: r for r in result.layers}
    assert result.split == "random" and by_layer[2].n_test == 100
    # layer 0 at the last position is the filler word's embedding: chance
    assert by_layer[0].accuracy < 0.7
    # after the blocks the last position carries "apple occurred"
    assert by_layer[2].accuracy >= 0.9
    for r in result.layers:
        assert 0.3 <= r.control_accuracy <= 0.7, "random labels per type are unlearnable"
    assert by_layer[2].selectivity >= 0.25
    assert result.best.layer == 2


def test_probe_table_flags_negative_selectivity_and_says_which_way_is_better():
    from rich.console import Console

    from explainers.probing.probes import LayerProbe, ProbeResult
    from explainers.probing.render import probe_warning, render_probe_terminal

    layers = [
        LayerProbe(0, 0.55, 0.70, -0.15, 0.5, 30, 10),
        LayerProbe(4, 0.90, 0.50, 0.40, 0.5, 30, 10),
        LayerProbe(8, 0.60, 0.62, -0.02, 0.5, 30, 10),
    ]
    result = ProbeResult("jsonl:x", "tiny", layers, ["no", "yes"], 40, "random")
    console = Console(record=True, width=200)
    render_probe_terminal(result, console)
    text = console.export_text()
    for header in (
        "accuracy (higher is better)",
        "control (lower is better)",
        "selectivity (higher is better)",
    ):
        assert header in text
    assert "-0.150 (negative)" in text and "+0.400 (negative)" not in text
    assert "warning: selectivity is negative at layers 0, 8: the probe fits the control" in text
    assert probe_warning(ProbeResult("t", "m", layers[1:2], ["a", "b"], 40, "random")) is None


def test_control_labels_are_fixed_per_type_and_follow_the_label_distribution():
    types = ["knife", "apple", "knife", "fridge", "apple", "knife"] * 50
    labels = ["yes", "no", "no", "no", "yes", "no"] * 50
    control = control_labels(types, labels, seed=3)
    for t in set(types):
        assert len({c for c, u in zip(control, types) if u == t}) == 1
    assert set(control) <= {"yes", "no"}
    many = control_labels([str(i) for i in range(2000)], ["yes"] * 500 + ["no"] * 1500)
    assert 0.2 <= many.count("yes") / 2000 <= 0.3


def test_shared_prefix_batches_match_plain_batches(tiny_causal):
    prefix = " ".join(["the milk is in the fridge"] * 8)
    records = [
        {"text": f"{prefix} {w}", "label": str(i % 2)}
        for i, w in enumerate(["apple", "knife", "key", "box", "oven", "door", "table", "red"])
    ]
    data = ProbeDataset.from_records("t", records)
    shared, read = extract_features(tiny_causal, data.examples, [0, 2], batch_size=4)
    plain, _ = extract_features(tiny_causal, data.examples, [0, 2], batch_size=1)
    assert read[0] == "apple"
    np.testing.assert_allclose(shared, plain, atol=1e-4)


def test_dataset_errors_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a b", "label": "x"}\n{"text": "c d"}\n')
    with pytest.raises(WorkbenchError, match="bad.jsonl line 2: no 'label'"):
        ProbeDataset.from_jsonl(path)
    path.write_text("\n".join(json.dumps({"text": f"t {i}", "label": "x"}) for i in range(10)))
    with pytest.raises(WorkbenchError, match="only one label"):
        ProbeDataset.from_jsonl(path)


# -- the CLI ---------------------------------------------------------------------------


@pytest.fixture
def jsonl(tmp_path):
    rng = random.Random(1)
    lines = []
    for i in range(40):
        words = [rng.choice(FILLER) for _ in range(5)]
        label = "yes" if "milk" in words else "no"
        lines.append(json.dumps({"text": " ".join(words), "label": label, "group": f"g{i % 5}"}))
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_probe_json_plot_and_store(capsys, tmp_path, jsonl, tiny_model_dir):
    from workbench.store import Store
    from workbench.store.probes import get_probe, list_probes

    db, plot = tmp_path / "w.duckdb", tmp_path / "acc.png"
    code, out, err = run_inprocess(
        capsys, "probe", "--dataset", str(jsonl), "--model", str(tiny_model_dir),
        "--layers", "0-2", "--format", "json", "--plot", str(plot), "--db", str(db),
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert [r["layer"] for r in result["layers"]] == [0, 1, 2]
    for r in result["layers"]:
        assert r["selectivity"] == pytest.approx(r["accuracy"] - r["control_accuracy"])
    assert result["split"] == "group"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = get_probe(Store(db), result["id"])
    assert [r["accuracy"] for r in stored["layers"]] == [r["accuracy"] for r in result["layers"]]
    assert list_probes(Store(db))[0]["task"] == "jsonl:data.jsonl"


def test_cli_probe_terminal_table(capsys, jsonl, tiny_model_dir):
    code, out, err = run_inprocess(
        capsys, "probe", "--dataset", str(jsonl), "--model", str(tiny_model_dir),
        "--layers", "1", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert "selectivity" in out and "majority label" in out and "data.jsonl" in out


def test_cli_probe_flags_a_negative_selectivity(capsys, jsonl, tiny_model_dir, monkeypatch):
    """The CLI prints the library's table: a negative selectivity is flagged and warned of."""
    import explainers.probing.probes as probes
    from explainers.probing.probes import LayerProbe, ProbeResult

    def negative_at_layer_1(lm, dataset, layers, **kwargs):
        layer_results = [
            LayerProbe(0, 0.8, 0.5, 0.3, 0.5, 30, 10),
            LayerProbe(1, 0.55, 0.7, -0.15, 0.5, 30, 10),
        ]
        return ProbeResult(dataset.task, lm.name, layer_results, ["no", "yes"], 40, "group")

    monkeypatch.setattr(probes, "run_probe", negative_at_layer_1)
    code, out, err = run_inprocess(
        capsys, "probe", "--dataset", str(jsonl), "--model", str(tiny_model_dir),
        "--layers", "0,1", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert "-0.150" in out and out.count("(negative)") == 1  # one flag, on layer 1's row
    words = " ".join(out.split())  # the table and the warning wrap at the terminal's width
    assert "warning: selectivity is negative at layer 1: the probe fits the control" in words


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "textworld-state:weather", "--games", "."], "unknown probing task"),
        (["--task", "textworld-state:carried"], "needs --games DIR"),
        (["--layers", "0,9"], "layer 9 is out of range"),
        (["--layers", "zero"], "layers takes"),
    ],
)
def test_cli_probe_bad_input_is_one_line(capsys, jsonl, tiny_model_dir, args, message):
    if "--task" not in args:
        args = ["--dataset", str(jsonl), *args]
    code, out, err = run_inprocess(
        capsys, "probe", *args, "--model", str(tiny_model_dir), "--no-save"
    )
    assert code == 1
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_probe_dataset_line_without_label(capsys, tmp_path, tiny_model_dir):
    path = tmp_path / "nolabel.jsonl"
    path.write_text('{"text": "the milk", "label": "a"}\n{"text": "the fridge"}\n')
    code, _, err = run_inprocess(capsys, "probe", "--dataset", str(path), "--no-save")
    assert code == 1
    assert err.strip() == "error: nolabel.jsonl line 2: no 'label'"


# -- game state on the default model ----------------------------------------------------


@pytest.fixture(scope="module")
def game_dir(tmp_path_factory):
    import games

    out = tmp_path_factory.mktemp("games") / "l4"
    games.make(level=4, count=2, seed=11, split="train", out=out)
    return out


def test_state_records_label_what_textworld_says(game_dir):
    from games.probing_data import state_records

    records = state_records(game_dir, "textworld-state:open", random_episodes=1, max_steps=3)
    assert {r["label"] for r in records} == {"yes", "no"}
    assert len({r["group"] for r in records}) == 2
    opened = [r for r in records if r["label"] == "yes"]
    # the agent's text is followed by a question about the entity, never the answer
    assert all(r["text"].endswith(f"> examine {r['type'].split(':', 1)[1]}") for r in records)
    assert all(r["type"].startswith(f"{r['group']}:") for r in records)
    assert any("open" in r["text"].split("\n\n> examine")[0] for r in opened)
    with pytest.raises(WorkbenchError, match="unknown probing task"):
        state_records(game_dir, "textworld-state:colour")


@pytest.mark.slow
def test_textworld_state_probe_runs_on_the_default_model(game_dir, store):
    from games.probing_data import state_records
    from workbench.models import load_model
    from workbench.store.probes import get_probe

    lm = load_model(progress=False)
    records = state_records(game_dir, "room", random_episodes=0, history=0, commands=False)
    data = ProbeDataset.from_records("textworld-state:room", records)
    result = run_probe(lm, data, layers=[0, 8, 16], batch_size=32)
    assert result.split == "group"
    assert [r.layer for r in result.layers] == [0, 8, 16]
    assert all(0.0 <= r.accuracy <= 1.0 for r in result.layers)
    result.save(store)
    assert len(get_probe(store, result.id)["layers"]) == 3
