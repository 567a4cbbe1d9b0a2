"""Run comparison: two or more runs side by side, per game (success rate, normalised score,
moves), with their overall figures by level and condition on top and a paired test of two
runs on the games both played (`agents.report.compare`)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import LEVEL_TABLE, empty_state, play_summary, query, run_comparison
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

summary = pd.DataFrame(query(play_summary, tuple(chosen), ("run", "level", "condition")))
st.subheader("By level and condition")
st.dataframe(
    summary[LEVEL_TABLE],
    hide_index=True,
)

st.subheader("Paired test")
left, right = st.columns(2)
run_a = left.selectbox("run A", chosen, index=0, format_func=names.get, key="compare-a")
run_b = right.selectbox("run B", chosen, index=1, format_func=names.get, key="compare-b")
if run_a == run_b:
    st.text("(pick two different runs)")
else:
    paired = query(run_comparison, run_a, run_b)
    st.caption(
        "B minus A on the game trials both runs played under the same condition: McNemar's "
        "exact test for success, a paired t-test for the normalised score (95% intervals)."
    )
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "measure": measure,
                    "test": t["test"],
                    "pairs": t["n"],
                    "B - A": t["difference"],
                    "low": t["low"],
                    "high": t["high"],
                    "p": t["p_value"],
                }
                for measure, t in paired.items()
            ]
        ),
        hide_index=True,
    )

per_game = pd.DataFrame(query(play_summary, tuple(chosen), ("level", "game", "run")))
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
