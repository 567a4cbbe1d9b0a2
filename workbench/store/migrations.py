"""Schema migrations: an append-only list of small named functions.

Each applied name is recorded in `_migrations`, so a database created by an older version
is brought up to date by running only the functions it has not seen. Never edit or
reorder a migration that has shipped; append a new one.
"""

from __future__ import annotations

from collections.abc import Callable

import duckdb

Migration = Callable[[duckdb.DuckDBPyConnection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_runs(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE runs (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            kind VARCHAR NOT NULL,          -- explain, play, experiment, ...
            status VARCHAR NOT NULL,        -- running, finished, failed
            params JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at TIMESTAMP
        )
        """
    )


@migration
def m002_explanations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE explanations (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,
            method VARCHAR NOT NULL,
            category VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            input_text VARCHAR NOT NULL,
            target_text VARCHAR,
            n_input_tokens INTEGER NOT NULL,
            n_target_tokens INTEGER NOT NULL,
            max_abs_delta DOUBLE,           -- completeness error, where the method has one
            seconds DOUBLE,
            payload JSON NOT NULL,          -- the whole Explanation, as Explanation.to_dict()
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


@migration
def m010_games(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE games (
            id VARCHAR PRIMARY KEY,         -- SHA-256 prefix of the compiled game file
            path VARCHAR NOT NULL,          -- where it was last played from
            level INTEGER,
            split VARCHAR,
            seed BIGINT,
            max_score INTEGER NOT NULL,
            walkthrough_steps INTEGER,
            ingredients JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


@migration
def m011_episodes(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE episodes (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR NOT NULL,
            game_id VARCHAR NOT NULL,
            trial INTEGER NOT NULL,
            condition VARCHAR NOT NULL,
            agent VARCHAR NOT NULL,
            tips JSON NOT NULL,             -- the tips in force for the whole episode
            won BOOLEAN NOT NULL,
            lost BOOLEAN NOT NULL,
            score INTEGER NOT NULL,
            max_score INTEGER NOT NULL,
            moves INTEGER NOT NULL,         -- steps taken
            stop_reason VARCHAR NOT NULL,   -- won, lost, max_steps
            invalid_actions INTEGER NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            seconds DOUBLE NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            UNIQUE (run_id, game_id, trial, condition)
        )
        """
    )


@migration
def m012_steps(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE steps (
            episode_id VARCHAR NOT NULL,
            idx INTEGER NOT NULL,           -- 0-based step number within the episode
            observation VARCHAR NOT NULL,   -- what the agent saw before acting
            admissible JSON NOT NULL,
            facts JSON NOT NULL,            -- ground-truth game state before acting
            action VARCHAR NOT NULL,        -- the command sent to the game
            raw_output VARCHAR,             -- the LLM's text, when it generated one
            valid BOOLEAN NOT NULL,         -- false: output mapped to no admissible command
            reward INTEGER NOT NULL,
            score INTEGER NOT NULL,         -- score after the action
            feedback VARCHAR NOT NULL,      -- the game's reply to the action
            done BOOLEAN NOT NULL,
            llm_call_id VARCHAR,
            PRIMARY KEY (episode_id, idx)
        )
        """
    )


@migration
def m013_llm_calls(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE llm_calls (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,
            episode_id VARCHAR,
            step_idx INTEGER,
            purpose VARCHAR NOT NULL,       -- act, score, tips, explain, ...
            backend VARCHAR NOT NULL,
            model VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            completion VARCHAR,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            latency_s DOUBLE,
            error VARCHAR,
            params JSON,                    -- decoding settings; never an API key
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


@migration
def m020_probes(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE probes (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,
            task VARCHAR NOT NULL,          -- textworld-state:carried, jsonl:FILE, ...
            model VARCHAR NOT NULL,
            n_examples INTEGER NOT NULL,
            labels JSON NOT NULL,
            split VARCHAR NOT NULL,         -- group (held-out games) or random
            params JSON,
            seconds DOUBLE,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )


@migration
def m021_probe_layers(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE probe_layers (
            probe_id VARCHAR NOT NULL,
            layer INTEGER NOT NULL,         -- 0 = embeddings .. L = last block
            accuracy DOUBLE NOT NULL,
            control_accuracy DOUBLE NOT NULL,
            selectivity DOUBLE NOT NULL,    -- accuracy - control accuracy
            majority DOUBLE NOT NULL,       -- always the most common training label
            n_train INTEGER NOT NULL,
            n_test INTEGER NOT NULL,
            PRIMARY KEY (probe_id, layer)
        )
        """
    )


@migration
def m030_metrics(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE metrics (
            id VARCHAR PRIMARY KEY,
            explanation_id VARCHAR NOT NULL,  -- the explanation the metric judges
            name VARCHAR NOT NULL,            -- comprehensiveness, token_f1, ...
            value DOUBLE,                     -- NULL where undefined (e.g. tau of constants)
            row_index INTEGER,                -- target row; NULL for the mean over rows
            details JSON,                     -- parameters, curve points, target token
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.execute("CREATE INDEX metrics_explanation ON metrics (explanation_id)")


@migration
def m040_tipsets(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE tipsets (
            id VARCHAR PRIMARY KEY,
            run_id VARCHAR,                 -- the play run whose episodes it came from
            kind VARCHAR NOT NULL,          -- self, expert, reflexion, general, manual
            scope VARCHAR NOT NULL,         -- game:<id> (one game's trials) or general
            condition VARCHAR,              -- the play condition it was written for
            game_id VARCHAR,                -- for a game-scoped set
            trial INTEGER,                  -- written after this trial of the game
            parent_id VARCHAR,              -- the version it revises (NULL: the first)
            version INTEGER NOT NULL,       -- 1 + the parent's version
            status VARCHAR NOT NULL,        -- ok, or failed (tips kept from the parent)
            error VARCHAR,                  -- why the LLM's replies were unusable
            episodes JSON NOT NULL,         -- ids of the episodes the LLM read
            llm_call_ids JSON NOT NULL,     -- the calls that wrote it (retries included)
            params JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.execute("CREATE INDEX tipsets_run ON tipsets (run_id, condition, game_id, trial)")


@migration
def m041_tips(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE tips (
            tipset_id VARCHAR NOT NULL,
            idx INTEGER NOT NULL,           -- 0-based position in the set
            text VARCHAR NOT NULL,
            score INTEGER NOT NULL,         -- importance (ExpeL-style votes); 1 elsewhere
            PRIMARY KEY (tipset_id, idx)
        )
        """
    )
    con.execute(
        """
        CREATE TABLE tip_ops (
            tipset_id VARCHAR NOT NULL,     -- the version the operation produced
            idx INTEGER NOT NULL,           -- order within the LLM's reply
            op VARCHAR NOT NULL,            -- ADD, EDIT, AGREE, REMOVE
            target INTEGER,                 -- 1-based tip number in the parent set
            text VARCHAR,                   -- new text (ADD, EDIT)
            old_text VARCHAR,               -- the target tip's text before the operation
            applied BOOLEAN NOT NULL,       -- false: it named a tip that does not exist
            note VARCHAR,
            llm_call_id VARCHAR,
            PRIMARY KEY (tipset_id, idx)
        )
        """
    )


@migration
def m042_step_explanations(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE step_explanations (
            explanation_id VARCHAR PRIMARY KEY,  -- the attribution in `explanations`
            run_id VARCHAR NOT NULL,
            episode_id VARCHAR NOT NULL,
            step_idx INTEGER NOT NULL,
            method VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            total DOUBLE NOT NULL,          -- the action's whole attribution
            segments JSON NOT NULL,         -- prompt segment -> attribution mass
            tips JSON NOT NULL,             -- per tip: mass and the ablation's outcome
            params JSON,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )
        """
    )
    con.execute("CREATE INDEX step_explanations_step ON step_explanations (episode_id, step_idx)")


@migration
def m043_experiment_results(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """
        CREATE TABLE experiment_results (
            run_id VARCHAR NOT NULL,        -- the experiment run (kind "experiment")
            phase VARCHAR NOT NULL,         -- train or test
            level INTEGER,
            condition VARCHAR NOT NULL,
            trial INTEGER NOT NULL,
            games INTEGER NOT NULL,
            episodes INTEGER NOT NULL,
            success DOUBLE NOT NULL,
            success_low DOUBLE,
            success_high DOUBLE,
            score DOUBLE NOT NULL,          -- normalised score
            score_low DOUBLE,
            score_high DOUBLE,
            steps_to_win DOUBLE
        )
        """
    )


@migration
def m044_experiment_paired(con: duckdb.DuckDBPyConnection) -> None:
    # Each condition against the baseline on the same games (agents.report.compare).
    for column in ("success_diff", "success_p", "score_diff", "score_p"):
        con.execute(f"ALTER TABLE experiment_results ADD COLUMN {column} DOUBLE")


@migration
def m050_run_planned(con: duckdb.DuckDBPyConnection) -> None:
    # How many episodes a play run means to record, set when it starts (and again when it
    # resumes or adds a trial), so that a running run shows its progress.
    con.execute("ALTER TABLE runs ADD COLUMN planned INTEGER")


@migration
def m060_probe_model_info(con: duckdb.DuckDBPyConnection) -> None:
    # Which weights were probed (workbench.models.ModelIdentity.to_dict(): base model,
    # adapter folder and hash, dtype); `model` names only the base. Explanations keep theirs
    # in their payload (Explanation.model_info).
    con.execute("ALTER TABLE probes ADD COLUMN model_info JSON")


@migration
def m070_step_mistakes(con: duckdb.DuckDBPyConnection) -> None:
    # The mistake miner's verdict on each recorded step (agents.mistakes): TextWorld's winning
    # plan before the step and what the command taken did to it.
    con.execute(
        """
        CREATE TABLE step_mistakes (
            episode_id VARCHAR NOT NULL,
            step_idx INTEGER NOT NULL,
            optimal JSON NOT NULL,          -- the plan before the step; [0]: the optimal command
            mistake BOOLEAN NOT NULL,
            regret INTEGER,                 -- moves it added to the plan; NULL: no plan left
            lost BOOLEAN NOT NULL,          -- the command lost the game
            PRIMARY KEY (episode_id, step_idx)
        )
        """
    )


@migration
def m080_decision_features(con: duckdb.DuckDBPyConnection) -> None:
    # Explanation features of each recorded LLM decision (agents.decision_features): what
    # the mistake predictor reads. One row per step and attribution method.
    con.execute(
        """
        CREATE TABLE decision_features (
            episode_id VARCHAR NOT NULL,
            step_idx INTEGER NOT NULL,
            method VARCHAR NOT NULL,        -- how the segment masses were computed
            model JSON NOT NULL,            -- the explaining model's identity
            features JSON NOT NULL,         -- name -> number (NaN stored as null)
            created_at TIMESTAMP DEFAULT current_timestamp,
            PRIMARY KEY (episode_id, step_idx, method)
        )
        """
    )


@migration
def m090_concept_results(con: duckdb.DuckDBPyConnection) -> None:
    # Global explanations in the concepts family (explainers.concepts): TCAV, steering and
    # RSA results, one row each. Their figures differ in shape (per layer, per alpha), so
    # the whole result is one JSON document; `summary` holds what a listing shows.
    con.execute(
        """
        CREATE TABLE concept_results (
            id VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,          -- tcav, steer or rsa
            run_id VARCHAR,                 -- the play run whose decisions or states it read
            concept VARCHAR,                -- the fact pattern (none for RSA)
            model VARCHAR NOT NULL,
            model_info JSON,
            summary VARCHAR NOT NULL,       -- one line for listings
            result JSON NOT NULL,           -- the result's to_dict()
            created_at TIMESTAMP DEFAULT current_timestamp
        )
        """
    )
