"""What every dashboard page shares: the store, cached queries, paging and empty states.

Queries go through `query()`, cached by `st.cache_data` under the database's change token
(`workbench.store.dashboard.change_token`): a page reruns from cache until a run writes
something, then reads afresh. The token itself is re-read at most every TOKEN_TTL seconds,
so a busy page costs the database one tiny query per interval.

Game and LLM text is data, never markup: pages show it with `st.text`, `st.code` and
`st.dataframe` only, and `token_heatmap_html` escapes every token it colours.
"""

from __future__ import annotations

import argparse
import html
import importlib
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from agents.report import aggregate, compare
from workbench.errors import WorkbenchError
from workbench.settings import db_path
from workbench.store import Store, dashboard
from workbench.store import play as play_store

TOKEN_TTL = 2.0
# The columns of a play summary by level and condition (`play_summary`), in table order.
LEVEL_TABLE = ["run", "level", "condition", "games", "episodes", "success", "success_low"]
LEVEL_TABLE += ["success_high", "score", "score_low", "score_high", "steps_to_win"]
PAGE_SIZES = (10, 25, 50, 100)

FILL_HINT = (
    "Fill it by playing some games, for example:\n\n"
    "```bash\n"
    "workbench games make --level 1 --count 4 --out games/l1\n"
    "workbench play --games games/l1 --agent random --trials 2 --db {db}\n"
    "```\n\n"
    "or record explanations with `workbench explain --text ... --db {db}`."
)


def database_path() -> Path:
    """`--db PATH` after `--` on the `streamlit run` line, else $WORKBENCH_DB or the default."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    known, _ = parser.parse_known_args(sys.argv[1:])
    return db_path(known.db)


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    # The dashboard never creates a database: the file must exist and be DuckDB. The store
    # is not read-only because "explain this step" writes; the first read brings an older
    # (writable) file's schema up to date once, and pages then open read-only connections.
    Store(path, read_only=True)
    return Store(path)


def store() -> Store:
    """The dashboard's store; stops the page with an error if it cannot be opened."""
    try:
        return _open_store(str(database_path()))
    except WorkbenchError as exc:
        st.error(f"{exc}; pass an existing database with --db")
        st.stop()


@st.cache_data(ttl=TOKEN_TTL, show_spinner=False)
def _token(path: str) -> tuple:
    return dashboard.change_token(_open_store(path))


@st.cache_data(max_entries=512, show_spinner=False)
def _cached(module: str, name: str, path: str, token: tuple, args: tuple, kwargs: tuple) -> Any:
    del token  # part of the cache key only: a new token means the database changed
    fn = getattr(importlib.import_module(module), name)
    return fn(_open_store(path), *args, **dict(kwargs))


def query(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a store query (any module-level function taking the store first), cached
    until the database changes."""
    path = str(store().path)
    key = tuple(sorted(kwargs.items()))
    return _cached(fn.__module__, fn.__name__, path, _token(path), args, key)


def play_summary(db: Store, run_ids: tuple[str, ...], by: tuple[str, ...]) -> list[dict]:
    """Success rate and normalised score of the runs' episodes per group of `by`, as
    `workbench report` computes them (`agents.report.aggregate`)."""
    return aggregate(play_store.episode_outcomes(db, run_ids), by)


def run_comparison(db: Store, a: str, b: str) -> dict[str, Any]:
    """Run `b` against run `a` on the game trials both played under the same condition:
    McNemar's test for success, a paired t-test for the score."""
    episodes = play_store.episode_outcomes(db, (a, b))
    return compare(
        [e for e in episodes if e["run_id"] == a],
        [e for e in episodes if e["run_id"] == b],
        pair_by=("game", "condition", "trial"),
    ).to_dict()


def pager(key: str, total: int, default_size: int = 25) -> tuple[int, int]:
    """Page-size and page-number widgets; returns (limit, offset)."""
    left, right, info = st.columns([1, 1, 3])
    size = left.selectbox(
        "rows per page", PAGE_SIZES, index=PAGE_SIZES.index(default_size), key=f"{key}-size"
    )
    pages = max(1, math.ceil(total / size))
    page = right.number_input("page", 1, pages, 1, key=f"{key}-page")
    info.caption(f"{total} row(s), page {page} of {pages}")
    return size, (int(page) - 1) * size


def empty_state(what: str) -> None:
    """The message a page shows when the database holds nothing for it."""
    db = str(database_path())
    st.info(f"No {what} in `{db}` yet. " + FILL_HINT.format(db=db))


def pick(label: str, labels: dict[str, str], key: str, param: str) -> tuple[str, list[str]]:
    """A selectbox over the ids of a listed page (shown by their labels), with the id deep-
    linked by query parameter `param` added first and chosen; returns (chosen, ids)."""
    ids = list(labels)
    linked = query_param(param)
    if linked and linked not in ids:
        ids.insert(0, linked)
    chosen = st.selectbox(
        label,
        ids,
        index=ids.index(linked) if linked in ids else 0,
        format_func=lambda i: labels.get(i, i),
        key=key,
    )
    return chosen, ids


def query_param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value or None


def llm_call(call: dict[str, Any]) -> None:
    """One LLM call in an expander: its prompt, completion and error, as inert text."""
    with st.expander(f"{call['purpose']} · {call['model']} · {call['created_at']}"):
        st.markdown("**prompt**")
        st.code(call["prompt"], language=None)
        st.markdown("**completion**")
        st.code(call["completion"] or "", language=None)
        if call["error"]:
            st.code(call["error"], language=None)


def visible(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")


def token_heatmap_html(tokens: list[str], scores: list[float]) -> str:
    """One line of tokens coloured by score (red towards the target, blue away), every
    token HTML-escaped so that model text can never become markup."""
    scale = max((abs(s) for s in scores), default=0.0)
    spans = []
    for token, score in zip(tokens, scores):
        shade = 0.0 if scale <= 0 else max(-1.0, min(1.0, score / scale))
        rgb = "220,40,40" if shade >= 0 else "40,90,220"
        spans.append(
            f'<span style="background:rgba({rgb},{abs(shade):.3f});white-space:pre;'
            f'font-family:monospace;border-radius:2px" title="{score:+.5f}">'
            f"{html.escape(visible(token))}</span>"
        )
    return f'<div style="line-height:1.9">{"".join(spans)}</div>'
