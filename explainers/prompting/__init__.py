"""Prompt-based explanations: what the model says about its own answers, and tests of it.

self_explain (the answer and the words that mattered), counterfactual_test (does the answer
change when those words go?), cot (does the answer depend on the chain of thought?),
icl_demos (each in-context demonstration's contribution). They run on the local model or on
an OpenAI-compatible endpoint (`workbench explain --llm openai:MODEL`). Importing this
package registers them all.
"""

from explainers.prompting import (  # noqa: F401  (importing registers the methods)
    cot,
    counterfactual,
    icl_demos,
    self_explain,
)
