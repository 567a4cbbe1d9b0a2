"""Prompt-based explanations: exact measurements with scripted replies through a real
OpenAI-compatible HTTP server, the same methods on the default model, and the CLI."""

from __future__ import annotations

import json
import socket
import sys
from functools import partialmethod

import numpy as np
import pytest
from rich.console import Console

from explainers import explain
from explainers.prompting.cot import split_reasoning, unit_spans
from explainers.prompting.icl_demos import parse_few_shot
from explainers.prompting.self_explain import parse_self_explanation
from explainers.registry import validate_params
from tests.run_cli import run_inprocess
from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.errors import WorkbenchError
from workbench.llm import LLMUnavailableError
from workbench.llm.local import LocalLLM
from workbench.llm.openai_backend import OpenAILLM
from workbench.store import Store
from workbench.store.explanations import list_explanations

STORY = "The milk is in the fridge and the apple is on the table. Where is the milk?"

SHORT_FEW_SHOT = (
    "Input: great\nOutput: positive\n\nInput: awful\nOutput: negative\n\nInput: nice\nOutput:"
)

FEW_SHOT = """Classify the sentiment of each input.

Input: a great movie
Output: positive

Input: a dull plot
Output: negative

Input: fine acting
Output: positive

Input: what a lovely film
Output:"""


class ScoringServer(ScriptedOpenAIServer):
    """The scripted chat server plus the legacy completions endpoint with echoed prompt
    log-probabilities (as vLLM serves it): `logprob(prompt, candidate)` scores a reply."""

    def __init__(self, reply, logprob):
        super().__init__(reply)
        chat_handler = self.httpd.RequestHandlerClass
        server = self

        class Handler(chat_handler):
            def do_POST(self) -> None:
                if self.path != "/v1/completions":
                    return super().do_POST()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                prompt, _, candidate = body["prompt"].rpartition("\n")
                logprobs = {
                    "tokens": [prompt, candidate],
                    "token_logprobs": [None, logprob(prompt, candidate)],
                    "text_offset": [0, len(prompt) + 1],
                    "top_logprobs": None,
                }
                choice = {"index": 0, "text": "", "finish_reason": "length", "logprobs": logprobs}
                usage = {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}
                self._send(
                    200,
                    {
                        "id": "c",
                        "object": "text_completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [choice],
                        "usage": usage,
                    },
                )

        self.httpd.RequestHandlerClass = Handler


def scripted(server: ScriptedOpenAIServer, retries: int = 1) -> OpenAILLM:
    return OpenAILLM("scripted", base_url=server.base_url, max_retries=retries, backoff=0.01)


def user_prompt(request: dict) -> str:
    return request["messages"][-1]["content"]


def story_reply(prompt: str) -> str:
    """Names milk and fridge as important, and answers from exactly those two words."""
    if "Important words" in prompt:
        return "**Answer:** the fridge\nImportant words: milk, fridge\nWhy: it says so."
    words = {w.strip(".,?").lower() for w in prompt.split()}
    return "Answer: fridge" if {"milk", "fridge"} <= words else "Answer: I don't know"


def cot_reply(prompt: str) -> str:
    """Reasons in four sentences; early answers are right once step three was read."""
    if "Here is the beginning" in prompt:
        return "Answer: 42" if "Step three." in prompt else "Answer: 7"
    return "Step one. Step two. Step three. Step four.\nAnswer: 42"


def icl_reply(prompt: str) -> str:
    return "positive" if "a great movie\nOutput: positive" in prompt else "negative"


def icl_logprob(prompt: str, answer: str) -> float:
    """log p(answer): demo 1 intact adds 2 nats; demo 2 flipped to positive costs 0.5."""
    value = -1.0 if "Input: a great movie\nOutput: positive" in prompt else -3.0
    return value - (0.5 if "a dull plot\nOutput: positive" in prompt else 0.0)


# -- parsing ---------------------------------------------------------------------------


def test_self_explanation_is_read_from_formatted_and_from_loose_replies():
    found = parse_self_explanation(
        STORY, "p", "**Answer:** fridge\nImportant words: Milk, the fridge."
    )
    assert found.answer == "fridge"
    assert [found.words[i].text for i in found.important] == ["milk", "the", "fridge", "milk?"]
    loose = parse_self_explanation(STORY, "p", 'It is in the fridge, because "milk" and "bread".')
    assert loose.answer == 'It is in the fridge, because "milk" and "bread".'
    assert [loose.words[i].text for i in loose.important] == ["milk", "milk?"]
    assert loose.unmatched == ["bread"]


