"""Explanations: the token heatmap of a chosen target token (wrapped like the input, in
prompt sections for an agent's step, with a colour scale), the method's parameters, its
warnings (an integrated-gradients result that missed completeness is flagged above its
scores, with what to do), faithfulness metrics labelled with the better direction and set
beside a random attribution of the same input, their deletion/insertion curves, and
attention maps for the attention methods.

Deep link: `/explanations?explanation=ID`.
"""

from __future__ import annotations

import math

import altair as alt
import pandas as pd
import streamlit as st

from explainers.explanation import Explanation
from streamlit_app.common import (
    all_or,
    empty_state,
    explanation_label,
    explanation_warnings,
    heatmap,
    metric_label,
    metrics_table,
    pager,
    pick,
    query,
    visible,
    with_model_labels,
)
from workbench.store import dashboard, explanations

st.title("Explanations")

methods = query(explanations.explanation_methods)
if not methods:
    empty_state("explanations")
    st.stop()

method = st.selectbox("method", [None, *methods], format_func=all_or, key="exp-method")
first = query(dashboard.explanations_page, limit=1, method=method)
limit, offset = pager("explanations", first.total, default_size=10)
page = query(dashboard.explanations_page, limit=limit, offset=offset, method=method)
st.dataframe(
    pd.DataFrame(with_model_labels(page.rows)),
    hide_index=True,
    column_order=["method", "input_text", "target_text", "model", "max_abs_delta", "metrics"]
    + ["n_input_tokens", "seconds", "created_at", "id"],
    column_config={
        "input_text": st.column_config.TextColumn("input", width="large"),
        "target_text": st.column_config.TextColumn("target"),
        "max_abs_delta": st.column_config.NumberColumn(
            "|completeness delta|", help="largest over targets; IG only", format="%.4f"
        ),
    },
)

labels = {e["id"]: explanation_label(e) for e in page.rows}
exp_id, _ = pick("explanation", labels, key="exp-id", param="explanation")
detail = query(dashboard.explanation_detail, exp_id)
if detail is None:
    st.warning(f"No explanation with id {exp_id!r}.")
    st.stop()
record, metrics = detail["explanation"], detail["metrics"]
if record.get("category") == "causal":
    st.info("A patching result: its rows are layers, not target tokens.")
    st.page_link(
        "views/patching.py",
        label="open it as a layer-by-position heatmap",
        query_params={"explanation": exp_id},
    )
    st.stop()
exp = Explanation.from_dict(record)

st.caption(
    f"{exp.method} ({exp.category}) on {exp.model_label} · {exp.seconds:.2f} s"
    f" · {len(exp.input_tokens)} input tokens · {len(exp.target_tokens)} target(s)"
)
warnings = explanation_warnings(exp, "`--steps auto`")
if warnings:
    st.warning("\n\n".join(warnings))
left, right = st.columns(2)
with left:
    st.markdown("**input**")
    st.text(exp.input_text)
with right:
    st.markdown("**parameters**")
    st.json({"baseline": exp.baseline, "aggregation": exp.aggregation, **exp.params})

st.subheader("Token heatmap")
st.caption(
    "Red pushes towards the target token, blue away; hover a token for its score. "
    "⏎ marks a line break of the input."
)
heatmap(exp, key="exp-target")
with st.expander("scores as a table"):
    targets = exp.target_tokens or [""]
    st.dataframe(
        pd.DataFrame(
            exp.scores.T,
            index=[f"{i}: {visible(t)}" for i, t in enumerate(exp.input_tokens)],
            columns=[f"{i + 1}: {visible(t)}" for i, t in enumerate(targets)],
        )
    )

st.subheader("Faithfulness and plausibility")
if not metrics:
    st.text(f"(no metrics yet: run `workbench evaluate --explanation {exp_id}`)")
