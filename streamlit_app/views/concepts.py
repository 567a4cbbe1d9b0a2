"""Concept results (`explainers.concepts`), each beside its control:

- TCAV: per layer, the share of decisions whose choice objective rises along the concept
  (S > 0), against random directions of the same norm (Welch t-test, Bonferroni over the
  layers tested);
- steering: the explained command's probability as alpha times the direction is added,
  against random directions, and the episodes played steered;
- RSA: per layer, Spearman's rho between the model's and the game state's dissimilarities,
  with its permutation p and the noise ceiling where states repeat.

Deep link: `/concepts?result=ID`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from explainers.concepts.plot import FIGURES, SIGNIFICANCE
from streamlit_app.common import empty_state, pick, query, with_model_labels
from workbench.models import model_label
from workbench.store import concepts

st.title("Concepts: TCAV, steering, RSA")

listed = query(concepts.list_concept_results)
if not listed:
    empty_state("concept results")
    st.info(
        "Compute them from a play run's decisions with `workbench tcav`, `workbench steer` "
        "or `workbench rsa`."
    )
    st.stop()

rows = with_model_labels(listed)
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    column_order=["created_at", "kind", "concept", "model", "summary", "id"],
)

labels = {r["id"]: f"{r['kind']} · {r['concept'] or 'game state'} · {r['id']}" for r in rows}
result_id, _ = pick("result", labels, key="concept-id", param="result")
row = query(concepts.get_concept_result, result_id)
if row is None:
    st.warning(f"No concept result with id {result_id!r}.")
    st.stop()
kind, record = row["kind"], row["result"]
st.caption(f"model {model_label(row['model'], row['model_info'])}")
params = record.get("params") or {}
runs = params.get("runs") or [params.get("run") or row["run_id"]]  # RSA reads several
st.caption(f"{row['summary']} · run {', '.join(r for r in runs if r) or 'not recorded'}")


def _number(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(value: float | None, low: float | None, high: float | None) -> str:
    return f"{_number(value, '+.3f')} [{_number(low, '+.3f')}, {_number(high, '+.3f')}]"


def _tcav_table(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "layer": r["layer"],
                "score": r["score"],
                "random (mean ± std)": f"{_number(r['random_mean'])} ± {_number(r['random_std'])}",
                "p": r["p_value"],
                "corrected p": r["p_corrected"],
                "significant": r["significant"],
            }
            for r in record["layers"]
        ]
    )


def _effects_table(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "alpha": e["alpha"],
                "concept change": e["concept_change"],
                "random change": e["random_change"],
                "difference [95% interval]": _interval(e["difference"], e["low"], e["high"]),
                "p": e["p_value"],
                "decisions": e["n"],
            }
            for e in record["effects"]
        ]
    )


def _episodes_table(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "direction": e["direction"],
                "alpha": e["alpha"],
                "won / episodes": f"{e['won']} / {e['episodes']}",
                "win rate [95% interval]": _interval(e["win_rate"], e["low"], e["high"]),
                "mean score": e["mean_score"],
            }
            for e in record["episodes"]
        ]
    )


def _rsa_table(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"layer": r["layer"], "rho": r["rho"], "p": r["p_value"], "ceiling": r["ceiling"]}
            for r in record["layers"]
        ]
    )


st.pyplot(FIGURES[kind](record))
if kind == "tcav":
    st.caption(
        f"{record['n_decisions']} decisions; the concept's direction from "
        f"{record['n_positive']} states where it holds and {record['n_negative']} where it "
        f"does not, against {params.get('n_random', 'several')} random directions "
        f"of the same norm. Significant: corrected p < {SIGNIFICANCE:g}."
    )
    st.dataframe(_tcav_table(record), hide_index=True)
elif kind == "steer":
    st.caption(
        f"{record['n_decisions']} decisions at layer {record['layer']}: the change of the "
        "explained command's probability from alpha 0, along the concept and along random "
        "directions, and their paired difference."
    )
    st.dataframe(_effects_table(record), hide_index=True)
    if record["episodes"]:
        st.subheader("Episodes played steered")
        st.dataframe(_episodes_table(record), hide_index=True)
else:
    st.caption(
        f"{record['n_states']} states ({record['n_unique']} distinct, {record['n_repeated']} "
        f"repeated), {record['metric']} distance; one-sided permutation p. The ceiling is "
        "the most a layer's rho can reach given how noisy its geometry is over repeated "
        "states (blank: too few repeats)."
    )
    st.dataframe(_rsa_table(record), hide_index=True)
