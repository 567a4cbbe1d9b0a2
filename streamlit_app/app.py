"""The workbench dashboard: `workbench dashboard --db PATH` runs this file with Streamlit.

    WORKBENCH_DB=workbench.duckdb streamlit run streamlit_app/app.py --server.address 127.0.0.1

Each page lives in `streamlit_app/views/` and reads the store through the functions of
`workbench.store` (cached by `streamlit_app.common.query`); play statistics come from
`agents.report`, as `workbench report` computes them. Every page has its own address, the
runs overview included (`/overview`; `/` leads there), and takes deep links as query
parameters, for example `/episode?episode=ID&step=3` or `/explanations?explanation=ID`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from streamlit_app.common import live_status

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="workbench", layout="wide")

overview = st.Page(VIEWS / "overview.py", title="Runs overview", url_path="overview")
SECTIONS = {
    "Agents": [
        overview,
        st.Page(VIEWS / "episode.py", title="Episode viewer", url_path="episode"),
        st.Page(VIEWS / "compare.py", title="Run comparison", url_path="compare"),
        st.Page(VIEWS / "tips.py", title="Tip sets", url_path="tips"),
        st.Page(VIEWS / "search.py", title="Search prompts", url_path="search"),
    ],
    "Explanations": [
        st.Page(VIEWS / "explanations.py", title="Explanations", url_path="explanations"),
        st.Page(VIEWS / "methods.py", title="Methods side by side", url_path="methods"),
        st.Page(VIEWS / "probing.py", title="Probing", url_path="probing"),
        st.Page(VIEWS / "concepts.py", title="Concepts: TCAV, steering, RSA", url_path="concepts"),
        st.Page(VIEWS / "features.py", title="SAE features", url_path="features"),
        st.Page(VIEWS / "explain_step.py", title="Explain this step", url_path="explain-step"),
        st.Page(VIEWS / "mistakes.py", title="Mistakes", url_path="mistakes"),
        st.Page(VIEWS / "patching.py", title="Activation patching", url_path="patching"),
    ],
}


def _home() -> None:
    # Streamlit serves its default page at "/" only; this one leads to the overview (query
    # parameters kept), so that `/overview` is the overview's own address.
    st.switch_page(overview, query_params=st.query_params.to_dict())


home = st.Page(_home, title="workbench", url_path="home", default=True)
page = st.navigation([home, *(p for pages in SECTIONS.values() for p in pages)], position="hidden")
with st.sidebar:
    live_status()
    for section, pages in SECTIONS.items():
        st.caption(section)
        for p in pages:
            st.page_link(p)
page.run()
