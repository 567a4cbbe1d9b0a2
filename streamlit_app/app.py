"""The workbench dashboard: `workbench dashboard --db PATH` runs this file with Streamlit.

    streamlit run streamlit_app/app.py --server.address 127.0.0.1 -- --db workbench.duckdb

Each page lives in `streamlit_app/views/` and reads the store through the functions of
`workbench.store` (cached by `streamlit_app.common.query`); play statistics come from
`agents.report`, as `workbench report` computes them. Pages take deep links as query
parameters, for example `/episode?episode=ID` or `/explanations?explanation=ID`.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).parent / "views"

st.set_page_config(page_title="workbench", layout="wide")

page = st.navigation(
    {
        "Agents": [
            st.Page(
                VIEWS / "overview.py", title="Runs overview", url_path="overview", default=True
            ),
            st.Page(VIEWS / "episode.py", title="Episode viewer", url_path="episode"),
            st.Page(VIEWS / "compare.py", title="Run comparison", url_path="compare"),
            st.Page(VIEWS / "tips.py", title="Tip sets", url_path="tips"),
        ],
        "Explanations": [
            st.Page(VIEWS / "explanations.py", title="Explanations", url_path="explanations"),
            st.Page(VIEWS / "probing.py", title="Probing", url_path="probing"),
            st.Page(VIEWS / "explain_step.py", title="Explain this step", url_path="explain-step"),
            st.Page(VIEWS / "patching.py", title="Activation patching", url_path="patching"),
        ],
    }
)
page.run()
