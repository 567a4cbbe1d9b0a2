"""`workbench evaluate` and `workbench compare` as a user runs them (tiny model via --model DIR)."""

from __future__ import annotations

import json

import pytest

from tests.run_cli import run_inprocess as run

pytestmark = pytest.mark.usefixtures("single_thread")

TEXT = "the milk is in the fridge Q"


def test_evaluate_text_json_is_one_object_keyed_by_metric(tiny_model_dir, tmp_path, capsys):
    from explainers import Explanation
    from explainers.metrics import FAITHFULNESS, PLAUSIBILITY, evaluate
    from workbench.models import load_model
    from workbench.store import Store
    from workbench.store.metrics import get_metrics

    db = tmp_path / "wb.duckdb"
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--method",
        "occlusion",
        "--text",
        TEXT,
        "--target",
        "milk open",
        "--rationale",
        "0,1,0,0,0,0,0",
        "--format",
        "json",
        "--db",
        str(db),
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "occlusion" and data["target_tokens"] == ["milk", "open"]
    # The numbers are the library's on the stored explanation and the model loaded as the
    # command loads it, each the mean of its two target rows; the store holds the same means.
    stored = Explanation.load(Store(db), data["explanation_id"])
    lm = load_model(str(tiny_model_dir))
    expected = evaluate(stored, lm, rationale=[0, 1, 0, 0, 0, 0, 0])
    saved = {r["name"]: r["value"] for r in get_metrics(Store(db), stored.id, include_rows=False)}
    for name in (*FAITHFULNESS, *PLAUSIBILITY):
        assert data[name] == pytest.approx(expected.metrics[name], abs=1e-6), name
        assert saved[name] == pytest.approx(data[name], abs=1e-6), name
        rows = [row[name] for row in data["rows"]]
        assert data[name] == pytest.approx(sum(rows) / 2, abs=1e-6), name
    # Occlusion is leave-one-out: its ranking agrees with it exactly.
    assert data["kendall_tau_loo"] == pytest.approx(1.0)
    assert data["params"]["convention"] == "eraser"
    for row, curve in zip(data["rows"], data["curves"]):
        assert row["comprehensiveness"] == pytest.approx(
            sum(curve["comprehensiveness_bins"]) / 5, abs=1e-6
        )
        assert curve["deletion"]["values"][0] == pytest.approx(curve["full"])
    # The explanation and its metrics went to the store; evaluate it again by id.
    exp_id = data["explanation_id"]
    code, out, err = run(
        capsys,
        "evaluate",
        "--explanation",
        exp_id,
        "--model",
        str(tiny_model_dir),
        "--format",
        "json",
        "--db",
        str(db),
    )
    assert code == 0, err
    assert json.loads(out)["comprehensiveness"] == pytest.approx(data["comprehensiveness"])


def test_evaluate_table_and_dataset_mode(tiny_model_dir, tmp_path, capsys):
    dataset = tmp_path / "inputs.jsonl"
    dataset.write_text(
        json.dumps({"text": TEXT, "target": "milk", "rationale": [0, 1, 0, 0, 0, 0, 0]})
        + "\n\n"
        + json.dumps({"text": "the apple is on the table Q", "target": "apple"})
        + "\n"
    )
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(dataset),
        "--method",
        "ig,occlusion",
        "--format",
        "json",
    )
    assert code == 0, err
    summary = {row["method"]: row for row in json.loads(out)["methods"]}
    assert set(summary) == {"ig", "occlusion", "random"}
    assert summary["ig"]["n"] == 2 and "token_f1" in summary["ig"]
    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--no-save",
        "--method",
        "saliency",
        "--text",
        TEXT,
        "--target",
        "milk",
    )
    assert code == 0, err
    assert "comprehensiveness" in out and "saliency" in out


