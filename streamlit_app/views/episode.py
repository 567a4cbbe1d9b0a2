"""Episode viewer: pick a run and an episode, then read it step by step: observation,
action, reward, score, the full prompt and completion, the tips in force. Invalid actions
(LLM output that mapped to no admissible command) are highlighted.

Deep link: `/episode?episode=ID` (optionally `&run=ID`).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, llm_call, pager, query, query_param
from workbench.store import dashboard

st.title("Episode viewer")

runs = query(dashboard.play_runs)
if not runs:
    empty_state("played episodes")
    st.stop()

linked = query_param("episode")
linked_view = query(dashboard.episode_view, linked, limit=1) if linked else None
if linked and linked_view is None:
    st.warning(f"No episode with id {linked!r}; pick one below.")

names = {r["id"]: f"{r['name']} ({r['episodes']} episodes, {r['status']})" for r in runs}
run_ids = list(names)
default_run = linked_view["episode"]["run_id"] if linked_view else query_param("run")
run_id = st.selectbox(
    "run",
    run_ids,
    index=run_ids.index(default_run) if default_run in run_ids else 0,
    format_func=names.get,
    key="episode-run",
)

with st.expander("episodes of this run", expanded=linked_view is None):
    f1, f2 = st.columns(2)
    condition = f1.selectbox(
        "condition", [None, *query(dashboard.conditions, run_id)], key="episode-condition"
    )
    outcome = f2.selectbox("outcome", [None, "won", "lost", "max_steps"], key="episode-outcome")
    total = query(dashboard.episodes_page, run_id, limit=1, condition=condition, outcome=outcome)
    limit, offset = pager("episodes", total.total)
    page = query(
        dashboard.episodes_page,
        run_id,
        limit=limit,
        offset=offset,
        condition=condition,
        outcome=outcome,
    )
    st.dataframe(pd.DataFrame(page.rows), hide_index=True)

choices = [e["id"] for e in page.rows]
labels = {
    e["id"]: f"level {e['level']} · game {e['game']} · trial {e['trial']} · {e['condition']}"
    f" · {e['stop_reason']} {e['score']}/{e['max_score']}"
    for e in page.rows
}
if linked_view and linked_view["episode"]["run_id"] == run_id and linked not in choices:
    # A deep-linked episode stays selectable even when it is not on the listed page.
    e = linked_view["episode"]
    choices.insert(0, linked)
    labels[linked] = f"game {e['game_id']} · trial {e['trial']} · {e['condition']} (linked)"
if not choices:
    st.info("No episodes match these filters.")
    st.stop()
episode_id = st.selectbox(
    "episode",
    choices,
    index=choices.index(linked) if linked in choices else 0,
    format_func=labels.get,
    key="episode-id",
)
st.query_params["episode"] = episode_id

step_total = query(dashboard.episode_view, episode_id, limit=1)
if step_total is None:
    st.warning("This episode is no longer in the database.")
    st.stop()
episode = step_total["episode"]

outcome_text = {"won": "won", "lost": "lost", "max_steps": "step limit"}.get(
    episode["stop_reason"], episode["stop_reason"]
)
m = st.columns(6)
m[0].metric("outcome", outcome_text)
m[1].metric("score", f"{episode['score']} / {episode['max_score']}")
m[2].metric("moves", episode["moves"])
m[3].metric("invalid actions", episode["invalid_actions"])
m[4].metric("prompt tokens", f"{episode['prompt_tokens']:,}")
m[5].metric("seconds", f"{episode['seconds']:.1f}")
st.caption(
    f"run {episode['run_name']} · agent {episode['agent']} · game {episode['game_id']}"
    f" (level {episode['level']}, {episode['split']}) · trial {episode['trial']}"
    f" · condition {episode['condition']} · episode {episode['id']}"
)

st.subheader("Tips in force")
if episode["tips"]:
    st.dataframe(pd.DataFrame({"tip": episode["tips"]}), hide_index=True)
else:
    st.text("(no tips in this episode's prompt)")

st.subheader("Steps")
limit, offset = pager("steps", episode["moves"], default_size=25)
view = query(dashboard.episode_view, episode_id, limit=limit, offset=offset)
steps = view["steps"].rows

table = pd.DataFrame(
    {
        "step": [s["idx"] for s in steps],
        "action": [s["action"] for s in steps],
        "valid": [s["valid"] for s in steps],
        "reward": [s["reward"] for s in steps],
        "score": [s["score"] for s in steps],
        "done": [s["done"] for s in steps],
    }
)


def _invalid_red(row: pd.Series) -> list[str]:
    colour = "background-color: rgba(220, 40, 40, 0.25)" if not row["valid"] else ""
    return [colour] * len(row)


st.dataframe(table.style.apply(_invalid_red, axis=1), hide_index=True)

for step in steps:
    marker = " · INVALID ACTION" if not step["valid"] else ""
    reward = f" · reward {step['reward']:+d}" if step["reward"] else ""
    with st.expander(f"step {step['idx']}{reward} · score {step['score']}{marker}"):
        if not step["valid"]:
            st.error("Invalid action: the LLM's output mapped to no admissible command.")
        st.markdown("**observation**")
        st.text(step["observation"])
        st.markdown("**action**")
        st.code(step["action"], language=None)
        if step["raw_output"] is not None and step["raw_output"] != step["action"]:
            st.markdown("**raw LLM output**")
            st.code(step["raw_output"], language=None)
        st.markdown("**game feedback**")
        st.text(step["feedback"])
        if step["prompt"] is not None:
            st.markdown("**full prompt**")
            st.code(step["prompt"], language=None)
            st.markdown("**completion**")
            st.code(step["completion"] or "", language=None)
        if step["llm_error"]:
            st.markdown("**LLM error**")
            st.code(step["llm_error"], language=None)
        st.markdown("**admissible commands**")
        st.text("\n".join(step["admissible"]))
        if st.button("explain this step", key=f"explain-{step['idx']}"):
            st.switch_page(
                "views/explain_step.py",
                query_params={"episode": episode_id, "step": str(step["idx"])},
            )

if view["other_calls"]:
    st.subheader("Other LLM calls of this episode")
    for call in view["other_calls"]:
        llm_call(call)
