"""SAE features over a recorded run (the tiny model playing two level-1 games): the commands
train, list, explain a step in features and ablate, and refuse bad input with one line and
no partial writes."""

from __future__ import annotations

import json

import pytest

from agents.concepts import run_decisions
from agents.sae import dataset_texts, feature_ablation, run_texts
from explainers.sae.labels import load_labels
from explainers.sae.model import load_sae
from tests.run_cli import run_inprocess
from workbench.store import explanations

pytestmark = pytest.mark.slow  # compiles and plays games

FIT = ["--width", "64", "--k", "4", "--epochs", "4", "--batch-size", "64"]


@pytest.fixture(scope="module")
def trained(played_run, tiny_model_dir, tmp_path_factory):
    """(store, folder, training report): an SAE on layer 1 of run c's prompts."""
    from agents.sae import train_on_texts
    from explainers.sae.train import TrainConfig
    from workbench.models import load_model

    lm = load_model(str(tiny_model_dir), device="cpu", dtype="float32")
    folder = tmp_path_factory.mktemp("sae") / "l1"
    texts = run_texts(played_run, ["c"], lm)
    config = TrainConfig(width=64, k=4, epochs=4, batch_size=64)
    result = train_on_texts(lm, texts, 1, folder, config, dataset="runs c")
    return played_run, folder, result, lm


def test_training_on_a_run_saves_a_scored_and_labelled_sae(trained, tiny_causal):
    store, folder, result, _ = trained
    assert sorted(p.name for p in folder.iterdir()) == [
        "cfg.json",
        "features.json",
        "sae_weights.safetensors",
    ]
    sae, info = load_sae(folder)
    assert (sae.d_in, sae.d_sae, sae.k) == (32, 64, 4)
    assert info.layer == 1 and info.hook_name == "blocks.1.hook_resid_pre"
    assert info.report["fvu"] == result.report.fvu and 0 <= result.report.fvu < 1
    assert result.texts == len(run_decisions(store, "c", tiny_causal))
    spliced = result.spliced
    assert spliced.tokens > 0 and spliced.clean > 0 and spliced.zero > 0
    summary, table = load_labels(folder)
    assert len(table) == 64 and summary["scored_facts"] == result.scored_facts > 0
    assert all(f.fact is not None for f in table)


def test_train_features_explain_step_commands(
    trained, tiny_model_dir, tiny_causal, tmp_path, capsys
):
    store, folder, _, lm = trained
    common = ["--model", str(tiny_model_dir), "--db", str(store.path)]
    out_dir = tmp_path / "again"
    code, out, err = run_inprocess(
        capsys, "sae", "train", "--layer", "1", "--runs", "c", "--out", str(out_dir), *FIT,
        "--format", "json", *common,
    )  # fmt: skip
    assert code == 0, err
    report = json.loads(out)
    assert report["report"]["config"]["k"] == 4 and "recovered" in report["spliced"]
    assert "reading activations" in err  # progress on stderr, also when piped

    code, out, err = run_inprocess(
        capsys, "sae", "features", "--sae", str(out_dir), "--format", "json"
    )
    assert code == 0, err
    listed = json.loads(out)["features"]
    assert listed and listed[0]["auroc"] >= listed[-1]["auroc"]

    decision = run_decisions(store, "c", tiny_causal)[0]
    code, out, err = run_inprocess(
        capsys, "explain-step", "--run", "c", "--episode", decision.spec.episode_id,
        "--step", str(decision.spec.step), "--method", "sae", "--param", f"sae={out_dir}",
        "--param", "steps=8", *common,
    )  # fmt: skip
    assert code == 0, err
    stored = explanations.list_explanations(store, method="sae")
    record = explanations.get_explanation(store, stored[0]["id"])
    assert record["extras"]["sae_layer"] == 1
    assert record["extras"]["completeness_error"] < 0.05
    assert len(record["extras"]["features"]) == len(record["extras"]["ablations"]) == 10
    assert record["expected"][0] + record["delta"][0] == pytest.approx(sum(record["scores"][0]))


