"""LLM backends: local scoring/generation on a tiny model, and the openai backend against
a real OpenAI-compatible HTTP server on 127.0.0.1 (including its faults)."""

from __future__ import annotations

import socket

import pytest
import torch

from tests.workbench.openai_server import ScriptedOpenAIServer
from workbench.errors import WorkbenchError
from workbench.llm import LLMUnavailableError, make_llm
from workbench.llm.local import LocalLLM
from workbench.llm.openai_backend import OpenAILLM

SECRET = "sk-test-secret-never-stored"


def _brute_logprob(llm: LocalLLM, prompt: str, candidate: str) -> float:
    p = llm._encode(llm.format_prompt(prompt))
    c = llm._encode(candidate)
    logits = llm.lm.model(torch.tensor([p + c])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return sum(logprobs[len(p) - 1 + j, c[j]].item() for j in range(len(c)))


def test_local_scores_equal_full_forward_even_in_a_padded_batch(tiny_causal):
    llm = LocalLLM(tiny_causal)
    prompts = ["the milk is in the", "open the fridge to get a red apple from the kitchen table"]
    candidates = [["fridge", "red box", "take apple from table"], ["cut", "open door"]]
    scored = llm.score(prompts, candidates, calibrate=True)
    for sc, prompt, cands in zip(scored, prompts, candidates):
        expected = [_brute_logprob(llm, prompt, c) for c in cands]
        assert sc.logprobs == pytest.approx(expected, abs=1e-4)
        assert sc.n_tokens == [len(c.split()) for c in cands]  # whole-word tokenizer
        assert sc.ranked("mean") == pytest.approx(
            [lp / n for lp, n in zip(sc.logprobs, sc.n_tokens)]
        )
        assert sc.calibrated is not None and sc.calibrated != sc.logprobs


def test_local_generation_is_batched_greedy_and_counts_tokens(tiny_causal):
    llm = LocalLLM(tiny_causal)
    prompts = ["the milk is in the", "take an apple"]
    batch = llm.complete(prompts, max_tokens=4)
    alone = [llm.complete([p], max_tokens=4)[0] for p in prompts]
    assert [c.text for c in batch] == [c.text for c in alone]
    assert [c.prompt_tokens for c in batch] == [5, 3]
    assert all(0 < c.completion_tokens <= 4 and c.ok for c in batch)


def test_unknown_backend_is_a_user_error():
    with pytest.raises(WorkbenchError, match="unknown LLM backend 'gpt'"):
        make_llm("gpt:4")
    with pytest.raises(WorkbenchError, match="needs a model name"):
        make_llm("openai:")


def test_openai_completes_concurrently_with_token_usage():
    with ScriptedOpenAIServer(reply=lambda p: f"echo {p.split()[-1]}") as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, api_key=SECRET, backoff=0.01)
        out = llm.complete([f"say word{i}" for i in range(6)], max_tokens=8, system="be brief")
    assert [c.text for c in out] == [f"echo word{i}" for i in range(6)]
    assert all(c.ok and c.prompt_tokens == 2 and c.completion_tokens == 2 for c in out)
    assert server.requests[0]["messages"][0] == {"role": "system", "content": "be brief"}
    assert server.requests[0]["max_tokens"] == 8
    assert set(server.auth_headers) == {f"Bearer {SECRET}"}
    assert SECRET not in repr(llm.describe())


@pytest.mark.parametrize("fault", ["429", "500", "garbage", "empty"])
def test_openai_retries_faults_then_answers(fault):
    with ScriptedOpenAIServer(reply=lambda p: "open fridge") as server:
        server.faults.extend([fault, fault])
        llm = OpenAILLM("scripted", base_url=server.base_url, max_retries=3, backoff=0.01)
        [completion] = llm.complete(["what now?"])
    assert completion.ok and completion.text == "open fridge"
    assert len(server.requests) == 3


def test_openai_persistent_garbage_is_an_error_result_not_a_crash():
    with ScriptedOpenAIServer() as server:
        server.faults.extend(["garbage"] * 10)
        llm = OpenAILLM("scripted", base_url=server.base_url, max_retries=2, backoff=0.01)
        [completion] = llm.complete(["what now?"])
    assert not completion.ok and "invalid reply" in completion.error
    assert len(server.requests) == 3


def test_openai_unreachable_endpoint_raises_after_retries():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    llm = OpenAILLM("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff=0.01)
    with pytest.raises(LLMUnavailableError, match="unreachable after 2 attempts"):
        llm.complete(["hello"])


def test_openai_client_errors_are_not_retried():
    with ScriptedOpenAIServer() as server:
        llm = OpenAILLM("m", base_url=server.base_url.replace("/v1", "/nope"), backoff=0.01)
        with pytest.raises(LLMUnavailableError, match="refused: HTTP 404"):
            llm.complete(["hello"])
    assert len(server.requests) == 1
