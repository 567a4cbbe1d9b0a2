"""Probing results: linear probes per layer with control tasks (accuracy, control accuracy,
selectivity and the majority baseline, by layer)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, pager, pick, query
from workbench.store import dashboard, probes

st.title("Probing")

first = query(dashboard.probes_page, limit=1)
if not first.total:
    empty_state("probe results")
    st.info("Train probes with `workbench probe --task textworld-state:carried --games DIR`.")
    st.stop()

limit, offset = pager("probes", first.total, default_size=10)
page = query(dashboard.probes_page, limit=limit, offset=offset)
st.dataframe(pd.DataFrame(page.rows), hide_index=True)

labels = {p["id"]: f"{p['task']} · {p['model']} · {p['id']}" for p in page.rows}
probe_id, _ = pick("probe", labels, key="probe-id", param="probe")
probe = query(probes.get_probe, probe_id)
layers = pd.DataFrame(probe["layers"] if probe else [])
if layers.empty:
    st.warning("This probe has no per-layer results.")
    st.stop()
long = layers.melt(
    id_vars="layer",
    value_vars=["accuracy", "control_accuracy", "selectivity", "majority"],
    var_name="measure",
)
st.altair_chart(
    alt.Chart(long)
    .mark_line(point=True)
    .encode(
        x="layer:Q", y=alt.Y("value:Q"), color="measure:N", tooltip=["layer", "measure", "value"]
    )
)
st.dataframe(layers, hide_index=True)
