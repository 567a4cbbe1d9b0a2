"""Mistakes: which of a run's decisions were wrong, judged against TextWorld's winning plan
(`agents.mistakes`, as `workbench mistakes` reports them): the episodes not won with their
first mistake, mistake rates by level and by kind of decision, and for a chosen mistake (an
episode's first, or another of its mistakes) its stored explanations beside those of a
correct decision of the same kind (the optimal verb chosen, regret 0), to see what the wrong
decision attended to differently.

A step without a stored explanation shows the `workbench explain-step` command that makes
one. Episodes recorded before the miner are judged with a button (or `workbench mistakes`).

Deep link: `/mistakes?run=ID&episode=ID&step=N`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from agents.mistakes import JudgedStep, mine_run, mistake_report, verb
from streamlit_app.common import (
    database_path,
    empty_state,
    query,
    query_param,
    select,
    store,
)
from streamlit_app.step_explanation import show_step_explanation
from workbench.errors import WorkbenchError
from workbench.store import dashboard
from workbench.store import tips as tips_store

CHOICES = 50  # correct decisions offered to compare with

st.title("Mistakes")

runs = query(dashboard.play_runs)
if not runs:
    empty_state("played episodes")
    st.stop()
names = {r["id"]: r["name"] for r in runs}
agents_of = {r["id"]: r["agents"] or "" for r in runs}
# LLM runs first: only their decisions have explanations.
run_ids = sorted(names, key=lambda r: "llm" not in agents_of[r].split(","))
run_id = select(
    "run", run_ids, query_param("run"), lambda r: f"{names[r]} ({agents_of[r]} agent)", "mk-run"
)
try:
    report = query(mistake_report, run_id)
except WorkbenchError as exc:
    st.error(str(exc))
    st.stop()

if report.unjudged:
    st.info(
        f"{report.unjudged} of {report.episodes} episode(s) of this run have no verdicts yet "
        "(recorded before the mistake miner): judge them by replaying their commands, here or "
        f"with `workbench mistakes --run {names[run_id]} --db {database_path()}`."
    )
    if st.button("judge them now", key="mk-mine"):
        try:
            with st.spinner("replaying episodes ..."):
                mine_run(store(), run_id)
            st.rerun()
        except WorkbenchError as exc:
            st.error(str(exc))

left, middle, right = st.columns(3)
left.metric("decisions judged", report.decisions)
middle.metric("mistakes", report.mistakes)
if report.decisions:
    rate = report.rate
    right.metric(
        "mistake rate [95% CI]",
        f"{rate.mean:.0%} [{rate.low:.0%}, {rate.high:.0%}]",
    )

st.subheader("Episodes not won, with their first mistake")
failed = [f for f in report.failed if f.first_mistake is not None]
if not report.failed:
    st.text("every judged episode was won")
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "episode": f.episode_id,
                    "game": f.game,
                    "level": f.level,
                    "outcome": f.outcome,
                    "moves": f.moves,
                    "mistakes": f.mistakes,
                    "first mistake at": f.first_mistake.step if f.first_mistake else None,
                    "chosen": f.first_mistake.chosen if f.first_mistake else "",
                    "optimal": f.first_mistake.optimal_command if f.first_mistake else "",
                    "regret": f.first_mistake.regret if f.first_mistake else None,
                }
                for f in report.failed
            ]
        ),
        hide_index=True,
    )

by_level, by_kind = st.columns(2)
by_level.subheader("By level")
by_level.dataframe(
    pd.DataFrame(
        [
            {
                "level": r.level,
                "decisions": r.decisions,
                "mistakes": r.mistakes,
                "rate": r.rate.mean,
                "low": r.rate.low,
                "high": r.rate.high,
            }
            for r in report.by_level
        ]
    ),
    hide_index=True,
)
by_kind.subheader("By kind of decision")
by_kind.caption(
    "the optimal command's verb against the verb chosen; rate: the share of the decisions "
    "whose optimal verb it is"
)
by_kind.dataframe(
    pd.DataFrame(
        [
            {
                "optimal verb": r.optimal_verb,
                "chosen verb": r.chosen_verb,
                "mistakes": r.mistakes,
                "decisions": r.decisions,
                "rate": r.rate.mean,
                "low": r.rate.low,
                "high": r.rate.high,
            }
            for r in report.by_kind
        ]
    ),
    hide_index=True,
)

if not failed:
    st.stop()

st.subheader("A mistake beside a correct decision of the same kind")
episodes = {f.episode_id: f for f in failed}
episode_id = select(
    "episode not won",
    list(episodes),
    query_param("episode"),
    lambda i: (
        f"{i} · game {episodes[i].game} · level {episodes[i].level} · {episodes[i].outcome}"
        f" · first mistake at step {episodes[i].first_mistake.step}"
    ),
    "mk-episode",
)
mistakes = [s for s in report.steps if s.episode_id == episode_id and s.mistake]
by_step = {s.step: s for s in mistakes}
linked_step = query_param("step")
step = select(
    "mistake",
    list(by_step),
    int(linked_step) if linked_step and linked_step.isdigit() else mistakes[0].step,
    lambda n: (
        f"step {n}: {by_step[n].chosen} (optimal: {by_step[n].optimal_command})"
        + (" · the first" if n == mistakes[0].step else "")
    ),
    "mk-step",
)
mistake = by_step[step]
optimal_verb = verb(mistake.optimal_command)
correct = report.correct_decisions(optimal_verb)[:CHOICES]


def command_line(judged: JudgedStep) -> str:
    return (
        f"workbench explain-step --run {names[run_id]} --episode {judged.episode_id}"
        f" --step {judged.step} --db {database_path()}"
    )


def decision(judged: JudgedStep, key: str) -> None:
    """A judged step: what was chosen and what was optimal, then its latest stored
    explanation, or the command that makes one."""
    st.markdown("**chosen**")
    st.code(judged.chosen, language=None, wrap_lines=True)
    st.markdown("**optimal**")
    st.code(judged.optimal_command or "", language=None, wrap_lines=True)
    st.page_link(
        "views/episode.py",
        label=f"step {judged.step} in the episode viewer",
        query_params={"episode": judged.episode_id, "step": str(judged.step)},
    )
    stored = [
        s
        for s in query(tips_store.list_step_explanations, judged.episode_id, judged.step)
        if s["method"] != "activation_patching"
    ]
    if stored:
        latest = stored[0]
        st.caption(
            f"stored explanation: {latest['method']} at {latest['created_at']:%Y-%m-%d %H:%M:%S}"
        )
        show_step_explanation(
            latest["segments"],
            latest["tips"],
            latest["total"],
            latest["explanation_id"],
            key,
            params=latest["params"],
        )
    elif judged.llm:
        st.text("no explanation stored for this step; make one with")
        st.code(command_line(judged), language="bash", wrap_lines=True)
    else:
        st.text("a random or expert agent chose it: there is no LLM decision to explain")


wrong, right_side = st.columns(2)
with wrong:
    cost = "lost the game" if mistake.regret is None else f"regret +{mistake.regret}"
    st.markdown(f"#### The mistake: step {mistake.step} ({cost})")
    decision(mistake, "mk-target-mistake")
with right_side:
    st.markdown("#### A correct decision of the same kind")
    st.text(f"optimal verb: {optimal_verb}, chosen, regret 0")
    if not correct:
        st.info(
            "This run has no correct decision of this kind (the optimal verb chosen, regret 0) "
            "to compare with."
        )
    else:
        chosen = select(
            "correct decision",
            list(range(len(correct))),
            0,
            lambda i: (
                f"episode {correct[i].episode_id} · step {correct[i].step}"
                + (" · explained" if correct[i].explanations else "")
            ),
            "mk-correct",
        )
        decision(correct[chosen], "mk-target-correct")
