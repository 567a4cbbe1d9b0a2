"""Read queries behind the Streamlit dashboard (`streamlit_app/`) that no other reader
shares: the change token, table counts, pages of listings, the runs running now, the
episode viewer (with each step's scored candidates and game facts), text search over LLM
calls, stored method comparisons and the random baseline beside an explanation. Pages
reuse the table modules' functions for everything else, and aggregate play statistics
through `agents.report` (one definition of success rate, score and their intervals).

Every function opens one read-only connection, runs the few statements its view needs and
closes it again, so a batch run writing the same file (short transactions, see
`workbench.store.play`) is never blocked for longer than one query. Long listings are paged
with LIMIT/OFFSET and return the total beside the page. `change_token` is the cheap
fingerprint the dashboard keys its cache on: any write a run makes changes it.

    >>> from workbench.store import Store                       # doctest: +SKIP
    >>> from workbench.store import dashboard
    >>> dashboard.runs_page(Store(), limit=20).rows[0]["name"]
    'random-l1'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from workbench.store import Store, _all, _decode, _where, explanations, metrics, probes, runs, tips
from workbench.store import play as play_store

# Tables whose row counts (and newest created_at) make up the change token.
_WATCHED = (
    "runs",
    "episodes",
    "steps",
    "llm_calls",
    "explanations",
    "metrics",
    "probes",
    "tipsets",
    "tips",
    "tip_ops",
)


@dataclass
class Page:
    """One page of a listing and the size of the whole listing."""

    rows: list[dict[str, Any]]
    total: int
    limit: int
    offset: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.limit)) if self.limit else 1


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Each table's column names."""
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


# -- freshness ---------------------------------------------------------------------------


def change_token(store: Store) -> tuple:
    """A fingerprint of everything the dashboard shows: row counts and newest timestamps.

    Counting is metadata-cheap in DuckDB, so this stays in the low milliseconds even with
    millions of steps; a run that finishes (status change, no new rows) moves
    `finished_at`.
    """
    with store._connect() as con:
        columns = _columns(con)
        parts: list[Any] = []
        for table in _WATCHED:
            stamp = "max(created_at)" if "created_at" in columns[table] else "NULL"
            parts.extend(con.execute(f"SELECT count(*), {stamp} FROM {table}").fetchone())
        parts.extend(
            con.execute(
                "SELECT max(finished_at), count(*) FILTER (WHERE status = 'running') FROM runs"
            ).fetchone()
        )
    return tuple(str(p) for p in parts)


def counts(store: Store) -> dict[str, int]:
    """How much is recorded, per table."""
    with store._connect() as con:
        return {t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in _WATCHED}


def _page(
    store: Store, count_sql: str, rows_sql: str, args: list[Any], limit: int, offset: int
) -> Page:
    """One page of rows (`rows_sql` ends in LIMIT ? OFFSET ?) and the total they come from,
    read on one connection so the two agree."""
    with store._connect() as con:
        total = con.execute(count_sql, args).fetchone()[0]
        rows = _all(con.execute(rows_sql, [*args, limit, offset]))
    return Page(rows, int(total), limit, offset)


# -- runs overview -----------------------------------------------------------------------


def runs_page(store: Store, limit: int = 50, offset: int = 0, kind: str | None = None) -> Page:
    """Runs, newest first, with how many episodes and explanations each recorded."""
    return Page(
        runs.list_runs(store, kind, limit, offset), runs.count_runs(store, kind), limit, offset
    )


def play_runs(store: Store) -> list[dict[str, Any]]:
    """Every run that recorded episodes (for pickers): id, name, status, episodes, planned
    and `agents`, the agents that played it (comma-separated, sorted)."""
    with store._connect() as con:
        return _all(
            con.execute(
                "SELECT r.id, r.name, r.status, r.created_at, count(e.id) AS episodes,"
                " r.planned, string_agg(DISTINCT e.agent, ',' ORDER BY e.agent) AS agents"
                " FROM runs r JOIN episodes e ON e.run_id = r.id"
                " GROUP BY r.id, r.name, r.status, r.created_at, r.planned"
                " ORDER BY r.created_at DESC"
            )
        )


def live_runs(store: Store) -> list[dict[str, Any]]:
    """Runs still running, newest first: episodes recorded of those planned, steps, and
    `seconds` since they started (read at call time: not for caching)."""
    return [r for r in runs.list_runs(store, limit=None) if r["status"] == "running"]


# -- episodes ----------------------------------------------------------------------------


