"""Episode viewer: pick a run and an episode, then walk it step by step with previous/next:
observation, action, why that action (the margin of the chosen command over the runner-up
among the scored candidates), the game's true state at that step (TextWorld facts, and
what the action changed), reward and score, the full prompt and completion (long lines
wrapped), latency and tokens, the tips in force. Invalid actions (LLM output that mapped
to no admissible command) are highlighted.

Deep link: `/episode?episode=ID&step=N` (optionally `&run=ID`).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from streamlit_app.common import (
    all_or,
    llm_call,
    pager,
    play_runs_and_linked_episode,
    query,
    query_param,
    select,
)
from workbench.store import dashboard

st.title("Episode viewer")

runs, linked, linked_view = play_runs_and_linked_episode()
if linked and linked_view is None:
    st.warning(f"No episode with id {linked!r}; pick one below.")

names = {
    r["id"]: f"{r['name']} ({r['agents']} · {r['episodes']} episodes · {r['status']})" for r in runs
}
run_ids = list(names)
default_run = linked_view["episode"]["run_id"] if linked_view else query_param("run")
run_id = select("run", run_ids, default_run, names.get, "episode-run")

with st.expander("episodes of this run", expanded=linked_view is None):
    f1, f2 = st.columns(2)
    condition = f1.selectbox(
        "condition",
        [None, *query(dashboard.conditions, run_id)],
        format_func=all_or,
        key="episode-condition",
    )
    outcome = f2.selectbox(
        "outcome", [None, "won", "lost", "max_steps"], format_func=all_or, key="episode-outcome"
    )
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
    st.dataframe(
        pd.DataFrame(page.rows),
        hide_index=True,
        column_order=["game", "level", "trial", "condition", "stop_reason", "score"]
        + ["max_score", "moves", "invalid_actions", "prompt_tokens", "seconds", "agent", "id"],
    )

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
episode_id = select("episode", choices, linked, labels.get, "episode-id")
if st.query_params.get("episode") != episode_id:
    st.query_params["episode"] = episode_id

step_total = query(dashboard.episode_view, episode_id, limit=1)
if step_total is None:
    st.warning("This episode is no longer in the database.")
    st.stop()
episode = step_total["episode"]
moves = int(episode["moves"])

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


def margin(step: dict) -> float | None:
    """How far the chosen command's score is ahead of the best other candidate's."""
    scored = {c: v for c, v in step["candidates"]}
    if step["action"] not in scored or len(scored) < 2:
        return None
    return scored[step["action"]] - max(v for c, v in scored.items() if c != step["action"])


st.subheader("Steps")
limit, offset = pager("steps", moves, default_size=25)
view = query(dashboard.episode_view, episode_id, limit=limit, offset=offset)
steps = view["steps"].rows
table = pd.DataFrame(
    {
        "step": [s["idx"] for s in steps],
        "action": [s["action"] for s in steps],
        "valid": [s["valid"] for s in steps],
        "margin": [margin(s) for s in steps],
        "reward": [s["reward"] for s in steps],
        "score": [s["score"] for s in steps],
        "done": [s["done"] for s in steps],
    }
)


def _invalid_red(row: pd.Series) -> list[str]:
    colour = "background-color: rgba(220, 40, 40, 0.25)" if not row["valid"] else ""
    return [colour] * len(row)


st.dataframe(
    table.style.apply(_invalid_red, axis=1),
    hide_index=True,
    column_config={
        "margin": st.column_config.NumberColumn(
            "margin", help="chosen command's score minus the runner-up's", format="%.3f"
        )
    },
)

# -- one step at a time ----------------------------------------------------------------
if moves == 0:
    st.stop()
if "episode-step" not in st.session_state or st.session_state.get("episode-step-of") != episode_id:
    linked_step = query_param("step")
    start = int(linked_step) if linked_step and linked_step.isdigit() else 0
    st.session_state["episode-step"] = min(start, moves - 1)
    st.session_state["episode-step-of"] = episode_id


def _move(by: int) -> None:
    st.session_state["episode-step"] = max(0, min(moves - 1, st.session_state["episode-step"] + by))


back, number, forward = st.columns([1, 2, 1], vertical_alignment="bottom")
back.button(
    "← previous step",
    on_click=_move,
    args=(-1,),
    disabled=st.session_state["episode-step"] <= 0,
    key="episode-prev",
    use_container_width=True,
)
index = int(number.number_input(f"step (0 to {moves - 1})", 0, moves - 1, key="episode-step"))
forward.button(
    "next step →",
    on_click=_move,
    args=(1,),
    disabled=index >= moves - 1,
    key="episode-next",
    use_container_width=True,
)
if st.query_params.get("step") != str(index):
    st.query_params["step"] = str(index)

pair = query(dashboard.episode_view, episode_id, limit=2, offset=index)["steps"].rows
step = pair[0]
after = pair[1]["facts"] if len(pair) > 1 else None

reward = f" · reward {step['reward']:+d}" if step["reward"] else ""
st.markdown(f"#### Step {step['idx']} of {moves}{reward} · score {step['score']}")
if not step["valid"]:
    st.error("Invalid action: the LLM's output mapped to no admissible command.")

left, right = st.columns([3, 2])
with left:
    st.markdown("**observation**")
    st.text(step["observation"])
    st.markdown("**action**")
    st.code(step["action"], language=None, wrap_lines=True)
    if step["raw_output"] is not None and step["raw_output"] != step["action"]:
        st.markdown("**raw LLM output**")
        st.code(step["raw_output"], language=None, wrap_lines=True)
    st.markdown("**game feedback**")
    st.text(step["feedback"])
with right:
    if step["candidates"]:
        gap = margin(step)
        st.markdown("**why this command**: the agent's top candidates")
        if gap is not None:
            st.metric(
                "margin over the runner-up",
                f"{gap:+.3f}",
                help="chosen command's score (log-probability, less the repeat penalty) "
                "minus the best other command's; small means a near tie",
            )
        st.dataframe(
            pd.DataFrame(
                [
                    {"command": c, "score": v, "chosen": c == step["action"]}
                    for c, v in step["candidates"]
                ]
            ),
            hide_index=True,
        )
    elif step["prompt"] is not None:
        st.caption("(this agent generated its command: no candidate scores were kept)")
    if step["latency_s"] is not None:
        st.caption(
            f"LLM call: {step['latency_s']:.2f} s · {step['prompt_tokens'] or 0} prompt tokens"
            f" · {step['completion_tokens'] or 0} completion tokens"
        )
    st.markdown("**game state at this step** (TextWorld facts before the action)")
    facts = step["facts"] or []
    if after is not None:
        added = sorted(set(after) - set(facts))
        removed = sorted(set(facts) - set(after))
        if added or removed:
            st.text(
                "the action changed:\n"
                + "\n".join([f"+ {f}" for f in added] + [f"- {f}" for f in removed])
            )
        else:
            st.text("the action changed no fact")
    st.dataframe(pd.DataFrame({"fact": facts}), hide_index=True, height=220)
    st.markdown("**admissible commands**")
    st.text("\n".join(step["admissible"]))

if step["prompt"] is not None:
    with st.expander("full prompt and completion", expanded=True):
        st.code(step["prompt"], language=None, wrap_lines=True)
        st.markdown("**completion**")
        st.code(step["completion"] or "", language=None, wrap_lines=True)
if step["llm_error"]:
    st.markdown("**LLM error**")
    st.code(step["llm_error"], language=None, wrap_lines=True)
if step["prompt"] is not None and st.button("explain this step", key="episode-explain"):
    st.switch_page(
        "views/explain_step.py",
        query_params={"episode": episode_id, "step": str(step["idx"])},
    )

if view["other_calls"]:
    st.subheader("Other LLM calls of this episode")
    for call in view["other_calls"]:
        llm_call(call)
