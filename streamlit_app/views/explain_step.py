"""Explain this step: attribute a recorded action to the parts of its prompt (instructions,
tips, history, observation, admissible list), see the prompt's token heatmap in those
sections, and what removing each tip does.

The analysis is `agents.explain_step.explain_step`, with any attribution method of the
registry (`agents.explain_step.step_methods`); `streamlit_app.step_explanation` shows it.

Deep link: `/explain-step?episode=ID&step=N`.
"""

from __future__ import annotations

import streamlit as st

from agents.explain_step import explain_step, step_methods
from streamlit_app.common import (
    play_runs_and_linked_episode,
    query,
    query_param,
    select,
    store,
)
from streamlit_app.step_explanation import show_step_explanation
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, load_model
from workbench.store import dashboard
from workbench.store import tips as tips_store

st.title("Explain this step")


@st.cache_resource(show_spinner="loading the model ...")
def _model(name: str) -> LoadedModel:
    return load_model(name, progress=False)


runs, linked_episode, linked = play_runs_and_linked_episode()
names = {r["id"]: r["name"] for r in runs}
agents_of = {r["id"]: r["agents"] or "" for r in runs}
# LLM runs first: only their steps have a decision to explain.
run_ids = sorted(names, key=lambda r: "llm" not in agents_of[r].split(","))
default_run = linked["episode"]["run_id"] if linked else run_ids[0]
run_id = select(
    "run", run_ids, default_run, lambda r: f"{names[r]} ({agents_of[r]} agent)", "xs-run"
)
page = query(dashboard.episodes_page, run_id, limit=200)
episodes = {e["id"]: e for e in page.rows}
if linked and linked["episode"]["run_id"] == run_id:
    episodes.setdefault(linked_episode, {**linked["episode"], "game": linked["episode"]["game_id"]})
choices = list(episodes)
episode_id = select(
    "episode",
    choices,
    linked_episode,
    lambda i: (
        f"game {episodes[i]['game']} · trial {episodes[i]['trial']} · {episodes[i]['condition']}"
        f" · {episodes[i]['moves']} moves"
    ),
    "xs-episode",
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
    st.code(recorded["action"], language=None, wrap_lines=True)
    if recorded["prompt"] is None:
        st.warning(
            "This step has no recorded prompt (a random or expert agent chose it): there is no "
            "LLM decision to explain. Pick an episode of an llm agent."
        )

left, middle, right = st.columns(3)
method = left.selectbox("attribution method", step_methods(), key="xs-method")
objective = middle.selectbox(
    "objective", ["choice", "margin", "logprob"], key="xs-objective",
    help="choice: log p(chosen | candidates); margin: over the runner-up; logprob: the text",
)  # fmt: skip
model_name = right.text_input(
    "model (hub id, directory or .gguf; empty: the run's own model)", key="xs-model"
)

if st.button("explain this step", type="primary", key="xs-go"):
    bar = st.progress(0.0, text="loading the model ...")

    def advance(done: int, total: int) -> None:
        share = done / total if total else 0.0
        bar.progress(min(1.0, share), text=f"attributing the action: {done} of {total}")

    try:
        lm = _model(model_name) if model_name.strip() else None
        bar.progress(0.0, text="attributing the action ...")
        result = explain_step(
            store(),
            names[run_id],
            episode_id,
            step,
            method=method,
            lm=lm,
            progress=advance,
            objective=objective,
        )
        st.session_state["xs-result"] = (episode_id, step, method, result)
        bar.progress(1.0, text="done")
    except WorkbenchError as exc:
        bar.empty()
        st.error(str(exc))


saved = st.session_state.get("xs-result")
if saved and saved[:3] == (episode_id, step, method):
    result = saved[3]
    st.success(f"explained with {method}")
    show_step_explanation(
        result.segments,
        result.tips,
        result.total,
        result.explanation_id,
        params={"objective": result.objective, "value": result.value, "check": result.check},
    )
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
            f"stored result: {latest['method']} at {latest['created_at']:%Y-%m-%d %H:%M:%S} "
            f"({len(stored)} stored for this step); press the button to explain again"
        )
        show_step_explanation(
            latest["segments"],
            latest["tips"],
            latest["total"],
            latest["explanation_id"],
            params=latest["params"],
        )
