"""SAE features (`explainers.sae`): a feature browser and decisions explained in features.

- The browser: an SAE folder's features (from `workbench sae train`), with the fact each
  separates best (AUROC; labelled at >= 0.95), its other best facts, and its top contexts.
- Decisions: a step explained with `workbench explain-step --method sae --param sae=DIR`,
  its token heatmap beside the features of largest attribution, their labels, and what
  removing each one does to the choice.

The SAE folders offered are those the store's `sae` explanations used, and any given as
`/features?sae=PATH` or typed in. Deep links: `?sae=PATH&feature=N`, `?explanation=ID`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from explainers.explanation import Explanation
from explainers.sae.labels import load_labels
from explainers.sae.labels import search as find_features
from explainers.sae.model import CONFIG_FILE
from streamlit_app.common import heatmap, query, query_param, select
from workbench.errors import WorkbenchError
from workbench.store import explanations

st.title("SAE features")


def _sae_folders(records: list[dict[str, Any]]) -> list[str]:
    found = []
    for record in records:
        folder = (record.get("params") or {}).get("sae")
        if folder and folder not in found:
            found.append(folder)
    return found


listed = query(explanations.list_explanations, limit=200, method="sae")
records = [query(explanations.get_explanation, row["id"]) for row in listed]
records = [r for r in records if r is not None]
folders = _sae_folders(records)
linked = query_param("sae")
if linked and linked not in folders:
    folders.insert(0, linked)
typed = st.text_input("SAE folder", value="", placeholder="saes/l15 (from workbench sae train)")
if typed.strip():
    folders.insert(0, typed.strip())

browser, decisions = st.tabs(["Feature browser", "Decisions in features"])

with browser:
    if not folders:
        st.info(
            "No SAE yet: train one with `workbench sae train --layer L --runs RUN --out DIR`, "
            "then open `/features?sae=DIR` or type the folder above."
        )
    else:
        folder = select("SAE", folders, linked or folders[0], str, key="sae-folder")
        if not (Path(folder) / CONFIG_FILE).is_file():
            st.warning(f"{folder!r} is not an SAE folder here (no {CONFIG_FILE}).")
        else:
            try:
                summary, table = load_labels(folder)
            except WorkbenchError as exc:
                st.warning(str(exc))
                table, summary = [], {}
            if table:
                st.caption(
                    f"{len(table)} features · {summary.get('labelled_features', 0)} labelled "
                    f"for {summary.get('labelled_facts', 0)} distinct facts (of "
                    f"{summary.get('scored_facts', 0)} scored) · value of a text: its "
                    f"{summary.get('pool', 'last')} token"
                )
                left, middle, right = st.columns(3)
                fact = left.text_input("best fact matches", value="", placeholder="in(knife*")
                token = middle.text_input("top tokens contain", value="")
                only = right.checkbox("labelled only", value=True)
                try:
                    shown = find_features(
                        table, fact=fact or None, text=token or None, labelled_only=only
                    )
                except WorkbenchError as exc:
                    st.warning(str(exc))
                    shown = []
                st.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "feature": f.feature,
                                "best fact": f.fact,
                                "AUROC": f.auroc,
                                "labelled": f.labelled,
                                "density": f.density,
                                "top token": f.top[0]["token"] if f.top else "",
                            }
                            for f in shown[:500]
                        ]
                    ),
                    hide_index=True,
                )
                ids = [f.feature for f in shown] or [f.feature for f in table]
                wanted = query_param("feature")
                default = int(wanted) if wanted and wanted.isdigit() else ids[0]
                chosen = select("feature", ids, default, str, key="sae-feature")
                feature = table[chosen]
                st.subheader(f"Feature {feature.feature}")
                st.dataframe(
                    pd.DataFrame(feature.facts, columns=["fact", "AUROC"]), hide_index=True
                )
                st.markdown("**Top contexts**")
                for c in feature.top:
                    st.text(f"{c['activation']:8.3f}  …{c['before']}[{c['token']}]{c['after']}")

with decisions:
    if not records:
        st.info(
            "No decision explained in features yet: `workbench explain-step --run R "
            "--episode E --step S --method sae --param sae=DIR`."
        )
    else:
        labels = {
            r["id"]: f"{(r.get('extras') or {}).get('step', {})} · {r['target_tokens'][0]}"
            for r in records
        }
        wanted = query_param("explanation")
        ids = list(labels)
        chosen_id = select(
            "explained decision", ids, wanted, lambda i: labels.get(i, i), key="sae-exp"
        )
        exp = Explanation.from_dict(next(r for r in records if r["id"] == chosen_id))
        extras = exp.extras
        left, right = st.columns([3, 2])
        with left:
            heatmap(exp, key="sae-heatmap")
        with right:
            st.caption(
                f"SAE {exp.params.get('sae')} at layer {extras.get('sae_layer')} · error mass "
                f"{extras.get('error_mass', 0):+.4f} · completeness error "
                f"{extras.get('completeness_error', 0):.2%}"
            )
            ablated = {a["feature"]: a for a in extras.get("ablations", [])}
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "feature": f["feature"],
                            "mass": f["mass"],
                            "label": f["fact"] if f.get("labelled") else "",
                            "AUROC": f.get("auroc"),
                            "without it": ablated.get(f["feature"], {}).get("choice"),
                            "choice changes": ablated.get(f["feature"], {}).get("flipped"),
                        }
                        for f in extras.get("features", [])
                    ]
                ),
                hide_index=True,
            )
