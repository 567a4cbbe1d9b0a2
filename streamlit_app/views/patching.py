"""Activation patching: a stored patching, attribution-patching or causal-tracing result as a
layer x position heatmap (layer x head for heads), with the clean and corrupted inputs and,
for an agent step, what the edit did to the chosen command.

Each cell is the normalised restoration: 0 = the corrupted run's value, 1 = the clean run's.

Deep link: `/patching?explanation=ID`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, explanation_label, pager, pick, query, visible
from workbench.store import dashboard, explanations

CAUSAL_METHODS = ("activation_patching", "attribution_patching", "causal_tracing")

st.title("Activation patching")

methods = [m for m in query(explanations.explanation_methods) if m in CAUSAL_METHODS]
if not methods:
    empty_state("patching results")
    st.info(
        "Patch with `workbench patch --clean TEXT --corrupt TEXT --target WORD`, or on an "
        'agent step with `workbench explain-step ... --patch "OLD=>NEW"`.'
    )
    st.stop()

method = st.selectbox("method", methods, key="patch-method")
first = query(dashboard.explanations_page, limit=1, method=method)
limit, offset = pager("patching", first.total, default_size=10)
page = query(dashboard.explanations_page, limit=limit, offset=offset, method=method)
st.dataframe(
    pd.DataFrame(page.rows),
    hide_index=True,
    column_order=["input_text", "target_text", "model", "n_input_tokens", "seconds"]
    + ["created_at", "id"],
    column_config={
        "input_text": st.column_config.TextColumn("clean input", width="large"),
        "target_text": st.column_config.TextColumn("target"),
    },
)

labels = {e["id"]: explanation_label(e) for e in page.rows}
exp_id, _ = pick("result", labels, key="patch-id", param="explanation")
detail = query(dashboard.explanation_detail, exp_id)
if detail is None or detail["explanation"].get("category") != "causal":
    st.warning(f"No patching result with id {exp_id!r}.")
    st.stop()
exp = detail["explanation"]
extras = exp.get("extras") or {}

st.caption(
    f"{exp['method']} of {exp.get('component')} on {exp['model']} · {exp.get('direction')} · "
    f"metric {exp.get('metric')} · {exp.get('seconds', 0):.2f} s"
)
left, middle, right = st.columns(3)
left.metric("clean value", f"{exp.get('clean_value', 0):+.4f}")
middle.metric("corrupted value", f"{exp.get('corrupt_value', 0):+.4f}")
if "exact_correlation" in extras:
    right.metric("correlation with exact patching", f"{extras['exact_correlation']:.3f}")
for warning in exp.get("warnings") or []:
    st.warning(warning)

step = extras.get("step")
if step:
    st.text(
        f"agent step {step['step']} of episode {step['episode_id']} ({step.get('run', '')})\n"
        f"edit: {extras.get('patch')}\nclean choice: {extras.get('clean_action')}\n"
        f"choice after the edit: {extras.get('corrupt_action')}"
        + (" (changed)" if extras.get("action_changed") else " (unchanged)")
    )
with st.expander("inputs"):
    st.markdown("**clean**")
    st.code(exp["input_text"], language=None)
    if exp.get("corrupt_text"):
        st.markdown("**corrupted**")
        st.code(exp["corrupt_text"], language=None)
    st.markdown("**target**")
    st.code(repr("".join(exp.get("target_tokens") or [])), language=None)

layers, scores = exp.get("layers") or [], exp["scores"]
hooks = exp.get("hook_names") or [""] * len(layers)
values = extras.get("values") or scores
if exp.get("component") == "head":
    cells = [
        {"layer": layer, "head": h, "hook": hooks[i], "restoration": s, "value": values[i][h]}
        for i, layer in enumerate(layers)
        for h, s in enumerate(scores[i])
    ]
    x, y, order = alt.X("head:O"), alt.Y("layer:O", sort="descending"), None
else:
    positions = exp.get("positions") or list(range(len(exp["input_tokens"])))
    tokens = [f"{p:>4} {visible(exp['input_tokens'][p])}" for p in positions]
    cells = [
        {
            "layer": layer,
            "position": tokens[j],
            "hook": hooks[i],
            "restoration": s,
            "value": values[i][j],
        }
        for i, layer in enumerate(layers)
        for j, s in enumerate(scores[i])
    ]
    x, y, order = alt.X("layer:O"), alt.Y("position:O", sort=tokens), tokens
frame = pd.DataFrame(cells)
st.subheader("Restoration (0 = corrupted, 1 = clean)")
st.altair_chart(
    alt.Chart(frame)
    .mark_rect()
    .encode(
        x=x,
        y=y,
        color=alt.Color(
            "restoration:Q", scale=alt.Scale(scheme="redblue", reverse=True, domainMid=0)
        ),
        tooltip=list(frame.columns),
    )
    .properties(height=max(200, 16 * (len(order) if order else len(layers))))
)
with st.expander("scores as a table"):
    st.dataframe(frame, hide_index=True)