FRIDGE = "Is a fridge used to keep milk cold? Answer yes or no."


def test_a_reply_without_the_format_names_the_input_words_it_repeats():
    found = parse_self_explanation(FRIDGE, "p", "The fridge is used to keep milk cold.")
    # Stop words ("is", "to", "keep") are not named; "Answer" of the input is not echoed.
    assert [found.words[i].text for i in found.important] == ["fridge", "used", "milk", "cold?"]
    assert found.words_source == "repeated" and found.status == "format_not_followed"
    assert "did not follow the requested format" in found.warning
    echoed = parse_self_explanation(FRIDGE, "p", "Answer: yes, fridges keep it cold")
    assert [echoed.words[i].text for i in echoed.important] == ["cold?", "yes"]
    formatted = parse_self_explanation(FRIDGE, "p", "Answer: yes\nImportant words: fridge")
    assert formatted.status == "ok" and formatted.warning is None
    silent = parse_self_explanation(FRIDGE, "p", "Answer: yes\nImportant words: none")
    assert silent.status == "no_words_named" and "every score is 0" in silent.warning


def test_reasoning_and_answer_are_split_even_without_an_answer_line():
    assert split_reasoning("First A. Then B.\n**Final Answer:** 42") == ("First A. Then B.", "42")
    assert split_reasoning("It is cold. So it is") == ("It is cold. So it is", None)
    text = "Step one. Step two!\nStep three"
    assert [text[s:e] for s, e in unit_spans(text, "sentence")] == [
        "Step one.",
        "Step two!",
        "Step three",
    ]


def test_few_shot_format_errors_say_how_to_write_the_prompt():
    blocks = parse_few_shot(FEW_SHOT)
    assert [b.kind for b in blocks] == ["instruction", "demo", "demo", "demo", "query"]
    with pytest.raises(WorkbenchError, match="found no demonstration"):
        parse_few_shot("Input: what a lovely film\nOutput:")
    with pytest.raises(WorkbenchError, match="only the query"):
        parse_few_shot("Input: a\nOutput:\n\nInput: b\nOutput: x\n\nInput: c\nOutput:")


# -- exact measurements through the scripted endpoint -----------------------------------


def test_self_explain_marks_exactly_the_named_words():
    with ScriptedOpenAIServer(reply=story_reply) as server:
        exp = explain(None, STORY, method="self_explain", llm=scripted(server))
    named = [tok.strip() for tok, s in zip(exp.input_tokens, exp.scores[0]) if s == 1.0]
    assert named == ["milk", "fridge", "milk?"]
    assert set(exp.scores[0]) == {0.0, 1.0}
    assert exp.target_tokens == ["the fridge"] and exp.category == "prompting"
    assert exp.extras["why"] == "it says so." and "Important words" in exp.extras["prompt"]
    assert "".join(exp.input_tokens) == STORY


def test_a_prompting_method_reports_its_run_as_one_step_of_progress():
    calls = []
    with ScriptedOpenAIServer(reply=story_reply) as server:
        explain(
            None,
            STORY,
            method="self_explain",
            llm=scripted(server),
            progress=lambda done, total: calls.append((done, total)),
        )
    assert calls == [(0, 1), (1, 1)]


def test_self_explain_says_when_the_reply_names_no_word(capsys):
    with ScriptedOpenAIServer(reply=lambda prompt: "Answer: I cannot tell.") as server:
        exp = explain(None, STORY, method="self_explain", llm=scripted(server))
    assert not exp.scores.any() and exp.status == "no_words_named"
    assert exp.to_record()["status"] == "no_words_named"
    exp.show(console=Console(file=sys.stdout, width=200))
    assert "names no word of the input" in capsys.readouterr().out


def test_counterfactual_takes_the_words_a_reply_without_the_format_repeats():
    def loose(prompt: str) -> str:  # never keeps to the format, like the default model
        if "Important words" in prompt:
            return "The fridge is used to keep milk cold."
        return "Yes." if "fridge" in prompt else "I don't know."

    with ScriptedOpenAIServer(reply=loose) as server:
        exp = explain(None, FRIDGE, method="counterfactual_test", llm=scripted(server))
    assert exp.status == "format_not_followed" and exp.warnings
    assert exp.extras["important_words"] == ["fridge", "used", "milk", "cold?"]
    assert exp.extras["words_source"] == "repeated"
    # Only the edits that remove "fridge" change the answer: it alone, and all four at once.
    assert exp.extras["change_rate"]["important"] == 2 / 5


