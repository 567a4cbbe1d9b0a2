"""Tip sets: every set the introspection wrote, its tips, the operations that made it
(ADD / EDIT / AGREE / REMOVE), its provenance back to the episodes it read and the LLM calls
that wrote it, its lineage of versions, and the diff of two sets.

Deep link: `/tips?tipset=ID`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from agents.tips import TipSet, diff_tipsets
from streamlit_app.common import llm_call, pager, pick, query
from workbench.store import dashboard
from workbench.store import tips as tips_store

st.title("Tip sets")

first = query(dashboard.tipsets_page, limit=1)
if not first.total:
    st.info(
        "No tip sets recorded yet. Play with tips to write some, for example "
        "`workbench play --games games/l1 --tips self --trials 3`, or run "
        "`workbench experiment introspective-tips --train DIR --test DIR`."
    )
    st.stop()

limit, offset = pager("tipsets", first.total, default_size=10)
page = query(dashboard.tipsets_page, limit=limit, offset=offset)
listing = ["id", "kind", "scope", "condition", "game_id", "trial", "version", "status"]
listing += ["parent_id", "run_name", "n_tips", "created_at"]
st.dataframe(pd.DataFrame(page.rows, columns=listing), hide_index=True)

labels = {r["id"]: f"{r['kind']} · {r['scope']} · v{r['version']} · {r['id']}" for r in page.rows}
tipset_id, ids = pick("tip set", labels, key="tipset-id", param="tipset")
detail = query(dashboard.tipset_detail, tipset_id)
if detail is None:
    st.warning(f"No tip set with id {tipset_id!r}.")
    st.stop()
tipset = detail["tipset"]
if tipset["status"] != "ok":
    st.warning("The LLM's replies were unusable; this version keeps its parent's tips.")
    st.text(tipset["error"] or "")

st.subheader("Tips")
if detail["tips"]:
    st.dataframe(pd.DataFrame(detail["tips"]), hide_index=True)
else:
    st.text("(this set holds no tips)")

st.subheader("History of operations")
if detail["ops"]:
    st.dataframe(pd.DataFrame(detail["ops"]), hide_index=True)
else:
    st.text("(no merge operations: this set was written whole)")
st.markdown("**lineage** (versions this set grew from, oldest first)")
st.dataframe(pd.DataFrame(detail["lineage"]), hide_index=True)

st.subheader("Provenance")
st.dataframe(
    pd.DataFrame(
        {
            "field": ["run", "kind", "scope", "condition", "game", "after trial", "params"],
            "value": [
                str(tipset[k])
                for k in ("run_name", "kind", "scope", "condition", "game_id", "trial", "params")
            ],
        }
    ),
    hide_index=True,
)
st.markdown(f"**episodes read** ({len(tipset['episodes'] or [])})")
for episode_id in tipset["episodes"] or []:
    st.page_link(
        "views/episode.py", label=f"episode {episode_id}", query_params={"episode": episode_id}
    )
st.markdown(f"**LLM calls that wrote it** ({len(detail['calls'])})")
for call in detail["calls"]:
    llm_call(call)

st.subheader("Diff of two sets")
left, right = st.columns(2)
parent = tipset["parent_id"] if tipset["parent_id"] in ids else None
a = left.selectbox(
    "set A",
    ids,
    index=ids.index(parent) if parent else 0,
    format_func=lambda i: labels.get(i, i),
    key="diff-a",
)
b = right.selectbox(
    "set B",
    ids,
    index=ids.index(tipset_id),
    format_func=lambda i: labels.get(i, i),
    key="diff-b",
)
if a == b:
    st.text("(pick two different sets)")
else:
    sets = {i: TipSet.from_row(query(tips_store.get_tipset, i)) for i in (a, b)}
    changes = {"-": "only in A", "+": "only in B", "~": "score changed"}
    diff = [
        {"change": changes[sign], "tip": tip, "note": note}
        for sign, tip, note in diff_tipsets(sets[a], sets[b])
    ]
    st.dataframe(pd.DataFrame(diff, columns=["change", "tip", "note"]), hide_index=True)
