"""How an explained step is shown (`agents.explain_step`'s result, or one stored in
`step_explanations`): attribution per prompt segment, per tip with what removing it did,
and the prompt's token heatmap. The explain-step and mistakes pages both show them.

The tips segment's total is its tips' masses plus its scaffold (the "Tips:" header,
bullets and line breaks), shown as its own row so the table adds up. An attribution that
missed completeness (integrated gradients with too few steps) is flagged above its numbers.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explainers.explanation import Explanation
from streamlit_app.common import explanation_warnings, heatmap, query
from workbench.store import explanations

SCAFFOLD = "(tips header, bullets and line breaks)"
ADVICE = "steps auto (`workbench explain-step ... --param steps=auto`)"
OBJECTIVES = {
    "choice": "log p(chosen command | the candidates)",
    "margin": "the chosen command's score margin over the runner-up",
    "logprob": "log p(command text)",
}


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
            "effect of removing it": t.get("effect"),
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


def show_step_explanation(
    segments: dict[str, float],
    tips: list[dict],
    total: float,
    exp_id: str | None,
    key: str = "xs-target",
    params: dict | None = None,
) -> None:
    """Per-segment and per-tip bars of one explain-step result, its warnings and heatmap
    (`key`: its widgets' key, distinct for each result on a page; `params`: the stored
    row's, with the objective, its value and the completeness check)."""
    record = query(explanations.get_explanation, exp_id) if exp_id else None
    exp = Explanation.from_dict(record) if record else None
    warnings = explanation_warnings(exp, ADVICE) if exp else []
    if warnings:
        st.warning("\n\n".join(warnings))
    st.subheader("Attribution by prompt segment")
    params = params or {}
    objective = OBJECTIVES.get(params.get("objective", "logprob"), "log p(command text)")
    value = params.get("value")
    st.caption(
        f"explained: {objective}"
        + (f" = {value:+.4f}" if value is not None else "")
        + f"; total attribution {total:+.4f} (the segments add up to it); red pushes "
        "towards the recorded action, blue away"
    )
    check = params.get("check") or {}
    if check.get("exact") is not None:
        kind = "exact" if check["exact"] else "sampled (standard errors in the JSON)"
        st.caption(
            f"{kind} Shapley values over {check.get('evaluations')} coalitions: complete by "
            f"construction (gap {check.get('delta', 0.0):+.1e})"
        )
    elif check.get("delta") is not None:
        st.caption(
            f"completeness: delta {check['delta']:+.4f} of the expected change "
            f"{check.get('expected', 0.0):+.4f} ({check.get('status')})"
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
        heatmap(exp, key=key)
        st.page_link(
            "views/explanations.py",
            label="the full token-level explanation",
            query_params={"explanation": exp_id},
        )
