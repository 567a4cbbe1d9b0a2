"""Explain this step: attribute a recorded action to the parts of its prompt (instructions,
tips, history, observation, admissible list) and show what removing each tip does.

The analysis is `agents.explain_step.explain_step` from the introspective-tips feature; in
an installation without it this page says so instead of failing.

Deep link: `/explain-step?episode=ID&step=N`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, query, query_param, store
from workbench.errors import WorkbenchError
from workbench.store import dashboard
from workbench.store import tips as tips_store

METHODS = ("ig", "saliency", "input_x_gradient", "deeplift", "gradient_shap", "occlusion")

st.title("Explain this step")


def _explain_step() -> Callable[..., Any] | None:
    try:
        from agents.explain_step import explain_step
    except ImportError:
        return None
    return explain_step


@st.cache_resource(show_spinner="loading the model ...")
def _model(name: str) -> Any:
    from workbench.models import load_model

    return load_model(name, progress=False)


explain_step = _explain_step()
if explain_step is None:
    st.info(
        "Explain-step is not available in this installation yet: it comes with the "
        "introspective tips feature (`agents.explain_step`, `workbench explain-step`). "
        "The recorded episodes can still be read in the episode viewer."
    )
    st.stop()

runs = query(dashboard.play_runs)
if not runs:
    empty_state("played episodes")
    st.stop()

linked_episode = query_param("episode")
linked = query(dashboard.episode_view, linked_episode, limit=1) if linked_episode else None
names = {r["id"]: r["name"] for r in runs}
run_ids = list(names)
default_run = linked["episode"]["run_id"] if linked else None
run_id = st.selectbox(
    "run",
    run_ids,
    index=run_ids.index(default_run) if default_run in run_ids else 0,
    format_func=names.get,
    key="xs-run",
)
page = query(dashboard.episodes_page, run_id, limit=200)
episodes = {e["id"]: e for e in page.rows}
if linked and linked["episode"]["run_id"] == run_id:
    episodes.setdefault(linked_episode, {**linked["episode"], "game": linked["episode"]["game_id"]})
choices = list(episodes)
episode_id = st.selectbox(
    "episode",
    choices,
    index=choices.index(linked_episode) if linked_episode in choices else 0,
    format_func=lambda i: (
        f"game {episodes[i]['game']} · trial {episodes[i]['trial']} · {episodes[i]['condition']}"
        f" · {episodes[i]['moves']} moves"
    ),
    key="xs-episode",
)
moves = int(episodes[episode_id]["moves"])
linked_step = query_param("step")
default_step = int(linked_step) if linked_step and linked_step.isdigit() else 0
step = int(
    st.number_input(
        "step", 0, max(0, moves - 1), min(default_step, max(0, moves - 1)), key="xs-step"
    )
)
view = query(dashboard.episode_view, episode_id, limit=1, offset=step)
recorded = view["steps"].rows[0] if view and view["steps"].rows else None
if recorded is not None:
    st.markdown("**recorded action**")
    st.code(recorded["action"], language=None)
    if recorded["prompt"] is None:
        st.warning(
            "This step has no recorded prompt (a random or expert agent chose it): there is no "
            "LLM decision to explain. Pick an episode of an llm agent."
        )

left, right = st.columns(2)
method = left.selectbox("attribution method", METHODS, key="xs-method")
model_name = right.text_input(
    "model (hub id, directory or .gguf; empty: the run's own model)", key="xs-model"
)

if st.button("explain this step", type="primary", key="xs-go"):
    try:
        lm = _model(model_name) if model_name.strip() else None
        with st.spinner("attributing the action ..."):
            result = explain_step(store(), names[run_id], episode_id, step, method=method, lm=lm)
        st.session_state["xs-result"] = (episode_id, step, method, result)
    except WorkbenchError as exc:
        st.error(str(exc))


def show(segments: dict[str, float], tips: list[dict], total: float, exp_id: str | None) -> None:
    """Per-segment and per-tip bars of one explain-step result."""
    st.subheader("Attribution by prompt segment")
    st.caption(f"total attribution of the action {total:+.4f}")
    frame = pd.DataFrame({"segment": list(segments), "mass": [float(v) for v in segments.values()]})
    st.altair_chart(
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("mass:Q", title="attribution mass"),
            y=alt.Y("segment:N", sort=list(segments)),
            color=alt.condition("datum.mass >= 0", alt.value("#d62728"), alt.value("#1f77b4")),
            tooltip=["segment", "mass"],
        )
    )
    st.dataframe(frame, hide_index=True)
    st.subheader("Per tip: attribution mass and the effect of removing it")
    if not tips:
        st.text("(no tips were in force at this step)")
    else:
        table = pd.DataFrame(
            [
                {
                    "label": f"tip {i + 1}",
                    "tip": t["tip"],
                    "mass": float(t["mass"]),
                    "action changes without it": bool(t["action_changed"]),
                    "action without it": t.get("new_action") or "",
                }
                for i, t in enumerate(tips)
            ]
        )
        st.altair_chart(
            alt.Chart(table)
            .mark_bar()
            .encode(
                x=alt.X("mass:Q", title="attribution mass"),
                y=alt.Y("label:N", sort=list(table["label"])),
                color=alt.Color("action changes without it:N"),
                tooltip=["tip", "mass", "action changes without it", "action without it"],
            )
        )
        st.dataframe(table, hide_index=True)
    if exp_id:
        st.page_link(
            "views/explanations.py",
            label="the full token-level explanation",
            query_params={"explanation": exp_id},
        )


saved = st.session_state.get("xs-result")
if saved and saved[:3] == (episode_id, step, method):
    result = saved[3]
    st.success(f"explained with {method}")
    show(result.segments, result.tips, result.total, result.explanation_id)
else:
    stored = query(tips_store.list_step_explanations, episode_id, step)
    # Activation patching of this step (`explain-step --patch`) has its own page.
    patched = [s for s in stored if s["method"] == "activation_patching"]
    stored = [s for s in stored if s["method"] != "activation_patching"]
    for found in patched:
        st.text(f"activation patching with the edit {found['params'].get('patch', '')}")
        st.page_link(
            "views/patching.py",
            label="its layer-by-position heatmap",
            query_params={"explanation": found["explanation_id"]},
        )
    if stored:
        latest = stored[0]
        st.caption(
            f"stored result: {latest['method']} at {latest['created_at']} "
            f"({len(stored)} stored for this step); press the button to explain again"
        )
        show(latest["segments"], latest["tips"], latest["total"], latest["explanation_id"])
