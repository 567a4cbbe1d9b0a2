"""Run comparison: two or more runs side by side, per game (success rate, normalised score,
moves), with their overall figures by level and condition on top."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, query
from workbench.store import dashboard

st.title("Run comparison")

runs = query(dashboard.play_runs)
if len(runs) < 2:
    if runs:
        st.info("Only one run has episodes so far; record another to compare them.")
    else:
        empty_state("played episodes")
    st.stop()

names = {r["id"]: r["name"] for r in runs}
chosen = st.multiselect(
    "runs",
    list(names),
    default=list(names)[:2],
    format_func=names.get,
    key="compare-runs",
)
if len(chosen) < 2:
    st.info("Pick two runs or more.")
    st.stop()

summary = pd.DataFrame(query(dashboard.success_by_level, chosen))
st.subheader("By level and condition")
st.dataframe(
    summary[["run", "level", "condition", "n", "episodes", "success", "score", "steps_to_win"]],
    hide_index=True,
    column_config={"n": st.column_config.NumberColumn("games")},
)

per_game = pd.DataFrame(query(dashboard.compare_runs, chosen))
st.subheader("Per game")
metric = st.radio("measure", ["success", "score", "moves"], horizontal=True, key="compare-measure")
side_by_side = per_game.pivot_table(
    index=["level", "game"], columns="run", values=metric, aggfunc="first"
).reset_index()
side_by_side.columns.name = None
st.dataframe(side_by_side, hide_index=True)
st.altair_chart(
    alt.Chart(per_game)
    .mark_bar()
    .encode(
        x=alt.X("game:N", sort=alt.SortField("level")),
        xOffset="run:N",
        y=alt.Y(f"{metric}:Q"),
        color="run:N",
        tooltip=["run", "game", "level", "episodes", alt.Tooltip(f"{metric}:Q", format=".2f")],
    )
)