def episodes_page(
    store: Store,
    run_id: str,
    limit: int = 50,
    offset: int = 0,
    condition: str | None = None,
    outcome: str | None = None,
) -> Page:
    """A run's episodes in a stable order (level, game, condition, trial), filterable by
    condition and by outcome (won, lost, max_steps)."""
    clause, args = _where(
        ("e.run_id = ?", run_id), ("e.condition = ?", condition), ("e.stop_reason = ?", outcome)
    )
    return _page(
        store,
        f"SELECT count(*) FROM episodes e {clause}",
        "SELECT e.id, e.game_id AS game, g.level, e.trial, e.condition, e.agent, e.won,"
        " e.score, e.max_score, e.moves, e.stop_reason, e.invalid_actions,"
        " e.prompt_tokens, e.completion_tokens, e.seconds, e.created_at"
        " FROM episodes e LEFT JOIN games g ON g.id = e.game_id"
        f" {clause} ORDER BY g.level, e.game_id, e.condition, e.trial, e.id"
        " LIMIT ? OFFSET ?",
        args,
        limit,
        offset,
    )


def conditions(store: Store, run_id: str) -> list[str]:
    with store._connect() as con:
        rows = con.execute(
            "SELECT DISTINCT condition FROM episodes WHERE run_id = ? ORDER BY condition",
            [run_id],
        ).fetchall()
    return [r[0] for r in rows]


def episode_view(
    store: Store, episode_id: str, limit: int = 25, offset: int = 0
) -> dict[str, Any] | None:
    """One episode for the step-by-step viewer: its header (run, game, outcome, tips in
    force), one page of steps with each step's full prompt and completion, and the
    episode's LLM calls that belong to no step (tips written after it, ...)."""
    header = play_store.get_episode(store, episode_id)
    if header is None:
        return None
    with store._connect() as con:
        steps = _all(
            con.execute(
                "SELECT idx, observation, admissible, facts, action, raw_output, valid, reward,"
                " score, feedback, done, llm_call_id FROM steps WHERE episode_id = ?"
                " ORDER BY idx LIMIT ? OFFSET ?",
                [episode_id, limit, offset],
            )
        )
        # Fetched by primary key rather than joined: a join would scan every stored prompt.
        call_ids = [s["llm_call_id"] for s in steps if s["llm_call_id"]]
        calls: dict[str, dict[str, Any]] = {}
        if call_ids:
            marks = ", ".join("?" for _ in call_ids)
            calls = {
                c["id"]: c
                for c in _all(
                    con.execute(
                        "SELECT id, prompt, completion, prompt_tokens, completion_tokens,"
                        f" latency_s, error, model, params FROM llm_calls WHERE id IN ({marks})",
                        call_ids,
                    )
                )
            }
        other_calls = _all(
            con.execute(
                "SELECT id, purpose, model, prompt, completion, error, created_at FROM llm_calls"
                " WHERE episode_id = ? AND step_idx IS NULL ORDER BY created_at",
                [episode_id],
            )
        )
    _decode(steps, "admissible", "facts", empty=list)
    _decode(list(calls.values()), "params", empty=dict)
    for step in steps:
        call = calls.get(step.pop("llm_call_id") or "", {})
        step["prompt"] = call.get("prompt")
        step["completion"] = call.get("completion")
        step["llm_error"] = call.get("error")
        step["prompt_tokens"] = call.get("prompt_tokens")
        step["completion_tokens"] = call.get("completion_tokens")
        step["latency_s"] = call.get("latency_s")
        # The ranked candidates of a "choose" agent: [[command, log-probability], ...].
        step["candidates"] = (call.get("params") or {}).get("top") or []
    return {
        "episode": header,
        "steps": Page(steps, int(header["moves"]), limit, offset),
        "other_calls": other_calls,
    }


SEARCH_CAP = 1000  # matches counted at most: a common word needs no full count


def search_calls(store: Store, text: str, limit: int = 25, offset: int = 0) -> Page:
    """LLM calls whose prompt or completion contains `text` (any case), newest first: run,
    episode, step, purpose, and where the text was found (`in`: prompt or completion)
    with the characters around it (`context`). `total` counts at most SEARCH_CAP + 1
    matches (more than SEARCH_CAP: "1000+")."""
    if any(c in text for c in "\\%_"):
        # Wildcards searched as themselves (an ESCAPE clause halves ILIKE's speed: only
        # where needed).
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = "(c.prompt ILIKE ? ESCAPE '\\' OR c.completion ILIKE ? ESCAPE '\\')"
    else:
        pattern = f"%{text}%"
        where = "(c.prompt ILIKE ? OR c.completion ILIKE ?)"
    # The matching ids are found first and the texts read for the page's rows only.
    page = _page(
        store,
        f"SELECT count(*) FROM (SELECT 1 FROM llm_calls c WHERE {where} LIMIT {SEARCH_CAP + 1})",
        "WITH hits AS (SELECT c.id FROM llm_calls c"
        f" WHERE {where} ORDER BY c.created_at DESC, c.id LIMIT ? OFFSET ?)"
        " SELECT c.id, r.name AS run, c.run_id, c.episode_id, c.step_idx AS step, c.purpose,"
        " c.model, c.created_at, c.prompt, c.completion"
        " FROM hits JOIN llm_calls c ON c.id = hits.id LEFT JOIN runs r ON r.id = c.run_id"
        " ORDER BY c.created_at DESC, c.id",
        [pattern, pattern],
        limit,
        offset,
    )
    needle = text.lower()
    for row in page.rows:
        prompt, completion = row.pop("prompt") or "", row.pop("completion") or ""
        where_found, body = (
            ("prompt", prompt) if needle in prompt.lower() else ("completion", completion)
        )
        at = body.lower().find(needle)
        start, end = max(0, at - 60), min(len(body), at + len(text) + 60)
        row["in"] = where_found
        row["context"] = (
            ("..." if start else "") + body[start:end] + ("..." if end < len(body) else "")
        )
    return page


