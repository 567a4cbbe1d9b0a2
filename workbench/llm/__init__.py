"""LLM backends: local transformers and OpenAI-compatible endpoints."""
