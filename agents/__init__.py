"""LLM agents that play TextWorld games and learn from introspective tips."""
