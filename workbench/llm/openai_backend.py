"""The openai backend: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp).

The endpoint and key come from OPENAI_BASE_URL and OPENAI_API_KEY, as with the `openai`
client itself. Prompts of a batch go out concurrently (bounded by `concurrency`); each call
is retried with exponential backoff on connection errors, timeouts, 429 and 5xx, and on
replies that are not a chat completion. The key is used for requests only: `describe()`
(what a run records) names the model and base URL, never the key.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from workbench.llm.base import LLM, CandidateScores, Completion, LLMUnavailableError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAILLM(LLM):
    """Chat completions from an OpenAI-compatible endpoint.

    Args:
        model: the endpoint's model name (`--llm openai:MODEL`).
        base_url / api_key: default to OPENAI_BASE_URL / OPENAI_API_KEY.
        concurrency: requests in flight at once.
        timeout: seconds per request.
        max_retries: further attempts after a failed one (backoff 0.5 s, 1 s, 2 s, ... + jitter).
        backoff: the first wait in seconds (tests set it small).
    """

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
    ):
        if not model:
            raise LLMUnavailableError("openai:MODEL needs a model name after the colon")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        # Local servers accept any key; the client insists on one being set.
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": self.base_url}

    def _client(self):
        from openai import AsyncOpenAI

        # The client's own retries are off: ours also cover garbage replies, and count.
        return AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=0
        )

    # -- completion ------------------------------------------------------------------------

    def _complete(
        self, prompts: list[str], max_tokens: int, temperature: float, system: str | None
    ) -> list[Completion]:
        params = {"max_tokens": max_tokens, "temperature": temperature}
        return asyncio.run(self._complete_all(prompts, params, system))

    async def _complete_all(
        self, prompts: list[str], params: dict[str, Any], system: str | None
    ) -> list[Completion]:
        gate = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:
            return list(
                await asyncio.gather(
                    *(self._complete_one(client, gate, p, params, system) for p in prompts)
                )
            )

    async def _complete_one(
        self, client, gate, prompt: str, params: dict[str, Any], system: str | None
    ) -> Completion:
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        started = time.perf_counter()
        async with gate:
            reply, error = await self._with_retries(
                lambda: client.chat.completions.create(
                    model=self.model, messages=messages, **params
                ),
                _parse_chat,
            )
        latency = time.perf_counter() - started
        if reply is None:
            return Completion(prompt, "", 0, 0, latency, error, params)
        text, prompt_tokens, completion_tokens = reply
        return Completion(prompt, text, prompt_tokens, completion_tokens, latency, None, params)

    async def _with_retries(self, request, parse) -> tuple[Any, str | None]:
        """Run `request` until `parse` accepts its reply or the retries run out.

        Returns (parsed, None) or (None, last error). An endpoint that cannot be reached
        at all raises `LLMUnavailableError`, which stops a run cleanly (it can be resumed).
        """
        import openai

        error = "no attempt"
        unreachable = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (1 + 0.25 * random.random()))
            try:
                raw = await request()
            except (openai.APIConnectionError, openai.APITimeoutError) as exc:
                error, unreachable = f"{type(exc).__name__}: {exc}", True
                continue
            except openai.APIStatusError as exc:
                error, unreachable = f"HTTP {exc.status_code}: {_short(exc.message)}", False
                if exc.status_code == 429 or exc.status_code >= 500:
                    continue
                # Other 4xx (bad model name, bad request) will not improve with retries.
                raise LLMUnavailableError(f"endpoint {self.base_url} refused: {error}") from exc
            except (openai.APIResponseValidationError, ValueError) as exc:
                # ValueError: a 200 reply whose body is not JSON (a proxy's error page).
                error, unreachable = (
                    f"invalid reply: {type(exc).__name__}: {_short(str(exc))}",
                    False,
                )
                continue
            try:
                return parse(raw), None
            except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
                error, unreachable = f"invalid reply: {type(exc).__name__}: {exc}", False
        if unreachable:
            raise LLMUnavailableError(
                f"endpoint {self.base_url} unreachable after {self.max_retries + 1} attempts"
                f" ({error})"
            )
        return None, error

    # -- scoring ---------------------------------------------------------------------------

    def score(
        self, prompts: list[str], candidates: list[list[str]], *, calibrate: bool = False
    ) -> list[CandidateScores]:
        """Candidate log-likelihoods through the legacy completions endpoint with
        `echo=True, logprobs=0, max_tokens=0` (vLLM and llama.cpp server return prompt
        logprobs this way; OpenAI's hosted chat models do not)."""
        if calibrate:
            raise LLMUnavailableError("calibrated scoring needs the local backend; use sum or mean")
        return asyncio.run(self._score_all(prompts, candidates))

    async def _score_all(self, prompts, candidates) -> list[CandidateScores]:
        gate = asyncio.Semaphore(self.concurrency)
        async with self._client() as client:

            async def one(prompt: str, cands: list[str]) -> CandidateScores:
                started = time.perf_counter()
                results = await asyncio.gather(
                    *(self._score_one(client, gate, prompt, c) for c in cands)
                )
                latency = time.perf_counter() - started
                return CandidateScores(
                    prompt,
                    list(cands),
                    [r[0] for r in results],
                    [r[1] for r in results],
                    max((r[2] for r in results), default=0),
                    latency,
                )

            return list(await asyncio.gather(*(one(p, c) for p, c in zip(prompts, candidates))))

    async def _score_one(self, client, gate, prompt: str, candidate: str) -> tuple[float, int, int]:
        text = f"{prompt}\n{candidate}"
        start = len(prompt) + 1

        def parse(raw) -> tuple[float, int, int]:
            lp = raw.choices[0].logprobs
            pairs = [(o, v) for o, v in zip(lp.text_offset, lp.token_logprobs) if o >= start]
            if not pairs or any(v is None for _, v in pairs):
                raise ValueError("the endpoint returned no prompt logprobs")
            return sum(v for _, v in pairs), len(pairs), int(raw.usage.prompt_tokens)

        async with gate:
            reply, error = await self._with_retries(
                lambda: client.completions.create(
                    model=self.model, prompt=text, max_tokens=0, echo=True, logprobs=0
                ),
                parse,
            )
        if reply is None:
            raise LLMUnavailableError(
                f"endpoint {self.base_url} cannot score commands ({error}); use select='generate'"
            )
        return reply


def _parse_chat(raw) -> tuple[str, int, int]:
    text = raw.choices[0].message.content
    if not isinstance(text, str):
        raise ValueError("the reply has no message content")
    usage = raw.usage
    prompt_tokens = int(usage.prompt_tokens) if usage else 0
    completion_tokens = int(usage.completion_tokens) if usage else 0
    return text, prompt_tokens, completion_tokens


def _short(text: str, limit: int = 200) -> str:
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first[:limit]
