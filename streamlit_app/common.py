"""What every dashboard page shares: the store, cached queries, paging and empty states.

Queries go through `query()`, cached by `st.cache_data` under the database's change token
(`workbench.store.dashboard.change_token`): a page reruns from cache until a run writes
something, then reads afresh. The token itself is re-read at most every TOKEN_TTL seconds,
so a busy page costs the database one tiny query per interval.

Game and LLM text is data, never markup: pages show it with `st.text`, `st.code` and
`st.dataframe` only, and token heatmaps come from `explainers.heatmap`, which escapes every
token it colours (the same builder as `Explanation.to_html()`).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamlit as st

from agents.report import aggregate, compare
from explainers.explanation import DEFAULT_TOLERANCE, Explanation, completeness_tolerance
from explainers.heatmap import explanation_heatmap_html
from explainers.metrics import HIGHER_IS_BETTER, better
from workbench.errors import StoreError, WorkbenchError
from workbench.models import model_label
from workbench.settings import db_path
from workbench.store import Store, dashboard
from workbench.store import play as play_store

TOKEN_TTL = 2.0
REFRESH_SECONDS = 3  # how often a page with a running run re-reads it
# One colour per run, the same on every chart of a page (Tableau 10).
RUN_COLOURS = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
RUN_COLOURS += ["#ff9da7", "#9c755f", "#bab0ac"]
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
    """The database shown: $WORKBENCH_DB (which `workbench dashboard --db PATH` sets for the
    server), else the default."""
    return db_path()


@st.cache_resource(show_spinner=False)
def _open_store(path: str) -> Store:
    # Opened once per server. The dashboard never creates a database: the file must exist
    # (the Store checks it is DuckDB). It is not read-only because "explain this step"
    # writes; the first read brings an older (writable) file's schema up to date once, and
    # pages then open read-only connections.
    if not Path(path).exists():
        raise StoreError(f"no database at {path!r}")
    return Store(path)


def store() -> Store:
    """The dashboard's store; stops the page with an error if it cannot be opened."""
    try:
        return _open_store(str(database_path()))
    except WorkbenchError as exc:
        st.error(f"{exc}; pass an existing database with `workbench dashboard --db PATH`")
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


def live_status() -> None:
    """The runs running now, in a line each (for the sidebar of every page); re-read every
    REFRESH_SECONDS while any runs, without reloading the page around it."""
    running = dashboard.live_runs(store())

    @st.fragment(run_every=REFRESH_SECONDS if running else None)
    def lines() -> None:
        for run in dashboard.live_runs(store()):
            planned = f" of {run['planned']}" if run["planned"] else ""
            st.caption(f"running: {run['name']}, {run['episodes']}{planned} episodes")

    lines()


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


def per_game_comparison(db: Store, a: str, b: str) -> list[dict[str, Any]]:
    """Run `b` against run `a` game by game, paired on (condition, trial) within each game
    (`agents.report.compare`): the difference in success and normalised score with its
    95% interval (none where a game has fewer than two pairs)."""
    episodes = play_store.episode_outcomes(db, (a, b))
    games = sorted({(e["level"] or 0, e["game"]) for e in episodes})
    rows = []
    for level, game in games:
        mine = [e for e in episodes if e["game"] == game]
        tests = compare(
            [e for e in mine if e["run_id"] == a],
            [e for e in mine if e["run_id"] == b],
            pair_by=("game", "condition", "trial"),
        ).to_dict()
        for measure, t in tests.items():
            if t["n"]:
                rows.append(
                    {
                        "level": level,
                        "game": game,
                        "measure": measure,
                        "pairs": t["n"],
                        "B - A": t["difference"],
                        "low": t["low"],
                        "high": t["high"],
                    }
                )
    return rows


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


def play_runs_and_linked_episode() -> tuple[list[dict], str | None, dict[str, Any] | None]:
    """What the episode pages start from: the runs that played episodes (the page stops with
    an empty state if there are none), the episode deep-linked by `?episode=ID` and its
    header (`episode_view`, one step; None if no such episode)."""
    runs = query(dashboard.play_runs)
    if not runs:
        empty_state("played episodes")
        st.stop()
    linked = query_param("episode")
    return runs, linked, query(dashboard.episode_view, linked, limit=1) if linked else None


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
    chosen = select(label, ids, linked, lambda i: labels.get(i, i), key)
    return chosen, ids


def select(
    label: str, options: list, default: Any, format_func: Callable[[Any], str], key: str
) -> Any:
    """A selectbox over `options` that starts at `default` (at the first option when
    `default` is not one of them)."""
    return st.selectbox(
        label,
        options,
        index=options.index(default) if default in options else 0,
        format_func=format_func,
        key=key,
    )


def query_param(name: str) -> str | None:
    value = st.query_params.get(name)
    return value or None


def all_or(value: Any) -> str:
    """A filter choice as a selector shows it: None means no filter, "all"."""
    return "all" if value is None else str(value)


