"""Probing results: linear probes per layer with control tasks (Hewitt & Liang 2019):
accuracy (higher is better), control accuracy (lower is better), selectivity = accuracy -
control accuracy (higher is better) and the majority-label baseline, by layer. A layer
whose selectivity is not above zero, or whose accuracy does not beat the majority
baseline, is flagged: there the probe shows memorisation, not what the layer encodes.

Deep link: `/probing?probe=ID`.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from explainers.metrics import PROBE_METRICS, better
from streamlit_app.common import empty_state, pager, pick, query, with_model_labels
from workbench.models import model_label
from workbench.store import dashboard, probes

st.title("Probing")

first = query(dashboard.probes_page, limit=1)
if not first.total:
    empty_state("probe results")
    st.info("Train probes with `workbench probe --task textworld-state:carried --games DIR`.")
    st.stop()

limit, offset = pager("probes", first.total, default_size=10)
page = query(dashboard.probes_page, limit=limit, offset=offset)
rows = with_model_labels(page.rows)
st.dataframe(pd.DataFrame(rows), hide_index=True)

labels = {p["id"]: f"{p['task']} · {p['model']} · {p['id']}" for p in rows}
probe_id, _ = pick("probe", labels, key="probe-id", param="probe")
probe = query(probes.get_probe, probe_id)
if probe:
    st.caption(f"model {model_label(probe['model'], probe['model_info'])}")
layers = pd.DataFrame(probe["layers"] if probe else [])
if layers.empty:
    st.warning("This probe has no per-layer results.")
    st.stop()

unselective = layers[layers["selectivity"] <= 0]["layer"].tolist()
if unselective:
    st.warning(
        f"Selectivity is zero or negative at layer(s) {', '.join(map(str, unselective))}: "
        "the probe fits the control task (random labels per entity) as well as the real one, "
        "so its accuracy there reflects memorisation, not what the layer encodes. Read only "
        "layers with positive selectivity; more examples or a simpler probe may help."
    )
below = layers[layers["accuracy"] <= layers["majority"]]["layer"].tolist()
if below:
    st.warning(
        f"Accuracy does not beat always answering the majority label at layer(s) "
        f"{', '.join(map(str, below))}."
    )

st.caption(
    " · ".join(f"{m}: {better(m)} is better" for m in PROBE_METRICS)
    + " · majority: the accuracy of always answering the commonest label (the floor)"
)
long = layers.melt(
    id_vars="layer",
    value_vars=["accuracy", "control_accuracy", "selectivity", "majority"],
    var_name="measure",
)
long["measure"] = [
    m if m == "majority" else f"{m} ({better(m)} is better)" for m in long["measure"]
]
chart = (
    alt.Chart(long)
    .mark_line(point=True)
    .encode(
        x="layer:Q",
        y=alt.Y("value:Q"),
        color=alt.Color("measure:N", legend=alt.Legend(orient="bottom", labelLimit=300)),
        tooltip=["layer", "measure", "value"],
    )
)
zero = alt.Chart(pd.DataFrame({"value": [0.0]})).mark_rule(color="grey").encode(y="value:Q")
st.altair_chart(chart + zero, use_container_width=True)


def _negative_red(row: pd.Series) -> list[str]:
    colour = "background-color: rgba(220, 40, 40, 0.25)" if row["selectivity"] <= 0 else ""
    return [colour] * len(row)


st.dataframe(layers.style.apply(_negative_red, axis=1), hide_index=True)
