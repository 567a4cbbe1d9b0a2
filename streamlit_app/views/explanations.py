"""Explanations: the token heatmap per target token, the method's parameters, completeness,
faithfulness metrics with their deletion/insertion curves, and attention maps for the
attention methods.

Deep link: `/explanations?explanation=ID`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import (
    empty_state,
    pager,
    pick,
    query,
    token_heatmap_html,
    visible,
)
from workbench.store import dashboard, explanations

st.title("Explanations")

methods = query(explanations.explanation_methods)
if not methods:
    empty_state("explanations")
    st.stop()

method = st.selectbox("method", [None, *methods], key="exp-method")
first = query(dashboard.explanations_page, limit=1, method=method)
limit, offset = pager("explanations", first.total, default_size=10)
page = query(dashboard.explanations_page, limit=limit, offset=offset, method=method)
st.dataframe(pd.DataFrame(page.rows), hide_index=True)

labels = {e["id"]: f"{e['method']} · {e['model']} · {e['id']}" for e in page.rows}
exp_id, _ = pick("explanation", labels, key="exp-id", param="explanation")
detail = query(dashboard.explanation_detail, exp_id)
if detail is None:
    st.warning(f"No explanation with id {exp_id!r}.")
    st.stop()
exp, metrics = detail["explanation"], detail["metrics"]
if exp.get("category") == "causal":
    st.info("A patching result: its rows are layers, not target tokens.")
    st.page_link(
        "views/patching.py",
        label="open it as a layer-by-position heatmap",
        query_params={"explanation": exp_id},
    )
    st.stop()

st.caption(
    f"{exp['method']} ({exp['category']}) on {exp['model']} · {exp.get('seconds', 0):.2f} s"
    f" · {len(exp['input_tokens'])} input tokens · {len(exp['target_tokens'])} target(s)"
)
left, right = st.columns(2)
with left:
    st.markdown("**input**")
    st.text(exp["input_text"])
with right:
    st.markdown("**parameters**")
    st.json(
        {"baseline": exp.get("baseline"), "aggregation": exp.get("aggregation"), **exp["params"]}
    )

st.subheader("Token heatmap")
st.caption("Red pushes towards the target token, blue away; hover a token for its score.")
targets = exp["target_tokens"] or [""]
scores = exp["scores"]
expected, delta = exp.get("expected"), exp.get("delta")
for row, target in enumerate(targets):
    st.markdown(f"target {row + 1} of {len(targets)}")
    st.code(repr(target), language=None)
    st.html(token_heatmap_html(exp["input_tokens"], scores[row]))
    if expected is not None and delta is not None:
        st.text(
            f"completeness: sum {expected[row] + delta[row]:+.4f} vs f(input)-f(baseline) "
            f"{expected[row]:+.4f}, delta {delta[row]:+.4f}"
        )
with st.expander("scores as a table"):
    st.dataframe(
        pd.DataFrame(
            scores,
            index=[f"{i}: {visible(t)}" for i, t in enumerate(targets)],
            columns=[f"{i}: {visible(t)}" for i, t in enumerate(exp["input_tokens"])],
        )
    )

st.subheader("Faithfulness and plausibility")
if not metrics:
    st.text(f"(no metrics yet: run `workbench evaluate --explanation {exp_id}`)")
else:
    means = [m for m in metrics if m["row"] is None]
    st.dataframe(
        pd.DataFrame([{"metric": m["name"], "mean": m["value"]} for m in means]), hide_index=True
    )
    per_row = pd.DataFrame([m for m in metrics if m["row"] is not None])
    if not per_row.empty:
        st.dataframe(
            per_row.pivot_table(index="row", columns="name", values="value", aggfunc="first"),
        )
    curves = [
        {"curve": m["name"].removesuffix("_auc"), "target": m["row"], "fraction": f, "value": v}
        for m in metrics
        if m["row"] is not None and "curve" in m["details"]
        for f, v in zip(m["details"]["curve"]["fractions"], m["details"]["curve"]["values"])
    ]
    if curves:
        st.markdown(
            "deletion and insertion curves (model output as tokens are removed / added "
            "in order of attribution)"
        )
        st.altair_chart(
            alt.Chart(pd.DataFrame(curves))
            .mark_line(point=True)
            .encode(
                x=alt.X("fraction:Q", title="fraction of tokens"),
                y=alt.Y("value:Q", title="target probability"),
                color="curve:N",
                strokeDash="target:N",
                tooltip=["curve", "target", "fraction", "value"],
            )
        )

extras = exp.get("extras") or {}
if exp["category"] == "attention" and extras.get("tokens"):
    st.subheader("Attention map")
    tokens = [f"{i}: {visible(t)}" for i, t in enumerate(extras["tokens"])]
    choices = {}
    if extras.get("map") is not None:
        choices["final map"] = extras["map"]
    for layer, matrix in enumerate(extras.get("layers") or []):
        choices[f"layer {layer}"] = matrix
    for layer, heads in enumerate(extras.get("heads") or []):
        for head, matrix in enumerate(heads):
            choices[f"layer {layer} head {head}"] = matrix
    if not choices:
        st.text(f"(maps left out to keep the record small: {', '.join(extras.get('omitted', []))})")
    else:
        which = st.selectbox("map", list(choices), key="attention-map")
        cells = pd.DataFrame(
            [
                {"query": tokens[q], "key": tokens[k], "weight": w}
                for q, row in enumerate(choices[which])
                for k, w in enumerate(row)
            ]
        )
        st.altair_chart(
            alt.Chart(cells)
            .mark_rect()
            .encode(
                x=alt.X("key:N", sort=tokens),
                y=alt.Y("query:N", sort=tokens),
                color=alt.Color("weight:Q", scale=alt.Scale(scheme="reds")),
                tooltip=["query", "key", "weight"],
            )
        )
