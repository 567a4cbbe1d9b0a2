"""Read queries behind the Streamlit dashboard (`streamlit_app/`), one function per view.

Every function opens one read-only connection, runs the few statements its view needs and
closes it again, so a batch run writing the same file (short transactions, see
`workbench.store.play`) is never blocked for longer than one query. Long listings are paged
with LIMIT/OFFSET and return the total beside the page. `change_token` is the cheap
fingerprint the dashboard keys its cache on: any write a run makes changes it.

Tables of features a database may predate (tip sets, explained steps) are looked up by name
first; a missing table reads as empty rather than failing.

    >>> from workbench.store import Store                       # doctest: +SKIP
    >>> from workbench.store import dashboard
    >>> dashboard.runs_page(Store(), limit=20).rows[0]["name"]
    'random-l1'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import duckdb

from workbench.store import Store, _all, _one

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
TIP_TABLES = ("tipsets", "tips", "tip_ops")


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


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'"
    ).fetchall()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return out


def _decode(rows: list[dict[str, Any]], *columns: str) -> list[dict[str, Any]]:
    for row in rows:
        for col in columns:
            value = row.get(col)
            if isinstance(value, str):
                try:
                    row[col] = json.loads(value)
                except ValueError:
                    pass  # a plain string stored in a JSON-typed column stays as it is
    return rows


# -- freshness ---------------------------------------------------------------------------


def change_token(store: Store) -> tuple:
    """A fingerprint of everything the dashboard shows: row counts and newest timestamps.

    Counting is metadata-cheap in DuckDB, so this stays in the low milliseconds even with
    millions of steps; a run that finishes (status change, no new rows) moves
    `finished_at`.
    """
    with store.connect(read_only=True) as con:
        tables = _tables(con)
        parts: list[Any] = []
        for table in _WATCHED:
            if table not in tables:
                parts.append(None)
                continue
            stamp = "max(created_at)" if "created_at" in tables[table] else "NULL"
            parts.extend(con.execute(f"SELECT count(*), {stamp} FROM {table}").fetchone())
        if "runs" in tables:
            parts.extend(
                con.execute(
                    "SELECT max(finished_at), count(*) FILTER (WHERE status = 'running') FROM runs"
                ).fetchone()
            )
    return tuple(str(p) for p in parts)


def counts(store: Store) -> dict[str, int]:
    """How much is recorded, per table (0 for tables this database does not have)."""
    with store.connect(read_only=True) as con:
        tables = _tables(con)
        return {
            t: int(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) if t in tables else 0
            for t in _WATCHED
        }


def _page(
    store: Store, count_sql: str, rows_sql: str, args: list[Any], limit: int, offset: int
) -> Page:
    """One page of rows (`rows_sql` ends in LIMIT ? OFFSET ?) and the total they come from,
    read on one connection so the two agree."""
    with store.connect(read_only=True) as con:
        total = con.execute(count_sql, args).fetchone()[0]
        rows = _all(con.execute(rows_sql, [*args, limit, offset]))
    return Page(rows, int(total), limit, offset)


# -- runs overview -----------------------------------------------------------------------


def runs_page(store: Store, limit: int = 50, offset: int = 0, kind: str | None = None) -> Page:
    """Runs, newest first, with their episode counts, success rate and normalised score."""
    where, args = ("WHERE r.kind = ?", [kind]) if kind else ("", [])
    return _page(
        store,
        f"SELECT count(*) FROM runs r {where}",
        "SELECT r.id, r.name, r.kind, r.status, r.created_at, r.finished_at,"
        " coalesce(e.episodes, 0) AS episodes, e.games, e.success, e.score,"
        " coalesce(e.steps, 0) AS steps, coalesce(e.invalid, 0) AS invalid_actions"
        " FROM runs r LEFT JOIN ("
        "   SELECT run_id, count(*) AS episodes, count(DISTINCT game_id) AS games,"
        "   avg(won::INTEGER) AS success,"
        "   avg(CASE WHEN max_score > 0 THEN score / max_score ELSE 0 END) AS score,"
        "   sum(moves) AS steps, sum(invalid_actions) AS invalid"
        "   FROM episodes GROUP BY run_id) e ON e.run_id = r.id"
        f" {where} ORDER BY r.created_at DESC, r.name LIMIT ? OFFSET ?",
        args,
        limit,
        offset,
    )


def play_runs(store: Store) -> list[dict[str, Any]]:
    """Every run that recorded episodes (for pickers): id, name, status, episodes."""
    with store.connect(read_only=True) as con:
        return _all(
            con.execute(
                "SELECT r.id, r.name, r.status, r.created_at, count(e.id) AS episodes"
                " FROM runs r JOIN episodes e ON e.run_id = r.id"
                " GROUP BY r.id, r.name, r.status, r.created_at ORDER BY r.created_at DESC"
            )
        )


def success_by_level(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    """Success rate and normalised score per (run, level, condition), as report() counts
    them: each game's trials are averaged first, then games are averaged, so `n` is the
    number of games and `sd_*` their spread (for confidence intervals)."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    with store.connect(read_only=True) as con:
        return _all(
            con.execute(
                "WITH per_game AS ("
                "  SELECT e.run_id, g.level, e.condition, e.game_id, count(*) AS episodes,"
                "  avg(e.won::INTEGER) AS success,"
                "  avg(CASE WHEN e.max_score > 0 THEN e.score / e.max_score ELSE 0 END) AS score,"
                "  avg(e.moves) FILTER (WHERE e.won) AS won_moves"
                "  FROM episodes e LEFT JOIN games g ON g.id = e.game_id"
                f"  WHERE e.run_id IN ({marks})"
                "  GROUP BY e.run_id, g.level, e.condition, e.game_id)"
                " SELECT p.run_id, r.name AS run, p.level, p.condition, count(*) AS n,"
                " sum(p.episodes) AS episodes, avg(p.success) AS success,"
                " stddev_samp(p.success) AS sd_success, avg(p.score) AS score,"
                " stddev_samp(p.score) AS sd_score, avg(p.won_moves) AS steps_to_win"
                " FROM per_game p JOIN runs r ON r.id = p.run_id"
                " GROUP BY p.run_id, r.name, p.level, p.condition"
                " ORDER BY r.name, p.level NULLS LAST, p.condition",
                run_ids,
            )
        )