def test_compare_prints_methods_side_by_side_and_writes_a_plot(tiny_model_dir, tmp_path, capsys):
    plot = tmp_path / "curves.png"
    code, out, err = run(
        capsys,
        "compare",
        "--model",
        str(tiny_model_dir),
        "--methods",
        "ig,occlusion,lime",
        "--param",
        "lime.n_samples=40",
        "--text",
        TEXT,
        "--target",
        "milk",
        "--plot",
        str(plot),
        "--format",
        "json",
    )
    assert code == 0, err
    methods = json.loads(out)["methods"]
    assert list(methods) == ["ig", "occlusion", "lime", "random"]
    assert methods["lime"]["params"]["model_calls"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run(
        capsys,
        "compare",
        "--model",
        str(tiny_model_dir),
        "--methods",
        "occlusion,saliency",
        "--text",
        TEXT,
        "--target",
        "milk",
    )
    assert code == 0 and "occlusion" in out and "random" in out


def test_compare_with_db_stores_every_method_and_the_random_baseline(
    tiny_model_dir, tmp_path, capsys
):
    from workbench.store import Store, dashboard

    db = tmp_path / "wb.duckdb"
    code, out, err = run(
        capsys,
        "compare",
        "--model",
        str(tiny_model_dir),
        "--methods",
        "occlusion,saliency",
        "--text",
        TEXT,
        "--target",
        "milk",
        "--format",
        "json",
        "--db",
        str(db),
        "--run-name",
        "milk",
    )
    assert code == 0, err
    printed = json.loads(out)["methods"]
    store = Store(db, read_only=True)
    (saved,) = dashboard.comparison_runs(store)
    assert saved["name"] == "milk"
    assert saved["params"]["methods"] == ["occlusion", "saliency", "random"]
    stored = dashboard.comparison_detail(store, saved["id"])
    assert [s["explanation"]["method"] for s in stored] == ["occlusion", "saliency", "random"]
    for entry in stored:
        method = entry["explanation"]["method"]
        assert printed[method]["explanation_id"] == entry["explanation"]["id"]
        assert entry["metrics"]["comprehensiveness"] == pytest.approx(
            printed[method]["comprehensiveness"], abs=1e-9
        )
    reference = dashboard.random_reference(store, stored[0]["explanation"]["id"])
    assert reference["explanation_id"] == stored[2]["explanation"]["id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["evaluate", "--method", "ig"], "give one of --explanation ID, --text TEXT"),
        (["evaluate", "--text", TEXT, "--dataset", "x.jsonl"], "not --text and --dataset"),
        (["evaluate", "--text", TEXT, "--method", "nope"], "unknown method 'nope'; known methods:"),
        (
            ["evaluate", "--text", TEXT, "--target", "milk", "--rationale", "0,1"],
            "the rationale has 2 values but the input has 7 tokens",
        ),
        (["evaluate", "--text", TEXT, "--rationale", "0,2,1"], "only 0 and 1"),
        (["evaluate", "--text", TEXT, "--removal", "drop"], "'drop' is not one of 'delete'"),
        (["evaluate", "--dataset", "missing.jsonl"], "no dataset file"),
        (["evaluate", "--explanation", "nope"], "no explanation with id 'nope'"),
        (["evaluate", "--text", TEXT, "--param", "steps"], "--param takes KEY=VALUE"),
        (["compare", "--methods", "ig,attention", "--text", TEXT], "attention method"),
        (["compare", "--methods", ",", "--text", TEXT], "methods is empty"),
        (["compare", "--text", TEXT, "--plot", "curves.pdf"], "name the file *.png"),
        (
            ["compare", "--methods", "ig,lime", "--text", TEXT, "--param", "lime.nope=1"],
            "lime takes no parameter 'nope'",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(tiny_model_dir, tmp_path, capsys, args, message):
    stores = args[0] == "evaluate" and "--dataset" not in args
    code, out, err = run(
        capsys,
        *args,
        "--model",
        str(tiny_model_dir),
        # evaluate --dataset stores nothing, so it refuses --db.
        *(["--db", str(tmp_path / "wb.duckdb")] if stores else []),
    )
    assert code == (2 if "--removal" in args else 1)  # 2: a usage error, caught by Typer
    assert message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_dataset_lines_name_the_line(tiny_model_dir, tmp_path, capsys):
    dataset = tmp_path / "bad.jsonl"
    dataset.write_text(json.dumps({"text": TEXT}) + "\n" + json.dumps({"txt": "x"}) + "\n")
    code, _, err = run(
        capsys, "evaluate", "--dataset", str(dataset), "--model", str(tiny_model_dir)
    )
    assert code == 1 and f"{dataset}:2:" in err


def test_evaluate_convention_ferret_gives_the_librarys_ferret_values(tiny_model_dir, capsys):
    from explainers import explain
    from explainers.metrics import evaluate
    from workbench.models import load_model

    code, out, err = run(
        capsys,
        "evaluate",
        "--model",
        str(tiny_model_dir),
        "--method",
        "occlusion",
        "--text",
        TEXT,
        "--target",
        "milk",
        "--convention",
        "ferret",
        "--format",
        "json",
        "--no-save",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["params"]["convention"] == "ferret"
    lm = load_model(str(tiny_model_dir))
    exp = explain(lm, TEXT, target="milk", method="occlusion")
    ferret = evaluate(exp, lm, convention="ferret")
    eraser = evaluate(exp, lm, convention="eraser")
    assert data["comprehensiveness"] == pytest.approx(ferret.metrics["comprehensiveness"])
    assert ferret.metrics["comprehensiveness"] != pytest.approx(eraser.metrics["comprehensiveness"])


def test_gpus_without_a_dataset_is_one_line(capsys):
    code, _, err = run(capsys, "evaluate", "--method", "occlusion", "--text", TEXT, "--gpus", "2")
    assert code == 1 and err.strip().splitlines() == [
        "error: --gpus does not apply to evaluate --text (--gpus splits a --dataset over GPUs)"
    ]