def test_counterfactual_change_rates_are_exact_for_a_faithful_explanation():
    with ScriptedOpenAIServer(reply=story_reply) as server:
        exp = explain(None, STORY, method="counterfactual_test", llm=scripted(server), seed=3)
    assert exp.extras["change_rate"] == {"important": 1.0, "unimportant": 0.0}
    assert exp.extras["faithfulness_gap"] == 1.0
    # Matched sizes: two words alone and both together, in each condition.
    assert exp.extras["n_edits"] == {"important": 3, "unimportant": 3}
    removed = [e["removed"] for e in exp.extras["edits"] if e["condition"] == "important"]
    assert removed == [["milk"], ["fridge"], ["milk", "fridge"]]
    assert exp.extras["answer"] == "fridge"
    assert exp.extras["agreement"] is None and "text only" in exp.extras["agreement_note"]
    # Removing "milk" removes both occurrences.
    edited = exp.extras["edits"][0]["text"]
    assert "milk" not in edited and "fridge" in edited


def test_counterfactual_masking_and_an_unfaithful_explanation():
    def misleading(prompt: str) -> str:  # names milk and fridge, but answers from "table"
        if "Important words" in prompt:
            return "Answer: fridge\nImportant words: milk, fridge"
        return "Answer: fridge" if "table" in prompt else "Answer: nowhere"

    text = "The milk is in the fridge near the table"
    with ScriptedOpenAIServer(reply=misleading) as server:
        exp = explain(
            None,
            text,
            method="counterfactual_test",
            llm=scripted(server),
            removal="mask",
            max_words=2,
            seed=0,
        )
    rates = exp.extras["change_rate"]
    assert rates["important"] == 0.0
    edits = [e for e in exp.extras["edits"] if e["condition"] == "unimportant"]
    expected = np.mean(["table" in e["removed"] for e in edits])
    assert rates["unimportant"] == expected
    assert all("___" in e["text"] for e in exp.extras["edits"])


def test_cot_early_answers_match_after_step_three():
    with ScriptedOpenAIServer(reply=cot_reply) as server:
        exp = explain(None, "What is six times seven?", method="cot", llm=scripted(server))
    curve = exp.extras["curve"]
    assert [c["units_kept"] for c in curve] == [0, 1, 2, 3, 4]
    assert [c["matches_final"] for c in curve] == [False, False, False, True, True]
    assert exp.extras["early_match_rate"] == 0.25
    assert exp.extras["area_over_curve"] == pytest.approx(0.625)
    assert exp.target_tokens == ["42"]
    assert exp.scores[0].tolist() == [0.0, 0.0, 1.0, 1.0]
    # The cuts go out concurrently and arrive in any order: match them by content.
    cuts = [
        prompt.split("question:\n")[1].split("\n\nStop reasoning")[0]
        for prompt in map(user_prompt, server.requests)
        if "Here is the beginning" in prompt
    ]
    assert sorted(cuts) == sorted(
        [
            "(no reasoning yet)",
            "Step one.",
            "Step one. Step two.",
            "Step one. Step two. Step three.",
            "Step one. Step two. Step three. Step four.",
        ]
    )


def test_icl_demo_effects_are_exact_with_an_endpoint_that_returns_logprobs():
    with ScoringServer(reply=icl_reply, logprob=icl_logprob) as server:
        exp = explain(None, FEW_SHOT, method="icl_demos", llm=scripted(server))
    demos = exp.extras["demos"]
    assert exp.target_tokens == ["positive"] and exp.extras["answer_logprob"] == -1.0
    assert [d["loo_effect"] for d in demos] == [2.0, 0.0, 0.0]
    assert [d["flip_to"] for d in demos] == ["negative", "positive", "negative"]
    assert [d["flip_effect"] for d in demos] == [2.0, 0.5, 0.0]
    assert [d["changed_without"] for d in demos] == [True, False, False]
    assert [d["changed_flipped"] for d in demos] == [True, False, False]
    assert exp.scores[0].tolist() == [0.0, 2.0, 0.0, 0.0, 0.0]  # instruction, 3 demos, query
    assert "text only" in exp.extras["attribution_note"]