# -- explanations, metrics, probes -------------------------------------------------------


def explanations_page(
    store: Store, limit: int = 50, offset: int = 0, method: str | None = None
) -> Page:
    """Explanations newest first, without their payloads."""
    rows = explanations.list_explanations(store, limit, offset, method)
    return Page(rows, explanations.count_explanations(store, method), limit, offset)


def explanation_detail(store: Store, exp_id: str) -> dict[str, Any] | None:
    """An explanation's full record (as `Explanation.to_dict()`) with its metric values."""
    record = explanations.get_explanation(store, exp_id)
    if record is None:
        return None
    return {"explanation": record, "metrics": metrics.get_metrics(store, exp_id)}


def random_reference(store: Store, exp_id: str) -> dict[str, Any] | None:
    """The random attribution stored beside an explanation (same comparison run, else the
    newest one of the same input and target), with its mean metric values; None if none.

    {"explanation_id", "metrics": {name: value}}: the floor its metrics should beat."""
    with store._connect() as con:
        row = con.execute(
            "SELECT r.id FROM explanations x JOIN explanations r"
            " ON r.method = 'random' AND r.id <> x.id AND r.input_text = x.input_text"
            " AND coalesce(r.target_text, '') = coalesce(x.target_text, '')"
            " WHERE x.id = ?"
            " ORDER BY (r.run_id IS NOT DISTINCT FROM x.run_id) DESC, r.created_at DESC"
            " LIMIT 1",
            [exp_id],
        ).fetchone()
    if row is None:
        return None
    values = metrics.get_metrics(store, row[0], include_rows=False)
    return {"explanation_id": row[0], "metrics": {m["name"]: m["value"] for m in values}}


def comparison_runs(store: Store) -> list[dict[str, Any]]:
    """Stored method comparisons (`workbench compare --db`), newest first, with params."""
    with store._connect() as con:
        rows = _all(
            con.execute(
                "SELECT r.id, r.name, r.status, r.created_at, r.params,"
                " (SELECT count(*) FROM explanations x WHERE x.run_id = r.id) AS methods"
                " FROM runs r WHERE r.kind = 'compare' ORDER BY r.created_at DESC, r.name"
            )
        )
    _decode(rows, "params", empty=dict)
    return rows


def comparison_detail(store: Store, run_id: str) -> list[dict[str, Any]]:
    """A comparison's explanations in the order of its methods (the random baseline last),
    each as {"explanation": record, "metrics": {name: mean value}}."""
    run = runs.get_run(store, run_id)
    order = list((run or {}).get("params", {}).get("methods") or [])
    records = explanations.run_explanations(store, run_id)
    records.sort(key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))
    return [
        {
            "explanation": record,
            "metrics": {
                m["name"]: m["value"]
                for m in metrics.get_metrics(store, record["id"], include_rows=False)
            },
        }
        for record in records
    ]


def probes_page(store: Store, limit: int = 50, offset: int = 0) -> Page:
    """Probe runs newest first, each with its best layer by selectivity."""
    rows = probes.list_probes(store, limit=limit, offset=offset)
    return Page(rows, probes.count_probes(store), limit, offset)


# -- tip sets and explained steps --------------------------------------------------------


def tipsets_page(store: Store, limit: int = 50, offset: int = 0) -> Page:
    """Tip sets newest first, with their run's name and number of tips."""
    rows = tips.list_tipsets(store, limit=limit, offset=offset)
    return Page(rows, tips.count_tipsets(store), limit, offset)


def tipset_detail(store: Store, tipset_id: str) -> dict[str, Any] | None:
    """A tip set with its tips, the operations that made it (ADD / EDIT / AGREE / REMOVE),
    its provenance (run, episodes read, the LLM calls that wrote it) and its lineage (the
    chain of parent versions, oldest first)."""
    tipset = tips.get_tipset(store, tipset_id)
    if tipset is None:
        return None
    return {
        "tipset": tipset,
        "tips": tipset.pop("tips"),
        "ops": tipset.pop("ops"),
        "lineage": tips.tipset_lineage(store, tipset_id),
        "calls": play_store.get_llm_calls(store, tipset["llm_call_ids"]),
    }
