"""Declarative parameter checks (explainers/params.py), the registry and the Explanation's
category dispatch: everything here runs without a model."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from explainers.explainer import Explainer
from explainers.explanation import Explanation
from explainers.params import Bool, Choice, Float, Int, IntList, apply_checks, parse_int_list
from explainers.registry import get_method, known_methods, register, validate_params
from workbench.errors import WorkbenchError

EXPLAINERS = Path(__file__).resolve().parents[2] / "explainers"


@pytest.mark.parametrize(
    ("check", "good", "normalised", "bad", "message"),
    [
        (Int(min=1), "32", 32, 0, "steps must be >= 1, not 0"),
        (Int(min=1), 4, 4, "many", "steps must be an integer >= 1, not 'many'"),
        (Int(min=None), "-3", -3, 1.5, "steps must be an integer, not 1.5"),
        (Int(optional=True), None, None, True, "steps must be an integer >= 1, not True"),
        (Float(0.0, 1.0), "0.5", 0.5, 2, "steps must be between 0.0 and 1.0, not 2.0"),
        (Float(low=0.0), 3, 3.0, "x", "steps must be a number, not 'x'"),
        (Choice("l1", "l2"), "l2", "l2", "l3", "steps must be l1 or l2, not 'l3'"),
        (Choice("a", "b", "c"), "c", "c", "d", "steps must be one of a, b, c, not 'd'"),
        (Bool(), "yes", True, "maybe", "steps must be true or false, not 'maybe'"),
        (Bool(), "false", False, 2, "steps must be true or false, not 2"),
        (IntList(), "0,2,5-7", [0, 2, 5, 6, 7], "first", "steps takes 'all', numbers and"),
        (IntList(), "-3--1", [-3, -2, -1], [1, "x"], "steps must be an integer, not 'x'"),
    ],
)
def test_each_kind_of_check_normalises_and_refuses_in_one_line_naming_the_parameter(
    check, good, normalised, bad, message
):
    assert check("steps", good) == normalised
    with pytest.raises(WorkbenchError) as info:
        check("steps", bad)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_int_lists_accept_all_one_integer_and_lists():
    assert parse_int_list("layers", "all") is None
    assert parse_int_list("layers", None) is None
    assert parse_int_list("layers", 3) == [3]
    assert parse_int_list("layers", ["1", 2]) == [1, 2]
    assert parse_int_list("layers", "-1") == [-1]


def test_a_table_checks_only_the_parameters_given():
    checks = {"steps": Int(), "norm": Choice("l1", "l2")}
    assert apply_checks(checks, {"steps": "8", "other": "kept"}) == {"steps": 8, "other": "kept"}


def test_a_subclass_table_adds_to_its_base_classes_table():
    class Base(Explainer):
        name = "base_for_test"
        category = "attribution"
        param_checks = {"steps": Int(), "norm": Choice("l1", "l2")}

        def explain_objective(self, obj, steps=1, norm="l1", alpha=0.0):
            raise NotImplementedError

    class Child(Base):
        param_checks = {"alpha": Float(low=0.0), "steps": Int(min=2)}

    checked = Child().check_params({"steps": "2", "norm": "l2", "alpha": "0.5"})
    assert checked == {"steps": 2, "norm": "l2", "alpha": 0.5}
    with pytest.raises(WorkbenchError, match="steps must be >= 2, not 1"):
        Child().check_params({"steps": 1})  # the subclass's entry wins
    with pytest.raises(WorkbenchError, match="norm must be l1 or l2"):
        Child().check_params({"norm": "l3"})


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("ig", {"steps": 0}, "steps must be 'auto' or an integer >= 1, not 0"),
        ("lime", {"alpha": -1}, "alpha must be >= 0.0, not -1.0"),
        ("gradient_shap", {"baseline": "zero,sky"}, "baseline must be one of zero, pad, eos"),
        ("saliency", {"norm": "l3"}, "norm must be"),
        ("shap", {"max_evals": 1}, "max_evals must be >= 2, not 1"),
        ("flow", {"full_map_tokens": -1}, "full_map_tokens must be >= 0, not -1"),
        ("logit_lens", {"layers": "0,x"}, "layers takes 'all', numbers and ranges"),
        ("activation_patching", {"layers": "a"}, "layers takes"),
        ("activation_patching", {"direction": "up"}, "direction must be denoise or noise"),
        ("activation_patching", {"batch_size": 0}, "batch_size must be >= 1, not 0"),
        ("causal_tracing", {"noise": -1}, "noise must be >= 0.0, not -1.0"),
        ("causal_tracing", {"window": 0}, "window must be >= 1, not 0"),
        ("attribution_patching", {"compare_exact": "maybe"}, "compare_exact must be true or"),
        ("counterfactual_test", {"removal": "cut"}, "removal must be delete or mask"),
        ("cot", {"answer_tokens": 0}, "answer_tokens must be >= 1, not 0"),
        ("self_explain", {"max_words": "x"}, "max_words must be an integer >= 1"),
    ],
)
def test_every_family_refuses_a_bad_value_naming_the_parameter(method, params, message):
    with pytest.raises(WorkbenchError) as info:
        validate_params(method, params)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_booleans_from_the_command_line_are_parsed_by_the_table():
    assert validate_params("attribution_patching", {"compare_exact": "yes"}) == {
        "compare_exact": True
    }


def test_attribution_patching_refuses_exact_run_options_without_compare_exact():
    # batch_size and engine only reach the exact run that compare_exact adds.
    for name, value in (("batch_size", 4), ("engine", "full")):
        with pytest.raises(WorkbenchError, match=f"{name} applies to attribution_patching only"):
            validate_params("attribution_patching", {name: value})
        checked = validate_params("attribution_patching", {name: value, "compare_exact": "true"})
        assert checked["compare_exact"] is True


def test_no_method_overrides_check_params_to_check_values_by_hand():
    # The tables are the one way to check a value; attribution patching's cross-parameter
    # rule is the one override.
    overrides = []
    for path in EXPLAINERS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "check_params":
                overrides.append(path.relative_to(EXPLAINERS).as_posix())
    assert sorted(overrides) == ["causal/attribution.py", "explainer.py"]


def test_the_registry_lists_every_family_and_refuses_a_bad_table():
    methods = known_methods()
    assert {cls.category for cls in methods.values()} == {
        "attribution",
        "attention",
        "probing",
        "prompting",
        "causal",
    }
    assert get_method("ig").name == "ig"

    class Typo(Explainer):
        name = "typo_for_test"
        category = "attribution"
        param_checks = {"stepz": Int()}

        def explain_objective(self, obj, steps=1):
            raise NotImplementedError

    with pytest.raises(ValueError, match="param_checks names no parameter"):
        register(Typo)
    assert "typo_for_test" not in known_methods()


def test_a_causal_record_comes_back_as_a_patching_explanation():
    from explainers.causal.result import PatchingExplanation

    exp = PatchingExplanation(
        method="activation_patching",
        category="causal",
        model="tiny",
        input_text="a b",
        input_tokens=["a", " b"],
        target_tokens=[" c"],
        scores=np.array([[0.0, 1.0], [0.5, 0.25]]),
        layers=[0, 1],
        hook_names=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"],
        clean_value=-1.0,
        corrupt_value=-3.0,
        corrupt_text="a x",
        corrupt_tokens=["a", " x"],
    )
    back = Explanation.from_dict(exp.to_record())
    assert type(back) is PatchingExplanation
    assert back.layers == [0, 1] and back.corrupt_tokens == ["a", " x"]
    np.testing.assert_allclose(back.scores, exp.scores)
    plain = Explanation(
        method="ig",
        category="attribution",
        model="tiny",
        input_text="a b",
        input_tokens=["a", " b"],
        target_tokens=[" c"],
        scores=[[0.5, 0.5]],
    )
    assert type(Explanation.from_dict(plain.to_record())) is Explanation


def test_the_explanation_module_imports_nothing_above_it():
    # Subclasses and renderers plug in from above; explanation.py names none of them.
    tree = ast.parse((EXPLAINERS / "explanation.py").read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not {m for m in imported if m.startswith("explainers")}, imported
