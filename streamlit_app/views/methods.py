"""Methods side by side: a stored comparison (`workbench compare --db`) shows the same input
explained by each attribution method, one heatmap per method for the chosen target token,
and their faithfulness metrics, each labelled with its better direction, against the random
attribution of the same input (the floor every method should beat).

Deep link: `/methods?comparison=RUN_ID`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explainers.explanation import Explanation
from explainers.heatmap import explanation_heatmap_html
from explainers.metrics import HIGHER_IS_BETTER, better
from streamlit_app.common import explanation_warnings, pick, query, target_row
from workbench.store import dashboard

st.title("Methods side by side")

comparisons = query(dashboard.comparison_runs)
if not comparisons:
    st.info(
        "No stored method comparisons yet. Compare attribution methods on one input and store "
        "the result, for example:\n\n```bash\nworkbench compare --methods ig,occlusion,lime "
        '--text "the milk is in the fridge Q" --target " milk" --db workbench.duckdb\n```'
    )
    st.stop()

labels = {
    c["id"]: f"{c['params'].get('text', '')[:60]!r} -> {c['params'].get('target')!r}"
    f" · {', '.join(c['params'].get('methods', []))} · {c['name']}"
    for c in comparisons
}
run_id, _ = pick("comparison", labels, key="methods-run", param="comparison")
entries = query(dashboard.comparison_detail, run_id)
if not entries:
    st.warning(f"No stored comparison with id {run_id!r}.")
    st.stop()
explained = [(Explanation.from_dict(e["explanation"]), e["metrics"]) for e in entries]
first = explained[0][0]
st.markdown("**input**")
st.text(first.input_text)
st.caption(f"model {first.model_label} · {len(first.input_tokens)} {first.aggregation}s")

reference = next((m for exp, m in explained if exp.method == "random"), None)
names = list(dict.fromkeys(n for _, m in explained for n in m))
rows = []
for exp, values in explained:
    row = {"method": exp.method}
    for name in names:
        row[f"{name} ({better(name)})" if name in HIGHER_IS_BETTER else name] = values.get(name)
    rows.append(row)
st.subheader("Faithfulness against the random baseline")
st.caption(
    "Each column says which direction is better. A method's cell is green where it beats "
    "the random attribution of the same input, red where it does not."
)


def _against_random(row: pd.Series) -> list[str]:
    styles = []
    for column, value in row.items():
        name = column.split(" (")[0]
        base = (reference or {}).get(name)
        if column == "method" or row["method"] == "random" or base is None or value is None:
            styles.append("")
            continue
        if name not in HIGHER_IS_BETTER:
            styles.append("")
            continue
        wins = value > base if HIGHER_IS_BETTER[name] else value < base
        styles.append(
            "background-color: rgba(40,160,60,0.25)"
            if wins
            else "background-color: rgba(220,40,40,0.25)"
        )
    return styles


table = pd.DataFrame(rows)
st.dataframe(
    table.style.apply(_against_random, axis=1),
    hide_index=True,
    column_config={"method": st.column_config.TextColumn(pinned=True)},
)

row = target_row(first, "methods-target")
st.subheader(f"Heatmaps for target {(first.target_tokens or [''])[row]!r}")
for exp, _ in explained:
    st.markdown(f"**{exp.method}**" + (" (the floor to beat)" if exp.method == "random" else ""))
    warnings = explanation_warnings(exp, "`--param ig.steps=auto`")
    if warnings:
        st.warning("\n\n".join(warnings))
    st.html(explanation_heatmap_html(exp, row))
    if exp.id:
        st.page_link(
            "views/explanations.py",
            label=f"{exp.method}: its curves and per-target metrics",
            query_params={"explanation": exp.id},
        )