def run_colours(names: Sequence[str]) -> Any:
    """An Altair colour scale that gives each run its own colour (not only a dash)."""
    import altair as alt

    names = list(dict.fromkeys(names))
    palette = RUN_COLOURS * (len(names) // len(RUN_COLOURS) + 1)
    return alt.Scale(domain=names, range=palette[: len(names)])


def metric_label(name: str) -> str:
    """A metric's name with the direction that is better, e.g. "sufficiency (lower is
    better)"."""
    return f"{name} ({better(name)} is better)" if name in HIGHER_IS_BETTER else name


def metrics_table(values: dict[str, float], reference: dict[str, float] | None) -> list[dict]:
    """Rows of metric, better direction, value and (with a random reference) the random
    attribution's value and whether this one beats it."""
    rows = []
    for name, value in values.items():
        row: dict[str, Any] = {"metric": name, "better": better(name), "value": value}
        if name in HIGHER_IS_BETTER:
            direction = 1 if HIGHER_IS_BETTER[name] else -1
        else:
            direction = 0
        if reference is not None:
            base = reference.get(name)
            row["random baseline"] = base
            beats = (
                None
                if base is None or value is None or not direction
                else direction * (value - base) > 0
            )
            row["beats random"] = beats
        rows.append(row)
    return rows


def explanation_warnings(exp: Explanation, advice: str = "--steps auto") -> list[str]:
    """What the page must say before anyone reads the scores: the method's own warnings,
    and every target row whose scores miss completeness (integrated gradients: the scores
    should sum to f(input) - f(baseline)), with what to do about it."""
    out = [f"{exp.method} warns ({exp.status}): {w}" for w in exp.warnings]
    rows = exp.incomplete_rows()
    if rows and exp.expected is not None and exp.delta is not None:
        worst = max(rows, key=lambda r: abs(exp.delta[r]))
        expected, delta = exp.expected[worst], exp.delta[worst]
        out.append(
            f"Not converged: the scores of {len(rows)} of {len(exp.expected)} target(s) miss "
            f"completeness. Worst, target {worst + 1}: the scores sum to "
            f"{expected + delta:+.4f} where f(input) - f(baseline) is {expected:+.4f} (delta "
            f"{delta:+.4f}; tolerance {completeness_tolerance(expected):.4f}, "
            f"{DEFAULT_TOLERANCE:.0%} of it). Don't read these scores as the model's "
            f"reasons yet: re-run with {advice} (more integration steps until the delta is "
            "within tolerance), and see the completeness line under each target."
        )
    return out


def target_row(exp: Explanation, key: str) -> int:
    """A selector for the explanation's target row (none for a single target); returns the
    row chosen."""
    targets = exp.target_tokens or [""]
    if len(targets) == 1:
        return 0
    return st.selectbox(
        "target token",
        range(len(targets)),
        format_func=lambda i: f"{i + 1}: {targets[i]!r}",
        key=key,
    )


def heatmap(exp: Explanation, key: str) -> int:
    """The explanation's token heatmap with a selector for its target row (wrapped at the
    text's line breaks, in prompt sections where it has them, with a colour scale);
    returns the row shown."""
    row = target_row(exp, key)
    st.html(explanation_heatmap_html(exp, row))
    if exp.expected is not None and exp.delta is not None:
        expected, delta = exp.expected[row], exp.delta[row]
        ok = abs(delta) <= completeness_tolerance(expected)
        st.text(
            f"completeness of target {row + 1}: sum {expected + delta:+.4f} vs "
            f"f(input)-f(baseline) {expected:+.4f}, delta {delta:+.4f} "
            f"[{'ok' if ok else 'NOT CONVERGED'}]"
        )
    return row


def with_model_labels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Listed results with `model` naming the whole model (base, adapter and its hash) in
    place of the base model and its `model_info`."""
    return [
        {
            **{k: v for k, v in r.items() if k != "model_info"},
            "model": model_label(r["model"], r.get("model_info"), short=True),
        }
        for r in rows
    ]


def explanation_label(row: dict[str, Any], width: int = 48) -> str:
    """An explanation in a picker: method, input and target, e.g. `ig · "the milk is
    in the" -> " fridge" · tiny`."""
    text = " ".join(str(row.get("input_text") or "").split())
    if len(text) > width:
        text = text[: width - 3] + "..."
    target = row.get("target_text")
    arrow = f" -> {target!r}" if target else ""
    return f"{row['method']} · {text!r}{arrow} · {row['model']}"


def llm_call(call: dict[str, Any]) -> None:
    """One LLM call in an expander: its prompt, completion and error, as inert text."""
    with st.expander(f"{call['purpose']} · {call['model']} · {call['created_at']}"):
        st.markdown("**prompt**")
        st.code(call["prompt"], language=None, wrap_lines=True)
        st.markdown("**completion**")
        st.code(call["completion"] or "", language=None, wrap_lines=True)
        if call["error"]:
            st.code(call["error"], language=None, wrap_lines=True)


def visible(token: str) -> str:
    return token.replace("\n", "\\n").replace("\t", "\\t")
