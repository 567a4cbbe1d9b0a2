"""Explain this step: attribute a recorded action to the parts of its prompt (instructions,
tips, history, observation, admissible list), see the prompt's token heatmap in those
sections, and what removing each tip does.

The analysis is `agents.explain_step.explain_step`, with any attribution method of the
registry (`agents.explain_step.step_methods`). The tips segment's total
is its tips' masses plus its scaffold (the "Tips:" header, bullets and line breaks), shown
as its own row so the table adds up. An attribution that missed completeness (integrated
gradients with too few steps) is flagged above its numbers.

Deep link: `/explain-step?episode=ID&step=N`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from agents.explain_step import explain_step, step_methods
from explainers.explanation import Explanation
from streamlit_app.common import (
    explanation_warnings,
    heatmap,
    play_runs_and_linked_episode,
    query,
    query_param,
    select,
    store,
)
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel, load_model
from workbench.store import dashboard, explanations
from workbench.store import tips as tips_store

SCAFFOLD = "(tips header, bullets and line breaks)"
ADVICE = "steps auto (`workbench explain-step ... --param steps=auto`)"

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

left, right = st.columns(2)
method = left.selectbox("attribution method", step_methods(), key="xs-method")
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
            store(), names[run_id], episode_id, step, method=method, lm=lm, progress=advance
        )
        st.session_state["xs-result"] = (episode_id, step, method, result)
        bar.progress(1.0, text="done")
    except WorkbenchError as exc:
        bar.empty()
        st.error(str(exc))


def tip_rows(tips: list[dict], tips_total: float) -> pd.DataFrame:
    """Per tip: its mass and what removing it did; then the scaffold, so that the masses
    add up to the tips segment."""
    rows = [
        {
            "label": f"tip {i + 1}",
            "tip": t["tip"],
            "mass": float(t["mass"]),
            "action changes without it": bool(t["action_changed"]),
            "action without it": t.get("new_action") or "",
        }
        for i, t in enumerate(tips)
    ]
    scaffold = tips_total - sum(r["mass"] for r in rows)
    rows.append(
        {
            "label": "scaffold",
            "tip": SCAFFOLD,
            "mass": scaffold,
            "action changes without it": None,
            "action without it": "",
        }
    )
    return pd.DataFrame(rows)


def show(segments: dict[str, float], tips: list[dict], total: float, exp_id: str | None) -> None:
    """Per-segment and per-tip bars of one explain-step result, its warnings and heatmap."""
    record = query(explanations.get_explanation, exp_id) if exp_id else None
    exp = Explanation.from_dict(record) if record else None
    warnings = explanation_warnings(exp, ADVICE) if exp else []
    if warnings:
        st.warning("\n\n".join(warnings))
    st.subheader("Attribution by prompt segment")
    st.caption(
        f"total attribution of the action {total:+.4f} (the segments add up to it); "
        "red pushes towards the recorded action, blue away"
    )
    frame = pd.DataFrame({"segment": list(segments), "mass": [float(v) for v in segments.values()]})
    base = alt.Chart(frame).encode(y=alt.Y("segment:N", sort=list(segments)))
    st.altair_chart(
        base.mark_bar().encode(
            x=alt.X("mass:Q", title="attribution mass"),
            color=alt.condition("datum.mass >= 0", alt.value("#d62728"), alt.value("#1f77b4")),
            tooltip=["segment", "mass"],
        )
        + base.mark_tick(color="black", thickness=2).encode(x="mass:Q"),
        use_container_width=True,
    )
    st.dataframe(frame, hide_index=True)
    st.subheader("Per tip: attribution mass and the effect of removing it")
    if not tips:
        st.text("(no tips were in force at this step)")
    else:
        table = tip_rows(tips, float(segments.get("tips", 0.0)))
        table["removing it"] = [
            "(not a tip)"
            if changed is None
            else ("changes the action" if changed else "keeps the action")
            for changed in table["action changes without it"]
        ]
        st.caption(
            f"the tips' masses plus the scaffold make the tips segment: "
            f"{table['mass'].sum():+.4f} = {float(segments.get('tips', 0.0)):+.4f}"
        )
        st.altair_chart(
            alt.Chart(table)
            .mark_bar()
            .encode(
                x=alt.X("mass:Q", title="attribution mass"),
                y=alt.Y("label:N", sort=list(table["label"])),
                color=alt.Color(
                    "removing it:N",
                    scale=alt.Scale(
                        domain=["changes the action", "keeps the action", "(not a tip)"],
                        range=["#d62728", "#9ecae9", "#bbbbbb"],
                    ),
                ),
                tooltip=["tip", "mass", "removing it", "action without it"],
            ),
            use_container_width=True,
        )
        st.dataframe(table.drop(columns="removing it"), hide_index=True)
    if exp is not None:
        st.subheader("The prompt's tokens")
        st.caption("the step's prompt in its sections; hover a token for its score")
        heatmap(exp, key="xs-target")
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
            f"stored result: {latest['method']} at {latest['created_at']:%Y-%m-%d %H:%M:%S} "
            f"({len(stored)} stored for this step); press the button to explain again"
        )
        show(latest["segments"], latest["tips"], latest["total"], latest["explanation_id"])
