"""Runs overview: what the database holds, the runs running now (episodes done of those
planned, elapsed time, steps per second; the page refreshes itself while one runs), every
run, and success rate and normalised score by level and condition (means over games with
95% intervals) and over trials, computed as `workbench report` computes them
(`agents.report`)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import (
    LEVEL_TABLE,
    REFRESH_SECONDS,
    empty_state,
    pager,
    play_summary,
    query,
    run_colours,
    store,
)
from workbench.store import dashboard

st.title("Runs overview")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def live_line(run: dict) -> str:
    planned = run["planned"]
    done = f"{run['episodes']} of {planned}" if planned else f"{run['episodes']}"
    rate = run["steps"] / run["seconds"] if run["seconds"] else 0.0
    return (
        f"{run['name']} ({run['kind']}) is running: {done} episodes, {run['steps']:,} steps, "
        f"{duration(run['seconds'])} elapsed, {rate:.1f} steps/s"
    )


# Read afresh on every rerun (not cached): elapsed time moves even when nothing is written.
running = dashboard.live_runs(store())
st.session_state["overview-token"] = dashboard.change_token(store())


@st.fragment(run_every=REFRESH_SECONDS if running else None)
def live() -> None:
    """The runs running now; while any runs, this part re-reads every few seconds, and the
    whole page reloads when the database changed (a new episode, a run that ended)."""
    now = dashboard.live_runs(store())
    if dashboard.change_token(store()) != st.session_state.get("overview-token"):
        st.rerun(scope="app")
    if not now:
        return
    st.subheader("Running now")
    for run in now:
        share = run["episodes"] / run["planned"] if run["planned"] else 0.0
        st.progress(min(1.0, share), text=live_line(run))
    st.caption(f"refreshed every {REFRESH_SECONDS} s while a run is running")


live()

counts = query(dashboard.counts)
if not running and not any(
    counts[t] for t in ("runs", "episodes", "explanations", "probes", "tipsets")
):
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
rows = []
for r in runs.rows:
    row = {**r, **{k: figures.get(r["id"], {}).get(k) for k in shown}}
    # A run adds to its plan when it resumes or plays a further trial: never "5 / 4".
    row["progress"] = (
        f"{r['episodes']} / {max(r['planned'], r['episodes'])}"
        if r["planned"]
        else str(r["episodes"] or "")
    )
    row["duration"] = duration(r["seconds"]) + (" so far" if r["status"] == "running" else "")
    row["steps/s"] = round(r["steps"] / r["seconds"], 1) if r["steps"] and r["seconds"] else None
    rows.append(row)
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    column_order=[
        "name",
        "status",
        "kind",
        "progress",
        "success",
        "score",
        "games",
        "moves",
        "invalid_actions",
        "steps",
        "steps/s",
        "duration",
        "explanations",
        "created_at",
        "id",
    ],
    column_config={
        "name": st.column_config.TextColumn("run", pinned=True),
        "progress": st.column_config.TextColumn("episodes", help="recorded / planned"),
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

colours = run_colours([names[r] for r in chosen])
by_level = pd.DataFrame(query(play_summary, tuple(chosen), ("run", "level", "condition")))
by_level["level"] = by_level["level"].astype("Int64").astype(str)

st.subheader("By level and condition")
st.caption(
    "Each game's trials are averaged first, then games. Whiskers: 95% confidence interval "
    "over games: Wilson for the success rate, t for the score (two games or more). "
    "A black tick marks each value, so a rate of 0 shows as a tick on the axis."
)
left, right = st.columns(2)
for col, metric, title in ((left, "success", "success rate"), (right, "score", "normalised score")):
    base = alt.Chart(by_level).encode(
        x=alt.X("condition:N", title=None),
        color=alt.Color("run:N", scale=colours),
    )
    bars = base.mark_bar().encode(
        y=alt.Y(f"{metric}:Q", title=title, scale=alt.Scale(domain=[0, 1])),
        tooltip=["run", "level", "condition", "games", alt.Tooltip(f"{metric}:Q", format=".2f")],
    )
    ticks = base.mark_tick(color="black", thickness=2).encode(y=f"{metric}:Q")
    whiskers = base.mark_rule(color="black").encode(y=f"{metric}_low:Q", y2=f"{metric}_high:Q")
    col.altair_chart(
        (bars + ticks + whiskers)
        .properties(width=max(40, 480 // max(1, by_level["level"].nunique())), height=200)
        .facet(column=alt.Column("level:N", title="level"), row=alt.Row("run:N", title=None))
    )
st.dataframe(by_level[LEVEL_TABLE], hide_index=True)

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
            color=alt.Color("run:N", scale=colours),
            strokeDash=alt.StrokeDash("condition:N"),
            tooltip=[
                "run",
                "condition",
                "trial",
                "episodes",
                alt.Tooltip(f"{metric}:Q", format=".2f"),
            ],
        )
    )