else:
    means = {m["name"]: m["value"] for m in metrics if m["row"] is None}
    reference = query(dashboard.random_reference, exp_id) if exp.method != "random" else None
    st.dataframe(
        pd.DataFrame(metrics_table(means, reference["metrics"] if reference else None)),
        hide_index=True,
    )
    if reference is None and exp.method != "random":
        st.caption(
            "No random attribution of this input is stored to compare with: "
            f"`workbench compare --methods {exp.method} --text ... --target ... --db ...` "
            "stores one beside the method's own."
        )
    per_row = pd.DataFrame([m for m in metrics if m["row"] is not None])
    if not per_row.empty:
        st.dataframe(
            per_row.pivot_table(index="row", columns="name", values="value", aggfunc="first"),
        )
    curves = [
        {
            "curve": f"{m['name'].removesuffix('_auc')} ({metric_label(m['name'])})",
            "target": m["row"],
            "fraction": f,
            "value": v,
        }
        for m in metrics
        if m["row"] is not None and "curve" in m["details"]
        for f, v in zip(m["details"]["curve"]["fractions"], m["details"]["curve"]["values"])
    ]
    if curves:
        st.markdown(
            "deletion and insertion curves (model output as tokens are removed / added "
            "in order of attribution; the area under deletion: lower is better, under "
            "insertion: higher is better)"
        )
        st.altair_chart(
            alt.Chart(pd.DataFrame(curves))
            .mark_line(point=True)
            .encode(
                x=alt.X("fraction:Q", title="fraction of tokens"),
                y=alt.Y("value:Q", title="target probability"),
                color=alt.Color("curve:N", legend=alt.Legend(orient="bottom", labelLimit=400)),
                strokeDash="target:N",
                tooltip=["curve", "target", "fraction", "value"],
            ),
            use_container_width=True,
        )

extras = exp.extras or {}
if exp.category == "attention" and extras.get("tokens"):
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
        a, b, c = st.columns(3)
        which = a.selectbox("map", list(choices), key="attention-map")
        scaling = b.radio(
            "colour scale",
            ["linear", "per query row", "log"],
            horizontal=True,
            key="attention-scale",
            help="per query row: each row divided by its largest weight; log: log10 of "
            "the weight, so that small weights are told apart",
        )
        drop_sink = c.toggle(
            "hide the first token (attention sink)",
            key="attention-sink",
            help="most heads park attention on the first token; hiding it gives the "
            "other keys the whole colour range",
        )
        matrix = choices[which]
        start = 1 if drop_sink and len(tokens) > 1 else 0
        cells = []
        for q, weights in enumerate(matrix):
            if q < start:
                continue
            shown = weights[start:]
            top = max(shown[: q + 1 - start], default=0.0) or 1.0
            for k, w in enumerate(shown, start=start):
                masked = k > q
                if scaling == "per query row":
                    value = w / top
                elif scaling == "log":
                    value = math.log10(max(w, 1e-6))
                else:
                    value = w
                cells.append(
                    {
                        "query": tokens[q],
                        "key": tokens[k],
                        "weight": w,
                        "shown": None if masked else value,
                        "masked": masked,
                    }
                )
        frame = pd.DataFrame(cells)
        order = tokens[start:]
        side = max(220, min(640, 22 * len(order)))
        base = alt.Chart(frame).encode(
            x=alt.X("key:N", sort=order, title="key (attended to)"),
            y=alt.Y("query:N", sort=order, title="query (attending)"),
        )
        st.caption("grey hatched cells: the causal mask (a token cannot attend to later tokens)")
        st.altair_chart(
            (
                base.transform_filter("datum.masked")
                .mark_rect(color="#e6e6e6", stroke="#c8c8c8", strokeDash=[2, 2])
                .encode(tooltip=["query", "key", alt.Tooltip("masked:N", title="masked")])
                + base.transform_filter("!datum.masked")
                .mark_rect()
                .encode(
                    color=alt.Color(
                        "shown:Q",
                        title={"linear": "weight", "per query row": "weight / row max"}.get(
                            scaling, "log10 weight"
                        ),
                        scale=alt.Scale(scheme="reds"),
                    ),
                    tooltip=["query", "key", alt.Tooltip("weight:Q", format=".4f")],
                )
            ).properties(width=side, height=side)
        )
