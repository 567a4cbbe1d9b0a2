"""The Streamlit dashboard over the workbench store."""