def test_icl_with_a_given_target_measures_that_answer():
    with ScoringServer(reply=icl_reply, logprob=lambda p, a: -1.0 if a == "neutral" else -9.0) as s:
        exp = explain(None, FEW_SHOT, target="neutral", method="icl_demos", llm=scripted(s))
    assert exp.target_tokens == ["neutral"] and exp.extras["answer_logprob"] == -1.0
    assert exp.extras["model_answer"] == "positive"


def test_icl_without_logprobs_and_failing_endpoints_stop_with_one_line():
    with ScriptedOpenAIServer(reply=icl_reply) as server:  # chat only: no logprobs
        with pytest.raises(WorkbenchError, match="icl_demos needs log-probabilities") as info:
            explain(None, FEW_SHOT, method="icl_demos", llm=scripted(server))
    assert "\n" not in str(info.value)
    with ScriptedOpenAIServer() as server:
        server.faults.extend(["garbage"] * 10)
        with pytest.raises(LLMUnavailableError, match="failed to answer after retries"):
            explain(None, STORY, method="self_explain", llm=scripted(server))
    assert len(server.requests) == 2  # one try and one retry
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = OpenAILLM("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(LLMUnavailableError, match="unreachable after 2 attempts"):
        explain(None, STORY, method="cot", llm=dead)


# -- the default model -----------------------------------------------------------------


@pytest.fixture(scope="module")
def default_lm():
    from workbench.models import load_model

    return load_model(device="cpu", dtype="float32")


@pytest.mark.slow
def test_self_explain_and_cot_run_on_the_default_model(default_lm):
    exp = explain(
        default_lm,
        "Is the word 'terrible' positive or negative?",
        method="self_explain",
        max_tokens=24,
    )
    assert exp.model == "SmolLM2-135M-Instruct" and exp.extras["reply"]
    assert set(exp.scores[0]) <= {0.0, 1.0} and exp.scores.shape == (1, 7)
    cot = explain(
        default_lm,
        "The milk is in the fridge. Where is the milk?",
        method="cot",
        points="0,0.5,1",
        unit="word",
        max_tokens=40,
        answer_tokens=12,
    )
    assert [c["fraction"] for c in cot.extras["curve"]] == [0.0, 0.5, 1.0]
    assert cot.extras["n_units"] == len(cot.input_tokens) > 0
    assert 0.0 <= cot.extras["early_match_rate"] <= 1.0


@pytest.mark.slow
def test_counterfactual_and_icl_run_on_the_default_model_with_attribution(default_lm):
    exp = explain(
        default_lm,
        "Is the word 'terrible' positive or negative?",
        method="counterfactual_test",
        max_tokens=32,
    )
    assert exp.extras["important_words"] == ["'terrible'"]
    assert exp.extras["n_edits"] == {"important": 1, "unimportant": 1}
    # The default model answers this one without the format (issue 18): its words are used.
    loose = explain(default_lm, FRIDGE, method="counterfactual_test", attribution="none")
    assert loose.status == "format_not_followed" and loose.extras["words_source"] == "repeated"
    assert {"fridge", "milk"} <= {w.strip("?") for w in loose.extras["important_words"]}
    agreement = exp.extras["agreement"]
    assert agreement["method"] == "occlusion" and len(agreement["word_scores"]) == 7
    assert 0.0 <= agreement["top_k_overlap"] <= 1.0
    icl = explain(default_lm, SHORT_FEW_SHOT, method="icl_demos", target="positive", max_tokens=4)
    demos = icl.extras["demos"]
    assert len(demos) == 2 and all(isinstance(d["token_attribution"], float) for d in demos)
    # The effects are differences of the local backend's own log-probabilities.
    without_first = SHORT_FEW_SHOT.split("\n\n", 1)[1]
    [lp] = LocalLLM(default_lm).score([without_first], [["positive"]])[0].logprobs
    assert demos[0]["loo_effect"] == pytest.approx(icl.extras["answer_logprob"] - lp, abs=1e-4)


@pytest.mark.parametrize("method", ["occlusion", "ig"])
def test_demo_attribution_sums_the_registered_methods_token_scores(tiny_causal, method):
    """Per-demonstration attribution = the registered method's token scores summed per demo
    (occlusion only visits the demos' tokens, so it is compared there)."""
    prompt = (
        "Input: the milk\nOutput: fridge\n\nInput: an apple\nOutput: table\n\nInput: milk\nOutput:"
    )
    exp = explain(tiny_causal, prompt, method="icl_demos", target="fridge", attribution=method)
    formatted = LocalLLM(tiny_causal).format_prompt(prompt)
    tokens = explain(tiny_causal, formatted, target="fridge", method=method)
    per_token = tokens.scores.sum(axis=0)  # whole-word tokens: token i is word i
    words = formatted.split()
    expected = [per_token[:5].sum(), per_token[5:10].sum()]
    assert words[:6] == ["Input:", "the", "milk", "Output:", "fridge", "Input:"]
    got = [d["token_attribution"] for d in exp.extras["demos"]]
    assert got == pytest.approx(expected, abs=1e-4)


# -- the command line ------------------------------------------------------------------


def test_cli_json_through_an_endpoint_is_saved(capsys, monkeypatch, tmp_path):
    db = tmp_path / "wb.duckdb"
    with ScriptedOpenAIServer(reply=story_reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        code, out, err = run_inprocess(
            capsys,
            "explain",
            "--method",
            "counterfactual_test",
            "--llm",
            "openai:scripted",
            "--text",
            STORY,
            "--param",
            "seed=1",
            "--format",
            "json",
            "--db",
            str(db),
        )
    assert code == 0, err
    data = json.loads(out)
    assert data["method"] == "counterfactual_test" and data["model"] == "scripted"
    assert data["extras"]["change_rate"] == {"important": 1.0, "unimportant": 0.0}
    assert data["params"]["llm"]["backend"] == "openai"
    assert [r["id"] for r in list_explanations(Store(db))] == [data["id"]]


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("self_explain", {"target": "yes"}, "self_explain explains the model's own answer"),
        ("self_explain", {"max_words": "0"}, "max_words must be >= 1"),
        ("counterfactual_test", {"removal": "cut"}, "removal must be delete or mask"),
        ("counterfactual_test", {"attribution": "lime"}, "attribution must be one of"),
        ("cot", {"points": "0,2"}, "points must be fractions between 0 and 1"),
        ("cot", {"generate": 3}, "cot takes no generate"),
        ("icl_demos", {"steps": 8}, "icl_demos takes no parameter 'steps'"),
    ],
)
def test_requests_a_method_cannot_use_fail_without_a_model(method, params, message):
    with pytest.raises(WorkbenchError, match=message):
        validate_params(method, {"text": STORY, **params})
    assert validate_params("counterfactual_test", {"seed": "7", "max_words": "2"}) == {
        "seed": 7,
        "max_words": 2,
    }