def test_training_on_a_jsonl_data_set(tiny_model_dir, tmp_path, capsys):
    lines = [
        {"text": "open the fridge and take the milk from the table", "facts": ["in(milk, fridge)"]}
    ] * 3 + [{"prompt": "the red apple is on the table in the kitchen " * 3}] * 20
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(x) for x in lines))
    assert dataset_texts(data)[0].facts == ["in(milk, fridge)"]
    code, out, err = run_inprocess(
        capsys, "sae", "train", "--layer", "2", "--dataset", str(data), "--out",
        str(tmp_path / "s"), *FIT, "--model", str(tiny_model_dir), "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["info"]["dataset"] == str(data.resolve())


def test_labelled_feature_ablation_against_controls(trained):
    store, folder, _, lm = trained
    sae, info = load_sae(folder)
    _, table = load_labels(folder)
    # The tiny random model has no feature a fact labels at 0.95; label the densest ones
    # by hand to run the bridge's measurement end to end.
    dense = sorted(table, key=lambda f: -f.density)[:8]
    labels = {f.feature: {"labelled": True, "fact": f.fact} for f in dense}
    result = feature_ablation(store, "c", lm, sae, info, labels, steps=2, max_decisions=6)
    assert result.flips.n + result.skipped == 6
    for row in result.decisions:
        assert row.feature in labels and row.control != row.feature
    again = feature_ablation(store, "c", lm, sae, info, labels, steps=2, max_decisions=6)
    assert [r.control for r in again.decisions] == [r.control for r in result.decisions]
    assert result.flips.low - 1e-9 <= result.flips.mean <= result.flips.high + 1e-9
    assert result.test.test == "mcnemar"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sae", "train", "--layer", "9", "--runs", "c"], "out of range"),
        (["sae", "train", "--layer", "1", "--runs", "nope"], "no play run"),
        (["sae", "train", "--layer", "1", "--runs", "c", "--max-decisions", "1"], "too few"),
        (["sae", "train", "--layer", "1", "--runs", "c", "--pool", "mean"], "pool must be"),
        (["sae", "train", "--layer", "1", "--runs", "c", "--k", "99", "--width", "64"], "k (99)"),
    ],
)
def test_bad_training_input_gets_one_line_and_writes_nothing(
    played_run, tiny_model_dir, tmp_path, capsys, args, message
):
    out_dir = tmp_path / "sae"
    code, out, err = run_inprocess(
        capsys, *args, "--out", str(out_dir), "--model", str(tiny_model_dir),
        "--db", str(played_run.path),
    )  # fmt: skip
    assert code != 0 and out == ""
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and message in lines[0], err
    assert not out_dir.exists() and not list(tmp_path.iterdir())


def test_bad_feature_and_ablation_input_gets_one_line(trained, tiny_model_dir, tmp_path, capsys):
    store, folder, _, lm = trained
    code, _, err = run_inprocess(capsys, "sae", "features", "--sae", str(folder), "--fact", "x(*")
    assert code == 1 and "no feature's best fact matches" in err
    code, _, err = run_inprocess(capsys, "sae", "features", "--sae", str(tmp_path))
    assert code == 1 and "no features.json" in err
    code, _, err = run_inprocess(
        capsys, "sae", "ablate", "--sae", str(folder), "--run", "c",
        "--model", str(tiny_model_dir), "--db", str(store.path),
    )  # fmt: skip
    assert code == 1 and "no labelled feature" in err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    code, _, err = run_inprocess(
        capsys, "sae", "train", "--layer", "1", "--runs", "c", "--out", str(tmp_path / "taken"),
        "--model", str(tiny_model_dir), "--db", str(store.path),
    )  # fmt: skip
    assert code == 1 and "not an empty folder" in err


def test_training_on_two_ranks_gives_what_one_process_gives(
    played_run, tiny_model_dir, tmp_path, capsys
):
    from tests.gpu.launch import torchrun

    args = ["sae", "train", "--layer", "1", "--runs", "c", *FIT, "--model", str(tiny_model_dir)]
    args += [
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--db",
        str(played_run.path),
        "--format",
        "json",
    ]
    code, out, err = run_inprocess(capsys, *args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    one = json.loads(out)
    two = torchrun(*args, "--out", str(tmp_path / "two"), env={"CUDA_VISIBLE_DEVICES": ""})
    assert two.returncode == 0, two.stderr
    got = json.loads(two.stdout)  # rank 0 alone prints and saves
    assert got["rows"] == one["rows"] and got["texts"] == one["texts"]
    assert got["report"]["fvu"] == pytest.approx(one["report"]["fvu"], rel=0.05)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


def test_label_relabels_an_sae_on_a_run_with_another_pool(
    trained, tiny_model_dir, tmp_path, capsys
):
    import shutil

    store, folder, _, _ = trained
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    common = ["--model", str(tiny_model_dir), "--db", str(store.path)]
    code, out, err = run_inprocess(
        capsys, "sae", "label", "--sae", str(copy), "--runs", "c", "--pool", "last",
        "--format", "json", *common,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    summary, table = load_labels(copy)
    assert result["pool"] == summary["pool"] == "last"
    assert summary["scored_facts"] == result["scored_facts"] > 0 and len(table) == 64
    code, _, err = run_inprocess(
        capsys, "sae", "label", "--sae", str(tmp_path), "--runs", "c", *common
    )
    assert code == 1 and "no cfg.json" in err
