"""Runs overview: what the database holds, every run, and success rate and normalised score
by level and condition (means over games with 95% intervals) and over trials, computed as
`workbench report` computes them (`agents.report`)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import LEVEL_TABLE, empty_state, pager, play_summary, query
from workbench.store import dashboard

st.title("Runs overview")

counts = query(dashboard.counts)
if not any(counts[t] for t in ("runs", "episodes", "explanations", "probes", "tipsets")):
    empty_state("runs, episodes or explanations")
    st.stop()

cols = st.columns(5)
for col, (label, table) in zip(
    cols,
    [
        ("runs", "runs"),
        ("episodes", "episodes"),
        ("steps", "steps"),
        ("LLM calls", "llm_calls"),
        ("explanations", "explanations"),
    ],
):
    col.metric(label, f"{counts[table]:,}")

st.subheader("Runs")
first = query(dashboard.runs_page, limit=1)
limit, offset = pager("runs", first.total)
runs = query(dashboard.runs_page, limit=limit, offset=offset)
played_here = tuple(r["id"] for r in runs.rows if r["episodes"])
figures = {r["run_id"]: r for r in query(play_summary, played_here, ("run_id",))}
shown = ("games", "success", "score", "moves", "invalid_actions")
runs_table = pd.DataFrame(
    [{**r, **{k: figures.get(r["id"], {}).get(k) for k in shown}} for r in runs.rows]
)
st.dataframe(
    runs_table,
    hide_index=True,
    column_config={
        "success": st.column_config.ProgressColumn("success", min_value=0, max_value=1),
        "score": st.column_config.ProgressColumn("norm. score", min_value=0, max_value=1),
    },
)

played = query(dashboard.play_runs)
if not played:
    empty_state("played episodes")
    st.stop()

names = {r["id"]: r["name"] for r in played}
chosen = st.multiselect(
    "runs to chart",
    list(names),
    default=list(names)[:3],
    format_func=lambda rid: names[rid],
    key="overview-runs",
)
if not chosen:
    st.info("Pick at least one run to chart.")
    st.stop()

by_level = pd.DataFrame(query(play_summary, tuple(chosen), ("run", "level", "condition")))
by_level["level"] = by_level["level"].astype("Int64").astype(str)

st.subheader("By level and condition")
st.caption(
    "Each game's trials are averaged first, then games. Whiskers: 95% confidence interval "
    "over games: Wilson for the success rate, t for the score (two games or more)."
)
left, right = st.columns(2)
for col, metric, title in ((left, "success", "success rate"), (right, "score", "normalised score")):
    base = alt.Chart(by_level).encode(
        x=alt.X("level:N", title="level"),
        xOffset="condition:N",
        color=alt.Color("condition:N"),
    )
    bars = base.mark_bar().encode(
        y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(domain=[0, 1])),
        tooltip=["run", "level", "condition", "games", alt.Tooltip(f"{metric}:Q", format=".2f")],
    )
    whiskers = base.mark_rule().encode(y=f"{metric}_low:Q", y2=f"{metric}_high:Q")
    col.altair_chart((bars + whiskers).facet(row=alt.Row("run:N", title=None)))
st.dataframe(
    by_level[LEVEL_TABLE],
    hide_index=True,
)

st.subheader("Over trials")
by_trial = pd.DataFrame(query(play_summary, tuple(chosen), ("run", "condition", "trial")))
left, right = st.columns(2)
for col, metric, title in ((left, "success", "success rate"), (right, "score", "normalised score")):
    col.altair_chart(
        alt.Chart(by_trial)
        .mark_line(point=True)
        .encode(
            x=alt.X("trial:O"),
            y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(domain=[0, 1])),
            color="condition:N",
            strokeDash="run:N",
            tooltip=[
                "run",
                "condition",
                "trial",
                "episodes",
                alt.Tooltip(f"{metric}:Q", format=".2f"),
            ],
        )
    )