def test_cli_refuses_a_target_before_loading_the_model(capsys, tmp_path):
    missing = str(tmp_path / "no-such-model")
    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--method",
        "self_explain",
        "--text",
        STORY,
        "--target",
        "x",
        "--model",
        missing,
        "--db",
        str(tmp_path / "wb.duckdb"),
    )
    assert code == 1 and "drop target" in err and "no-such-model" not in err


def test_cli_bad_inputs_are_one_line_errors(capsys, monkeypatch, tmp_path):
    db = str(tmp_path / "wb.duckdb")
    with ScriptedOpenAIServer(reply=icl_reply) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        cases = {
            "found no demonstration": ["--method", "icl_demos", "--text", "Input: hi\nOutput:"],
            "needs log-probabilities": ["--method", "icl_demos", "--text", FEW_SHOT],
            "--llm applies to prompting methods": ["--method", "ig", "--text", "hi"],
            "drop target": ["--method", "cot", "--text", "hi", "--target", "x"],
        }
        for message, args in cases.items():
            code, out, err = run_inprocess(
                capsys, "explain", "--llm", "openai:scripted", "--db", db, *args
            )
            assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{s.getsockname()[1]}/v1")
    # Five attempts as the command makes them, with the waits between them cut short.
    monkeypatch.setattr(OpenAILLM, "__init__", partialmethod(OpenAILLM.__init__, backoff=0.01))
    code, out, err = run_inprocess(
        capsys,
        "explain",
        "--method",
        "self_explain",
        "--llm",
        "openai:m",
        "--text",
        STORY,
        "--db",
        db,
    )
    assert code == 1 and "unreachable after 5 attempts" in err and out == ""
