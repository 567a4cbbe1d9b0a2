"""Every dashboard page, run by Streamlit's AppTest against a database filled by real runs:
what a user sees on each, and that game and LLM text never turns into markup."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import agents.explain_step
from agents.mistakes import mistake_report, verb
from tests.streamlit_app.conftest import (
    EXPLAINED_STEP,
    SCRIPT,
    SCRIPT_OBSERVATION,
    SCRIPT_TIP,
    TIPS,
)
from workbench.store import Store, explanations
from workbench.store import play as play_store
from workbench.store import tips as tips_store

APP = str(Path(__file__).parents[2] / "streamlit_app" / "app.py")
TIMEOUT = 60
PAGES = ("overview", "episode", "compare", "tips", "search", "explanations", "methods")
PAGES += ("probing", "concepts", "features", "explain_step", "mistakes", "patching")


def open_page(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything shown as plain text or code on the page."""
    return "\n".join([t.value for t in at.text] + [c.value for c in at.code])


def frame(at: AppTest, column: str):
    """The first table on the page with this column."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def htmls(at: AppTest) -> list[str]:
    return [h.proto.body for h in at.get("html")]


def markup(at: AppTest) -> str:
    """Everything the browser interprets as markup: markdown, captions, HTML, labels."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += htmls(at)
    parts += [e.label for e in at.expander] + [m.label for m in at.metric]
    return "\n".join(parts)


def main_links(at: AppTest) -> list[tuple[str, str]]:
    """The page links of the page itself (the sidebar holds the menu)."""
    return [(link.proto.page, link.proto.label) for link in at.main.get("page_link")]


