"""Run comparison: two or more runs side by side, per game (success rate, normalised score,
moves), with their overall figures by level and condition on top, a paired test of two runs
on the games both played, and their per-game paired differences with 95% intervals
(`agents.report.compare`).

Deep link: `/compare?runs=ID,ID`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import (
    LEVEL_TABLE,
    empty_state,
    per_game_comparison,
    play_summary,
    query,
    query_param,
    run_colours,
    run_comparison,
)
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
linked = [r for r in (query_param("runs") or "").split(",") if r in names]
chosen = st.multiselect(
    "runs",
    list(names),
    default=linked or list(names)[:2],
    format_func=names.get,
    key="compare-runs",
)
if len(chosen) < 2:
    st.info("Pick two runs or more.")
    st.stop()
colours = run_colours([names[r] for r in chosen])

summary = pd.DataFrame(query(play_summary, tuple(chosen), ("run", "level", "condition")))
st.subheader("By level and condition")
st.dataframe(
    summary[LEVEL_TABLE],
    hide_index=True,
    column_config={"run": st.column_config.TextColumn(pinned=True)},
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
    per_game = pd.DataFrame(query(per_game_comparison, run_a, run_b))
    st.markdown(f"**B - A per game** ({names[run_b]} minus {names[run_a]})")
    if per_game.empty:
        st.text("(the two runs played no game in common)")
    else:
        st.caption(
            "Each game's trials under the same condition are the pairs; whiskers: 95% "
            "interval (a game needs two pairs or more for one). 0 = no difference."
        )
        base = alt.Chart(per_game).encode(
            y=alt.Y("game:N", sort=alt.SortField("level"), title=None),
        )
        zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(color="grey").encode(x="x:Q")
        chart = (
            base.mark_rule().encode(x=alt.X("low:Q", title="B - A"), x2="high:Q")
            + base.mark_point(filled=True, size=60).encode(
                x="B - A:Q",
                color=alt.Color("measure:N"),
                tooltip=["game", "level", "measure", "pairs", "B - A", "low", "high"],
            )
            + zero
        ).properties(height=max(80, 22 * per_game["game"].nunique()))
        st.altair_chart(
            chart.facet(column=alt.Column("measure:N", title=None)), use_container_width=False
        )
        with st.expander("per-game differences as a table"):
            st.dataframe(per_game, hide_index=True)

per_game_runs = pd.DataFrame(query(play_summary, tuple(chosen), ("level", "game", "run")))
st.subheader("Per game")
metric = st.radio("measure", ["success", "score", "moves"], horizontal=True, key="compare-measure")
side_by_side = per_game_runs.pivot_table(
    index=["level", "game"], columns="run", values=metric, aggfunc="first"
).reset_index()
side_by_side.columns.name = None
st.dataframe(side_by_side, hide_index=True)
base = alt.Chart(per_game_runs).encode(
    x=alt.X("game:N", sort=alt.SortField("level")),
    xOffset="run:N",
    color=alt.Color("run:N", scale=colours),
)
st.caption("A black tick marks each value, so a zero shows on the axis.")
st.altair_chart(
    base.mark_bar().encode(
        y=alt.Y(f"{metric}:Q"),
        tooltip=["run", "game", "level", "episodes", alt.Tooltip(f"{metric}:Q", format=".2f")],
    )
    + base.mark_tick(color="black", thickness=2).encode(y=f"{metric}:Q"),
    use_container_width=True,
)
