"""Probing: the logit lens, and linear probes of hidden states with control tasks."""

from explainers.probing import logit_lens  # noqa: F401  (registers the method)
