"""LLM backends: local transformers and OpenAI-compatible endpoints, behind one interface.

>>> from workbench.llm import make_llm
>>> llm = make_llm("local")                          # doctest: +SKIP
>>> llm.complete(["Say hi."])[0].text                # doctest: +SKIP
>>> llm = make_llm("openai:gpt-4o-mini")             # OPENAI_BASE_URL / OPENAI_API_KEY
"""

from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.llm.base import (
    LLM,
    SCORE_MODES,
    CandidateScores,
    Completion,
    LLMUnavailableError,
    ScoreMode,
    check_score_mode,
)

BACKENDS = ("local", "openai")


def make_llm(
    spec: str = "local",
    *,
    model: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    adapter: str | None = None,
    progress: bool = False,
    **options,
) -> LLM:
    """An LLM from a `--llm` value: `local` (the `--model`, default SmolLM2-135M-Instruct,
    with a LoRA `adapter` merged in if given) or `openai:MODEL` (an OpenAI-compatible
    endpoint). `progress` reports the local model's one-time download on stderr. Extra
    options go to the backend."""
    backend, _, name = spec.partition(":")
    if backend == "local":
        from workbench.llm.local import LocalLLM
        from workbench.models import load_model

        if name and model is not None and name != model:
            raise WorkbenchError(f"spec {spec!r} and model {model!r} name two models; give one")
        lm = load_model(
            name or model, device=device, dtype=dtype, adapter=adapter, progress=progress
        )
        return LocalLLM(lm, **options)
    if adapter is not None and backend == "openai":
        raise WorkbenchError("adapter applies to a local model, not to an openai endpoint")
    if backend == "openai":
        from workbench.llm.openai_backend import OpenAILLM

        return OpenAILLM(name or model or "", **options)
    raise WorkbenchError(
        f"unknown LLM backend {backend!r}; use local or openai:MODEL (e.g. openai:gpt-4o-mini)"
    )


__all__ = [
    "BACKENDS",
    "LLM",
    "SCORE_MODES",
    "check_score_mode",
    "CandidateScores",
    "Completion",
    "LLMUnavailableError",
    "ScoreMode",
    "make_llm",
]