def test_empty_database_says_how_to_fill_it(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    at = open_page()
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, (page, [e.message for e in at.exception])
        assert at.info, page
        shown = " ".join(i.value for i in at.info)
        assert "workbench" in shown, page  # says which command fills it
        assert not at.dataframe, f"{page} shows a table on an empty database"


def test_every_page_is_in_the_menu_and_the_home_page_is_the_overview(filled_env):
    at = open_page()
    assert at.title[0].value == "Runs overview"
    # Every page's sidebar says what is running.
    assert [c.value for c in at.sidebar.caption][0] == "running: live-l1, 1 of 4 episodes"
    menu = [link.proto.page for link in at.sidebar.get("page_link")]
    assert menu == ["overview", "episode", "compare", "tips", "search", "explanations"] + [
        "methods",
        "probing",
        "concepts",
        "features",
        "explain-step",
        "mistakes",
        "patching",
    ]


def test_overview_shows_running_runs_and_charts_by_level_condition_and_trial(filled_env, filled):
    at = open_page()
    metrics = {m.label: m.value for m in at.metric}
    # random 2x2, expert 2, llm 1 + the script one, tiny llm 1, live 1 (of 4 planned)
    assert int(metrics["episodes"]) == 4 + 2 + 2 + 1 + 1
    running = [p.proto.text for p in at.get("progress")]
    assert running == [running[0]] and running[0].startswith(
        "live-l1 (play) is running: 1 of 4 episodes"
    )
    assert "steps/s" in running[0] and "elapsed" in running[0]
    runs = at.dataframe[0].value
    assert {"random-l1", "expert-l1", "llm-l1", "live-l1"} <= set(runs["name"])
    live = runs[runs["name"] == "live-l1"].iloc[0]
    assert live["status"] == "running" and live["progress"] == "1 / 4"
    assert live["duration"].endswith("so far")
    expert = runs[runs["name"] == "expert-l1"].iloc[0]
    assert expert["success"] == 1.0 and expert["episodes"] == 2 and expert["progress"] == "2 / 2"
    assert expert["status"] == "finished" and not expert["duration"].endswith("so far")
    at.multiselect(key="overview-runs").set_value([filled.random_run, filled.expert_run]).run()
    by_level = frame(at, "success_low")
    expert_rows = by_level[by_level["run"] == "expert-l1"]
    assert list(expert_rows["success"]) == [1.0] and list(expert_rows["games"]) == [2]
    # Two won games of two: a Wilson interval, not [100%, 100%].
    assert expert_rows["success_low"].iloc[0] == pytest.approx(0.3424, abs=1e-4)
    charts = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert len(charts) == 4  # two by level, two over trials
    # Runs are told apart by colour (one colour per run), zero values by a tick.
    assert all('"field": "run"' in spec.replace(":", ": ").replace(":  ", ": ") for spec in charts)
    assert sum('"tick"' in spec for spec in charts) == 2


def test_episode_viewer_walks_steps_with_previous_and_next(filled_env, filled):
    at = open_page("episode", episode=filled.tiny_episode)
    assert at.selectbox(key="episode-id").value == filled.tiny_episode
    steps = frame(at, "margin")
    assert list(steps["step"]) == [0, 1, 2, 3] and steps["margin"].notna().all()
    assert at.number_input(key="episode-step").value == 0
    assert at.button(key="episode-prev").disabled
    at.button(key="episode-next").click().run()
    at.button(key="episode-next").click().run()
    assert at.number_input(key="episode-step").value == 2
    assert at.query_params["step"] == "2"
    shown = texts(at)
    stored = play_store.get_steps(Store(filled.path), filled.tiny_episode)[2]
    assert stored["prompt"] in shown and stored["observation"] in shown
    # Why this command: its margin over the runner-up, from the ranked candidates.
    margin = next(m for m in at.metric if m.label == "margin over the runner-up")
    assert float(margin.value) == pytest.approx(steps["margin"][2], abs=1e-3)
    candidates = frame(at, "chosen")
    assert candidates[candidates["chosen"]]["command"].tolist() == [stored["action"]]
    # The game's state at the step: TextWorld facts.
    assert frame(at, "fact")["fact"].tolist() == stored["facts"]
    code = [c for c in at.code if c.value == stored["prompt"]][0]
    assert code.proto.wrap_lines
    at.button(key="episode-prev").click().run()
    assert at.number_input(key="episode-step").value == 1
    assert not at.warning and not at.exception


def test_episode_viewer_shows_llm_text_and_invalid_actions(filled_env, filled):
    at = open_page("episode")
    at.selectbox(key="episode-run").set_value(filled.llm_run).run()
    episodes = play_store.list_episodes(Store(filled.path), filled.llm_run)
    real = next(e for e in episodes if e["id"] != filled.script_episode)
    at.selectbox(key="episode-id").set_value(real["id"]).run()
    assert not at.exception
    steps = frame(at, "margin")
    assert list(steps["step"]) == [0, 1] and not steps["valid"].any()
    assert any("Invalid action" in e.value for e in at.error)
    shown = texts(at)
    assert "Goal: You are hungry!" in shown  # the full prompt
    assert SCRIPT in shown  # the completion, verbatim
    assert frame(at, "tip")["tip"].tolist() == [SCRIPT_TIP]
    assert at.selectbox(key="episode-condition").format_func(None) == "all"


def test_episode_deep_link_and_step_paging(filled_env, filled):
    store = Store(filled.path)
    episode = play_store.list_episodes(store, filled.random_run)[0]
    at = open_page("episode", episode=episode["id"], step="3")
    assert at.selectbox(key="episode-id").value == episode["id"]
    assert at.number_input(key="episode-step").value == 3
    assert {m.label: m.value for m in at.metric}["moves"] == str(episode["moves"])
    at.selectbox(key="steps-size").set_value(10).run()
    table = frame(at, "margin")
    actions = [s["action"] for s in play_store.get_steps(store, episode["id"])]
    assert list(table["action"]) == actions[:10]


def test_script_in_observation_tip_and_action_stays_inert_text(filled_env, filled):
    at = open_page("episode", episode=filled.script_episode)
    shown = texts(at)
    assert SCRIPT_OBSERVATION in shown  # shown verbatim, as text
    assert frame(at, "tip")["tip"].tolist() == [SCRIPT_TIP]
    assert "<script" not in markup(at).lower()


def test_run_comparison_puts_runs_side_by_side_with_per_game_differences(filled_env, filled):
    at = open_page("compare")
    at.multiselect(key="compare-runs").set_value([filled.random_run, filled.expert_run]).run()
    assert not at.exception
    table = frame(at, "expert-l1")
    assert {"random-l1", "expert-l1"} <= set(table.columns)
    assert len(table) == 2 and (table["expert-l1"] == 1.0).all()
    paired = frame(at, "test").set_index("measure")
    assert paired.loc["success", "test"] == "mcnemar" and paired.loc["success", "pairs"] == 2
    assert paired.loc["score", "test"] == "paired t"
    # Per game: expert (B) against random (A) on the trial both played, with its interval.
    per_game = next(d.value for d in at.dataframe if {"game", "B - A"} <= set(d.value.columns))
    assert set(per_game["game"]) == set(table["game"]) and (per_game["pairs"] == 1).all()
    assert (per_game[per_game["measure"] == "success"]["B - A"] == 1.0).all()
    at.radio(key="compare-measure").set_value("moves").run()
    moves = frame(at, "random-l1")
    assert (moves["random-l1"] > 0).all()


def test_explanation_heatmap_escapes_tokens_and_metrics_say_which_way_is_better(filled_env, filled):
    at = open_page("explanations", explanation=filled.explanation)
    assert at.selectbox(key="exp-id").value == filled.explanation
    label = at.selectbox(key="exp-id").format_func(filled.explanation)
    assert "ig · " in label and "-> ' fridge<b>'" in label  # labelled by input and target
    heatmaps = htmls(at)
    assert len(heatmaps) == 1  # the chosen target's row
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in heatmaps[0]
    assert "section totals" not in heatmaps[0]  # no sections outside an agent prompt
    assert "blue pushes away" in heatmaps[0]  # the colour scale
    at.selectbox(key="exp-target").set_value(1).run()
    assert "target 2" in texts(at)
    means = frame(at, "better").set_index("metric")
    assert means.loc["comprehensiveness", "value"] == 0.42
    assert means.loc["comprehensiveness", "better"] == "higher"
    assert means.loc["deletion_auc", "better"] == "lower"
    assert at.get("vega_lite_chart")  # the deletion curve
    assert not at.warning  # converged: no warning
    assert "<script" not in markup(at).lower()
    assert at.selectbox(key="exp-method").format_func(None) == "all"
    # Which weights were explained: the adapter and its hash, not the base model alone.
    identity = "tiny-llama + adapter /adapters/l1-3 (sha256 1a2b3c4d) (float32)"
    assert any(f" on {identity} · " in c.value for c in at.caption)
    listed = frame(at, "max_abs_delta").set_index("id")
    assert listed.loc[filled.explanation, "model"] == "tiny-llama + l1-3 (1a2b3c4d)"


def test_a_non_converged_ig_is_flagged_where_its_scores_are(filled_env, filled):
    at = open_page("explanations", explanation=filled.step_explanation)
    warning = " ".join(w.value for w in at.warning)
    assert "Not converged" in warning and "--steps auto" in warning and "delta" in warning
    (heatmap,) = htmls(at)
    assert "section totals" in heatmap and "tips " in heatmap and "history " in heatmap
    assert "NOT CONVERGED" in texts(at)


def test_metrics_are_set_beside_the_random_baseline(filled_env, filled):
    record = explanations.run_explanations(Store(filled.path), filled.comparison)[0]
    at = open_page("explanations", explanation=record["id"])
    table = frame(at, "random baseline")
    assert table["random baseline"].notna().all()
    assert set(table["beats random"].dropna()) <= {True, False}


def test_attention_map_toggles_the_sink_token_and_scaling(filled_env, filled):
    at = open_page("explanations", explanation=filled.attention)
    assert at.selectbox(key="attention-map").options == ["final map"]
    (chart,) = at.get("vega_lite_chart")
    assert "datum.masked" in chart.proto.spec  # the causal mask is drawn, in grey
    assert "0: the" in chart.proto.spec
    at.toggle(key="attention-sink").set_value(True).run()
    (chart,) = at.get("vega_lite_chart")
    assert "0: the" not in chart.proto.spec  # the sink token is gone from both axes
    at.radio(key="attention-scale").set_value("log").run()
    assert "log10 weight" in at.get("vega_lite_chart")[0].proto.spec


def test_probing_flags_negative_selectivity(filled_env, filled):
    at = open_page("probing")
    assert at.selectbox(key="probe-id").value == filled.probe
    layers = frame(at, "control_accuracy")
    assert list(layers["layer"]) == [0, 1, 2]
    assert layers["accuracy"].tolist() == [0.45, 0.8, 0.7]
    warning = " ".join(w.value for w in at.warning)
    assert "Selectivity is zero or negative at layer(s) 0" in warning
    assert "majority label at layer(s) 0" in warning
    assert any("selectivity: higher is better" in c.value for c in at.caption)
    assert at.get("vega_lite_chart")
    # Which weights were probed: the adapter and its hash, not the base model alone.
    assert frame(at, "best_layer")["model"].tolist() == ["tiny-llama + l1-3 (1a2b3c4d)"]
    assert "model tiny-llama + adapter /adapters/l1-3 (sha256 1a2b3c4d) (float32)" in [
        c.value for c in at.caption
    ]


def test_concepts_page_on_an_empty_database_names_the_commands(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    at = open_page("concepts")
    hint = " ".join(i.value for i in at.info)
    for command in ("`workbench tcav`", "`workbench steer`", "`workbench rsa`"):
        assert command in hint
    assert not at.dataframe and not at.get("image")


def test_concepts_page_lists_results_newest_first_and_shows_tcav(filled_env, filled):
    at = open_page("concepts")
    listed = frame(at, "summary")
    assert sorted(listed["kind"]) == ["rsa", "steer", "tcav"]
    assert list(listed["created_at"]) == sorted(listed["created_at"], reverse=True)
    tcav = listed.set_index("kind").loc["tcav"]
    assert tcav["model"] == "tiny-llama + l1-3 (1a2b3c4d)"
    assert tcav["summary"] == "1 of 3 layers differ from random (1)"
    at = open_page("concepts", result=filled.concepts["tcav"])
    assert at.selectbox(key="concept-id").value == filled.concepts["tcav"]
    assert at.get("image")  # the figure
    layers = frame(at, "corrected p")
    assert layers["layer"].tolist() == [0, 1, 2]
    assert layers["significant"].tolist() == [False, True, False]
    assert layers["random (mean ± std)"].tolist()[0] == "0.500 ± 0.050"
    # Which weights: the adapter and its hash, not the base model alone.
    assert "model tiny-llama + adapter /adapters/l1-3 (sha256 1a2b3c4d) (float32)" in [
        c.value for c in at.caption
    ]


def test_concepts_page_shows_steering_effects_and_episodes(filled_env, filled):
    at = open_page("concepts", result=filled.concepts["steer"])
    assert at.get("image")
    effects = frame(at, "difference [95% interval]")
    assert effects["alpha"].tolist() == [-2.0, 2.0]
    assert effects["difference [95% interval]"].tolist()[1] == "+0.280 [+0.100, +0.460]"
    episodes = frame(at, "won / episodes")
    assert episodes["won / episodes"].tolist() == ["1 / 2", "2 / 2", "0 / 2"]
    assert episodes["direction"].tolist() == ["concept", "concept", "random"]
    assert any("model tiny-llama" == c.value for c in at.caption)


def test_concepts_page_shows_rsa_against_its_noise_ceiling(filled_env, filled):
    at = open_page("concepts", result=filled.concepts["rsa"])
    assert at.get("image")
    layers = frame(at, "rho")
    assert layers["rho"].tolist() == [0.05, 0.3, 0.2]
    assert layers["ceiling"].tolist()[:2] == [0.6, 0.7] and pd.isna(layers["ceiling"][2])
    assert any("run tiny-llm-l1, random-l1" in c.value for c in at.caption)
    at.selectbox(key="concept-id").set_value(filled.concepts["tcav"]).run()
    assert not at.exception
    assert "corrected p" in frame(at, "layer").columns


def test_tip_sets_show_tips_history_provenance_and_diff(filled_env, filled):
    first, merged = filled.tipsets
    at = open_page("tips", tipset=merged)
    assert at.selectbox(key="tipset-id").value == merged
    assert frame(at, "text")["text"].tolist() == [SCRIPT_TIP, "Eat the meal last."]
    assert frame(at, "op")["op"].tolist() == ["AGREE", "REMOVE", "ADD"]
    lineage = next(
        d.value for d in at.dataframe if {"version"} == set(d.value.columns) & {"version", "n_tips"}
    )
    assert lineage["id"].tolist() == [first, merged]
    assert main_links(at) == [("episode", f"episode {filled.script_episode}")]
    diff = frame(at, "change")
    assert dict(zip(diff["tip"], diff["change"])) == {
        "Open the fridge.": "only in A",
        "Eat the meal last.": "only in B",
        SCRIPT_TIP: "score changed",
    }
    at.selectbox(key="tipset-id").set_value(first).run()
    assert SCRIPT_TIP in texts(at)  # the completion of the LLM call that wrote it
    assert "<script" not in markup(at).lower()


def test_search_finds_prompts_and_links_their_steps(filled_env, filled):
    at = open_page("search", q="Open the fridge first")
    hits = frame(at, "context")
    assert set(hits["run"]) == {"tiny-llm-l1"} and (hits["in"] == "prompt").all()
    assert all("Open the fridge first" in c for c in hits["context"])
    links = main_links(at)
    assert links and all(page == "episode" for page, _ in links)
    at.text_input(key="search-text").set_value("100%_no such text").run()
    assert "No prompt or completion contains" in at.info[0].value


def test_methods_side_by_side_against_the_random_baseline(filled_env, filled):
    at = open_page("methods", comparison=filled.comparison)
    table = frame(at, "method")
    assert table["method"].tolist() == ["occlusion", "saliency", "random"]
    assert "comprehensiveness (higher)" in table.columns
    assert "sufficiency (lower)" in table.columns
    assert len(htmls(at)) == 3  # one heatmap per method, the same input
    assert [label for _, label in main_links(at)][0].startswith("occlusion")


def test_patching_page_draws_the_layer_by_position_heatmap(filled_env, filled):
    at = open_page("patching", explanation=filled.patching)
    assert at.selectbox(key="patch-id").value == filled.patching
    (chart,) = at.get("vega_lite_chart")
    assert "restoration" in chart.proto.spec
    cells = frame(at, "restoration")
    assert cells["layer"].nunique() == 3  # resid before each of the two blocks and after
    assert cells["position"].nunique() == len("the milk is in the fridge".split())


@dataclass
class FakeStepExplanation:
    explanation_id: str
    segments: dict[str, float]
    tips: list[dict] = field(default_factory=list)
    action: str = ""
    total: float = 0.0
    objective: str = "choice"
    value: float = -0.5
    check: dict = field(default_factory=lambda: {"exact": True, "evaluations": 4, "delta": 0.0})


def test_explain_this_step_runs_the_analysis_with_progress(filled_env, filled, monkeypatch):
    calls = []

    def explain_step(
        store, run, episode_id, step, method="auto", lm=None, progress=None, objective=None
    ):
        calls.append((run, episode_id, step, method, lm, objective))
        progress(1, 2)
        progress(2, 2)
        return FakeStepExplanation(
            "e1",
            {"instructions": 0.1, "tips": 0.7, "history": 0.0, "observation": 0.3},
            [{"tip": SCRIPT_TIP, "mass": 0.5, "action_changed": True, "new_action": "look"}],
            SCRIPT,
            1.1,
        )

    monkeypatch.setattr(agents.explain_step, "explain_step", explain_step)
    episodes = play_store.list_episodes(Store(filled.path), filled.llm_run)
    real = next(e for e in episodes if e["id"] != filled.script_episode)
    at = open_page("explain_step", episode=real["id"], step="1")
    assert at.number_input(key="xs-step").value == 1
    at.button(key="xs-go").click().run()
    assert not at.exception
    assert calls == [("llm-l1", real["id"], 1, "auto", None, "choice")]
    assert at.get("progress")[0].proto.text == "done"
    segments = frame(at, "segment")
    assert dict(zip(segments["segment"], segments["mass"]))["tips"] == 0.7
    tips = frame(at, "action changes without it")
    assert tips["tip"].tolist() == [SCRIPT_TIP, "(tips header, bullets and line breaks)"]
    assert tips["mass"].tolist() == pytest.approx([0.5, 0.2])  # adds up to the segment
    assert "<script" not in markup(at).lower()


def test_explain_this_step_defaults_to_llm_runs_and_its_masses_add_up(filled_env, filled):
    at = open_page("explain_step")
    assert "llm" in at.selectbox(key="xs-run").format_func(at.selectbox(key="xs-run").value)
    at = open_page("explain_step", episode=filled.tiny_episode, step=str(EXPLAINED_STEP))
    stored = tips_store.list_step_explanations(
        Store(filled.path), filled.tiny_episode, EXPLAINED_STEP
    )[-1]  # the fixture's, the oldest
    segments = frame(at, "segment")
    masses = dict(zip(segments["segment"], segments["mass"]))
    assert masses["tips"] == pytest.approx(stored["segments"]["tips"])
    tips = frame(at, "action changes without it")
    assert tips["tip"].tolist() == [*TIPS, "(tips header, bullets and line breaks)"]
    assert tips["mass"].sum() == pytest.approx(masses["tips"], abs=1e-9)
    assert tips["mass"].iloc[-1] != 0.0  # the "Tips:" header and bullets carry mass
    warning = " ".join(w.value for w in at.warning)
    assert "Not converged" in warning and "steps=auto" in warning
    (heatmap,) = htmls(at)  # the step's prompt, inline, in its sections
    for section in ("instructions", "tips", "history", "observation", "admissible"):
        assert f"{section} " in heatmap
    # The prompt's own characters: each line break marked and kept, so the heatmap wraps
    # where the prompt does, and the tips section starts on its own line.
    assert ">Tips:⏎\n</span>" in heatmap and ">- </span>" in heatmap
    assert "tips (17 tokens" in heatmap


def test_explain_this_step_live_on_a_model_directory(filled_env, filled):
    at = open_page("explain_step", episode=filled.tiny_episode, step="1")
    at.selectbox(key="xs-method").set_value("saliency").run()
    at.text_input(key="xs-model").set_value(str(filled.model_dir)).run()
    at.button(key="xs-go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("progress")[0].proto.text == "done"
    assert at.success[0].value == "explained with saliency"
    tips = frame(at, "action changes without it")
    segments = frame(at, "segment")
    tips_total = dict(zip(segments["segment"], segments["mass"]))["tips"]
    assert tips["mass"].sum() == pytest.approx(tips_total, abs=1e-9)


def test_mistakes_page_sets_a_mistake_beside_a_correct_decision_of_its_kind(filled_env, filled):
    report = mistake_report(Store(filled.path), filled.random_run)
    at = open_page("mistakes", run=filled.random_run)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["decisions judged"] == str(report.decisions)
    assert metrics["mistakes"] == str(report.mistakes)
    failed = frame(at, "first mistake at")
    assert list(failed["episode"]) == [f.episode_id for f in report.failed]
    assert list(failed["chosen"]) == [f.first_mistake.chosen for f in report.failed]
    kinds = frame(at, "optimal verb")
    assert kinds["mistakes"].sum() == report.mistakes
    (levels,) = [
        d.value for d in at.dataframe if list(d.value.columns[:2]) == ["level", "decisions"]
    ]
    assert list(levels["decisions"]) == [r.decisions for r in report.by_level]
    # The first failed episode's first mistake, beside a correct decision of its kind.
    mistake = report.failed[0].first_mistake
    correct = report.correct_decisions(verb(mistake.optimal_command))[0]
    codes = [c.value for c in at.code]
    assert codes == [
        mistake.chosen,
        mistake.optimal_command,
        correct.chosen,
        correct.optimal_command,
    ]
    assert at.selectbox(key="mk-step").value == mistake.step
    shown = texts(at)
    assert "there is no LLM decision to explain" in shown
    assert ("episode", f"step {mistake.step} in the episode viewer") in main_links(at)


def test_mistakes_page_shows_a_stored_explanation_or_the_command_that_makes_one(filled_env, filled):
    db = Store(filled.path)
    report = mistake_report(db, filled.tiny_run)
    (failed,) = report.failed
    mistakes = [s for s in report.steps if s.mistake]
    assert failed.first_mistake == mistakes[0] and EXPLAINED_STEP in [s.step for s in mistakes]
    at = open_page("mistakes", run=filled.tiny_run)
    assert at.selectbox(key="mk-step").value == mistakes[0].step  # the first, by default
    # A mistake without a stored explanation: the command that makes one.
    bare = next(
        s
        for s in mistakes
        if not tips_store.list_step_explanations(db, filled.tiny_episode, s.step)
    )
    at.selectbox(key="mk-step").set_value(bare.step).run()
    command = (
        f"workbench explain-step --run tiny-llm-l1 --episode {filled.tiny_episode}"
        f" --step {bare.step} --db {filled.path}"
    )
    assert command in [c.value for c in at.code]
    assert not [d for d in at.dataframe if "segment" in d.value.columns]
    # The fixture's explained step is a mistake too: its masses and heatmap are shown.
    at.selectbox(key="mk-step").set_value(EXPLAINED_STEP).run()
    assert not at.exception
    stored = tips_store.list_step_explanations(db, filled.tiny_episode, EXPLAINED_STEP)[0]
    segments = frame(at, "segment")
    assert dict(zip(segments["segment"], segments["mass"])) == pytest.approx(stored["segments"])
    assert len(htmls(at)) == 1  # the prompt's heatmap
    # No decision of the run took its optimal verb and kept the plan.
    optimal = verb(mistakes[0].optimal_command)
    assert report.correct_decisions(optimal) == []
    assert any("no correct decision of this kind" in i.value for i in at.info)


def test_mistakes_page_judges_older_episodes_or_says_why_not(filled_env, filled):
    at = open_page("mistakes", run=filled.llm_run)
    info = at.info[0].value
    assert "1 of 2 episode(s) of this run have no verdicts yet" in info
    assert "workbench mistakes --run llm-l1" in info
    assert "<script" not in markup(at).lower()  # the LLM's command is shown as text
    at.button(key="mk-mine").click().run()
    # The episode written with a made-up observation does not replay: one line, no writes.
    (error,) = at.error
    assert "the game file changed since the run was played" in error.value
    assert mistake_report(Store(filled.path), filled.llm_run).unjudged == 1


def _sae_folder(tmp_path: Path) -> Path:
    """A small SAE folder with a feature table: feature 2 labelled by in(knife, I)."""
    from explainers.sae.labels import FeatureLabel, save_labels
    from explainers.sae.model import SAEInfo, SparseAutoencoder

    folder = tmp_path / "sae"
    SparseAutoencoder(8, 4, 2).save(folder, SAEInfo(model={"base": "tiny-llama"}, layer=1))
    context = {"text": 0, "position": 3, "activation": 2.5, "token": " knife"}
    table = [
        FeatureLabel(0, 0.1, 1.0, "at(P, kitchen)", 0.7, [], [("at(P, kitchen)", 0.7)]),
        FeatureLabel(1, 0.0, 0.0),
        FeatureLabel(
            2,
            0.05,
            2.0,
            "in(knife, I)",
            0.97,
            [{**context, "before": "You carry a", "after": " and a"}],
            [("in(knife, I)", 0.97), ("on(knife, table)", 0.2)],
        ),
        FeatureLabel(3, 0.2, 0.5, "open(fridge)", 0.96, [], [("open(fridge)", 0.96)]),
    ]
    save_labels(folder, table, {"pool": "last", "labelled_features": 2, "labelled_facts": 2})
    return folder


def test_features_page_browses_an_sae_and_shows_a_decision_in_features(tmp_path, monkeypatch):
    from explainers.explanation import Explanation

    db = tmp_path / "sae.duckdb"
    store = Store(db)
    store.migrate()
    folder = _sae_folder(tmp_path)
    exp = Explanation(
        method="sae",
        category="attribution",
        model="tiny-llama",
        input_text="take knife",
        input_tokens=["take", " knife"],
        target_tokens=["choice of 'take knife'"],
        scores=np.array([[0.0, 0.4]]),
        params={"sae": str(folder), "steps": 16, "ablate": 2},
        expected=[0.4],
        delta=[0.0],
        extras={
            "sae_layer": 1,
            "error_mass": 0.1,
            "completeness_error": 0.001,
            "features": [
                {
                    "feature": 2,
                    "mass": 0.3,
                    "fact": "in(knife, I)",
                    "auroc": 0.97,
                    "labelled": True,
                    "activation": 2.5,
                },
                {
                    "feature": 0,
                    "mass": 0.0,
                    "fact": "at(P, kitchen)",
                    "auroc": 0.7,
                    "labelled": False,
                    "activation": 1.0,
                },
            ],
            "ablations": [
                {
                    "feature": 2,
                    "activation": 2.5,
                    "delta": -1.2,
                    "choice": "go east",
                    "flipped": True,
                }
            ],
        },
    )
    exp_id = explanations.save_explanation(store, exp.to_record())
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    at = open_page("features")
    assert at.selectbox(key="sae-folder").value == str(folder)
    listed = frame(at, "best fact")
    assert listed["feature"].tolist() == [2, 3]  # labelled only, best AUROC first
    assert at.selectbox(key="sae-feature").value == 2
    assert frame(at, "fact")["fact"].tolist() == ["in(knife, I)", "on(knife, table)"]
    assert "[ knife]" in texts(at)
    at.checkbox[0].uncheck().run()
    assert frame(at, "best fact")["feature"].tolist() == [2, 3, 0, 1]
    features = frame(at, "choice changes")
    assert features["label"].tolist() == ["in(knife, I)", ""]
    assert features["without it"].tolist()[0] == "go east"
    assert at.selectbox(key="sae-exp").value == exp_id
    assert htmls(at)  # the token heatmap


def test_features_page_without_an_sae_names_the_command(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    at = open_page("features")
    hint = " ".join(i.value for i in at.info)
    assert "workbench sae train" in hint and "--method sae" in hint
    at = open_page("features", sae=str(tmp_path))
    assert any("not an SAE folder" in w.value for w in at.warning)