def success_by_trial(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    """Success rate and normalised score per (run, condition, trial): learning over trials."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    with store.connect(read_only=True) as con:
        return _all(
            con.execute(
                "SELECT r.name AS run, e.condition, e.trial, count(*) AS episodes,"
                " avg(e.won::INTEGER) AS success,"
                " avg(CASE WHEN e.max_score > 0 THEN e.score / e.max_score ELSE 0 END) AS score"
                f" FROM episodes e JOIN runs r ON r.id = e.run_id WHERE e.run_id IN ({marks})"
                " GROUP BY r.name, e.condition, e.trial ORDER BY r.name, e.condition, e.trial",
                run_ids,
            )
        )


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
    where, args = ["e.run_id = ?"], [run_id]
    if condition:
        where.append("e.condition = ?")
        args.append(condition)
    if outcome:
        where.append("e.stop_reason = ?")
        args.append(outcome)
    clause = " AND ".join(where)
    return _page(
        store,
        f"SELECT count(*) FROM episodes e WHERE {clause}",
        "SELECT e.id, e.game_id AS game, g.level, e.trial, e.condition, e.agent, e.won,"
        " e.score, e.max_score, e.moves, e.stop_reason, e.invalid_actions,"
        " e.prompt_tokens, e.completion_tokens, e.seconds, e.created_at"
        " FROM episodes e LEFT JOIN games g ON g.id = e.game_id"
        f" WHERE {clause} ORDER BY g.level, e.game_id, e.condition, e.trial, e.id"
        " LIMIT ? OFFSET ?",
        args,
        limit,
        offset,
    )


def conditions(store: Store, run_id: str) -> list[str]:
    with store.connect(read_only=True) as con:
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
    with store.connect(read_only=True) as con:
        header = _one(
            con.execute(
                "SELECT e.*, r.name AS run_name, g.level, g.split, g.path AS game_path"
                " FROM episodes e JOIN runs r ON r.id = e.run_id"
                " LEFT JOIN games g ON g.id = e.game_id WHERE e.id = ?",
                [episode_id],
            )
        )
        if header is None:
            return None
        steps = _all(
            con.execute(
                "SELECT idx, observation, admissible, action, raw_output, valid, reward, score,"
                " feedback, done, llm_call_id FROM steps WHERE episode_id = ?"
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
                        f" latency_s, error, model FROM llm_calls WHERE id IN ({marks})",
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
    _decode([header], "tips")
    _decode(steps, "admissible")
    for step in steps:
        call = calls.get(step.pop("llm_call_id") or "", {})
        step["prompt"] = call.get("prompt")
        step["completion"] = call.get("completion")
        step["llm_error"] = call.get("error")
        step["prompt_tokens"] = call.get("prompt_tokens")
        step["latency_s"] = call.get("latency_s")
    return {
        "episode": header,
        "steps": Page(steps, int(header["moves"]), limit, offset),
        "other_calls": other_calls,
    }


# -- run comparison ----------------------------------------------------------------------


def compare_runs(store: Store, run_ids: list[str]) -> list[dict[str, Any]]:
    """Per game and run: episodes, success rate, normalised score and mean moves (long
    form; the page pivots runs into columns)."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    with store.connect(read_only=True) as con:
        return _all(
            con.execute(
                "SELECT e.game_id AS game, g.level, r.name AS run, count(*) AS episodes,"
                " avg(e.won::INTEGER) AS success,"
                " avg(CASE WHEN e.max_score > 0 THEN e.score / e.max_score ELSE 0 END) AS score,"
                " avg(e.moves) AS moves, sum(e.invalid_actions) AS invalid_actions"
                " FROM episodes e JOIN runs r ON r.id = e.run_id"
                " LEFT JOIN games g ON g.id = e.game_id"
                f" WHERE e.run_id IN ({marks})"
                " GROUP BY e.game_id, g.level, r.name ORDER BY g.level, e.game_id, r.name",
                run_ids,
            )
        )


# -- explanations, metrics, probes -------------------------------------------------------


def explanations_page(
    store: Store, limit: int = 50, offset: int = 0, method: str | None = None
) -> Page:
    """Explanations newest first, without their payloads."""
    where, args = ("WHERE x.method = ?", [method]) if method else ("", [])
    return _page(
        store,
        f"SELECT count(*) FROM explanations x {where}",
        "SELECT x.id, x.created_at, x.method, x.category, x.model, x.input_text,"
        " x.target_text, x.n_input_tokens, x.n_target_tokens, x.max_abs_delta,"
        " x.seconds, (SELECT count(*) FROM metrics m WHERE m.explanation_id = x.id)"
        f" AS metrics FROM explanations x {where}"
        " ORDER BY x.created_at DESC, x.id LIMIT ? OFFSET ?",
        args,
        limit,
        offset,
    )


def explanation_methods(store: Store) -> list[str]:
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT DISTINCT method FROM explanations ORDER BY method").fetchall()
    return [r[0] for r in rows]


def explanation_detail(store: Store, exp_id: str) -> dict[str, Any] | None:
    """An explanation's full record (as `Explanation.to_dict()`) with its metric values."""
    with store.connect(read_only=True) as con:
        row = con.execute("SELECT payload FROM explanations WHERE id = ?", [exp_id]).fetchone()
        if row is None:
            return None
        metrics = _all(
            con.execute(
                "SELECT name, value, row_index AS row, details FROM metrics"
                " WHERE explanation_id = ? ORDER BY name, row_index NULLS FIRST",
                [exp_id],
            )
        )
    return {"explanation": json.loads(row[0]), "metrics": _decode(metrics, "details")}


def probes_page(store: Store, limit: int = 50, offset: int = 0) -> Page:
    """Probe runs newest first, each with its best layer by selectivity."""
    return _page(
        store,
        "SELECT count(*) FROM probes",
        "SELECT p.id, p.created_at, p.task, p.model, p.n_examples, p.split,"
        " arg_max(l.layer, l.selectivity) AS best_layer,"
        " max(l.selectivity) AS best_selectivity, max(l.accuracy) AS best_accuracy"
        " FROM probes p LEFT JOIN probe_layers l ON l.probe_id = p.id"
        " GROUP BY p.id, p.created_at, p.task, p.model, p.n_examples, p.split"
        " ORDER BY p.created_at DESC, p.id LIMIT ? OFFSET ?",
        [],
        limit,
        offset,
    )


def probe_layers(store: Store, probe_id: str) -> list[dict[str, Any]]:
    with store.connect(read_only=True) as con:
        return _all(
            con.execute(
                "SELECT layer, accuracy, control_accuracy, selectivity, majority, n_train,"
                " n_test FROM probe_layers WHERE probe_id = ? ORDER BY layer",
                [probe_id],
            )
        )


# -- tip sets and explained steps --------------------------------------------------------


def tips_available(store: Store) -> bool:
    """Whether this database has the tip-set tables (written by the tips feature)."""
    with store.connect(read_only=True) as con:
        return set(TIP_TABLES) <= set(_tables(con))


def tipsets_page(store: Store, limit: int = 50, offset: int = 0) -> Page:
    """Tip sets newest first, with their run's name and number of tips."""
    return _page(
        store,
        "SELECT count(*) FROM tipsets",
        "SELECT t.id, t.kind, t.scope, t.condition, t.game_id, t.trial, t.version,"
        " t.status, t.parent_id, r.name AS run,"
        " (SELECT count(*) FROM tips WHERE tipset_id = t.id) AS n_tips, t.created_at"
        " FROM tipsets t LEFT JOIN runs r ON r.id = t.run_id"
        " ORDER BY t.created_at DESC, t.version DESC, t.id LIMIT ? OFFSET ?",
        [],
        limit,
        offset,
    )


def tipset_detail(store: Store, tipset_id: str) -> dict[str, Any] | None:
    """A tip set with its tips, the operations that made it (ADD / EDIT / AGREE / REMOVE),
    its provenance (run, episodes read, the LLM calls that wrote it) and its lineage (the
    chain of parent versions, oldest first)."""
    with store.connect(read_only=True) as con:
        tipset = _one(
            con.execute(
                "SELECT t.*, r.name AS run FROM tipsets t LEFT JOIN runs r ON r.id = t.run_id"
                " WHERE t.id = ?",
                [tipset_id],
            )
        )
        if tipset is None:
            return None
        _decode([tipset], "episodes", "llm_call_ids", "params")
        tips = _all(
            con.execute(
                "SELECT idx, text, score FROM tips WHERE tipset_id = ? ORDER BY idx", [tipset_id]
            )
        )
        ops = _all(
            con.execute(
                "SELECT idx, op, target, text, old_text, applied, note FROM tip_ops"
                " WHERE tipset_id = ? ORDER BY idx",
                [tipset_id],
            )
        )
        lineage = _all(
            con.execute(
                "WITH RECURSIVE chain(id, parent_id, version, kind, status, created_at) AS ("
                "  SELECT id, parent_id, version, kind, status, created_at FROM tipsets"
                "  WHERE id = ?"
                "  UNION ALL SELECT t.id, t.parent_id, t.version, t.kind, t.status, t.created_at"
                "  FROM tipsets t JOIN chain c ON t.id = c.parent_id)"
                " SELECT * FROM chain ORDER BY version",
                [tipset_id],
            )
        )
        call_ids = tipset["llm_call_ids"] or []
        calls = []
        if call_ids:
            marks = ", ".join("?" for _ in call_ids)
            calls = _all(
                con.execute(
                    "SELECT id, purpose, model, prompt, completion, error, created_at"
                    f" FROM llm_calls WHERE id IN ({marks}) ORDER BY created_at",
                    list(call_ids),
                )
            )
    return {"tipset": tipset, "tips": tips, "ops": ops, "lineage": lineage, "calls": calls}


def diff_tipsets(store: Store, a: str, b: str) -> list[dict[str, Any]]:
    """Tips of set `a` against set `b`, each text once: only in a, only in b, or in both
    (with its score in each; a score that moved is a change too)."""
    with store.connect(read_only=True) as con:
        rows = con.execute(
            "SELECT tipset_id, text, score FROM tips WHERE tipset_id IN (?, ?) ORDER BY idx",
            [a, b],
        ).fetchall()
    in_a = {text: score for tid, text, score in rows if tid == a}
    in_b = {text: score for tid, text, score in rows if tid == b}
    out = []
    for text in [*in_a, *(t for t in in_b if t not in in_a)]:
        if text in in_a and text in in_b:
            change = "in both" if in_a[text] == in_b[text] else "score changed"
        else:
            change = "only in A" if text in in_a else "only in B"
        out.append(
            {"change": change, "tip": text, "score A": in_a.get(text), "score B": in_b.get(text)}
        )
    order = {"only in A": 0, "only in B": 1, "score changed": 2, "in both": 3}
    return sorted(out, key=lambda r: order[r["change"]])


def step_explanations(store: Store, episode_id: str, step: int) -> list[dict[str, Any]]:
    """Stored explain-step results for one step, newest first (empty without the table)."""
    with store.connect(read_only=True) as con:
        if "step_explanations" not in _tables(con):
            return []
        rows = _all(
            con.execute(
                "SELECT explanation_id, method, action, total, segments, tips, params, created_at"
                " FROM step_explanations WHERE episode_id = ? AND step_idx = ?"
                " ORDER BY created_at DESC",
                [episode_id, step],
            )
        )
    return _decode(rows, "segments", "tips", "params")
