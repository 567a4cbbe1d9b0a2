"""Search prompts: every recorded LLM call (acting prompts, tip writing, ...) whose prompt
or completion contains some text, newest first, with the text in its context and a link
to the step in the episode viewer.

Deep link: `/search?q=TEXT`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from streamlit_app.common import empty_state, pager, query, query_param
from workbench.store import dashboard

st.title("Search prompts and completions")

if not query(dashboard.counts)["llm_calls"]:
    empty_state("LLM calls")
    st.stop()

text = st.text_input(
    "text to find (any case)", value=query_param("q") or "", key="search-text"
).strip()
if not text:
    st.caption("Type a word or phrase, e.g. a command (`take milk`) or part of a tip.")
    st.stop()
if st.query_params.get("q") != text:
    st.query_params["q"] = text

first = query(dashboard.search_calls, text, limit=1)
if not first.total:
    st.info(f"No prompt or completion contains {text!r}.")
    st.stop()
if first.total > dashboard.SEARCH_CAP:
    st.caption(
        f"more than {dashboard.SEARCH_CAP} matches; the pages below go that far "
        "(a longer text narrows the search)"
    )
limit, offset = pager("search", first.total, default_size=10)
found = query(dashboard.search_calls, text, limit=limit, offset=offset)
st.dataframe(
    pd.DataFrame(found.rows),
    hide_index=True,
    column_order=["run", "step", "purpose", "in", "context", "model", "created_at", "episode_id"],
    column_config={"context": st.column_config.TextColumn("found in", width="large")},
)
for hit in found.rows:
    if hit["episode_id"] is not None:
        step = "" if hit["step"] is None else f", step {hit['step']}"
        params = {"episode": hit["episode_id"]}
        if hit["step"] is not None:
            params["step"] = str(hit["step"])
        st.page_link(
            "views/episode.py",
            label=f"{hit['run']}: episode {hit['episode_id']}{step} ({hit['purpose']})",
            query_params=params,
        )
