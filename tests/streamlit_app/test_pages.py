"""Every dashboard page, run by Streamlit's AppTest against a database filled by real runs:
what a user sees on each, and that game and LLM text never turns into markup."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.streamlit_app.conftest import SCRIPT, SCRIPT_OBSERVATION, SCRIPT_TIP
from workbench.store import Store
from workbench.store import play as play_store

APP = str(Path(__file__).parents[2] / "streamlit_app" / "app.py")
TIMEOUT = 60


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


def markup(at: AppTest) -> str:
    """Everything the browser interprets as markup: markdown, captions, HTML, labels."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [h.proto.body for h in at.get("html")]
    parts += [e.label for e in at.expander] + [m.label for m in at.metric]
    return "\n".join(parts)


def test_empty_database_says_how_to_fill_it(tmp_path, monkeypatch):
    db = tmp_path / "empty.duckdb"
    Store(db).migrate()
    monkeypatch.setenv("WORKBENCH_DB", str(db))
    for page in (None, "episode", "compare", "explanations", "probing"):
        at = open_page(page)
        assert at.info, page
        assert "workbench play" in at.info[0].value or "workbench probe" in " ".join(
            i.value for i in at.info
        )
        assert not at.dataframe, f"{page} shows a table on an empty database"


def test_overview_charts_success_by_level_condition_and_trial(filled_env):
    at = open_page()
    assert at.title[0].value == "Runs overview"
    metrics = {m.label: m.value for m in at.metric}
    assert int(metrics["episodes"]) == 4 + 2 + 2  # random 2x2, expert 2, llm 1 + the script one
    runs = at.dataframe[0].value
    assert {"random-l1", "expert-l1", "llm-l1"} <= set(runs["name"])
    expert = runs[runs["name"] == "expert-l1"].iloc[0]
    assert expert["success"] == 1.0 and expert["episodes"] == 2
    by_level = at.dataframe[1].value
    expert_rows = by_level[by_level["run"] == "expert-l1"]
    assert list(expert_rows["success"]) == [1.0] and list(expert_rows["games"]) == [2]
    # Two won games of two: a Wilson interval, not [100%, 100%].
    assert expert_rows["success_low"].iloc[0] == pytest.approx(0.3424, abs=1e-4)
    assert len(at.get("vega_lite_chart")) == 4  # two by level, two over trials


def test_episode_viewer_shows_steps_prompts_and_invalid_actions(filled_env, filled):
    at = open_page("episode")
    assert at.selectbox(key="episode-run").value in (
        filled.random_run,
        filled.expert_run,
        filled.llm_run,
    )
    at.selectbox(key="episode-run").set_value(filled.llm_run).run()
    episodes = play_store.list_episodes(Store(filled.path), filled.llm_run)
    real = next(e for e in episodes if e["id"] != filled.script_episode)
    at.selectbox(key="episode-id").set_value(real["id"]).run()
    assert not at.exception
    steps = at.dataframe[-1].value
    assert list(steps["step"]) == [0, 1] and not steps["valid"].any()
    assert [e.label for e in at.expander][-2:] == [
        "step 0 · score 0 · INVALID ACTION",
        "step 1 · score 0 · INVALID ACTION",
    ]
    assert any("Invalid action" in e.value for e in at.error)
    shown = texts(at)
    assert "Goal: You are hungry!" in shown  # the full prompt
    assert SCRIPT in shown  # the completion, verbatim
    tips = at.dataframe[1].value
    assert list(tips["tip"]) == [SCRIPT_TIP]


def test_episode_deep_link_and_step_paging(filled_env, filled):
    store = Store(filled.path)
    episode = play_store.list_episodes(store, filled.random_run)[0]
    at = open_page("episode", episode=episode["id"])
    assert at.selectbox(key="episode-id").value == episode["id"]
    assert {m.label: m.value for m in at.metric}["moves"] == str(episode["moves"])
    at.selectbox(key="steps-size").set_value(10).run()
    table = at.dataframe[-1].value
    actions = [s["action"] for s in play_store.get_steps(store, episode["id"])]
    assert list(table["action"]) == actions[:10]


def test_script_in_observation_tip_and_action_stays_inert_text(filled_env, filled):
    at = open_page("episode", episode=filled.script_episode)
    shown = texts(at)
    assert SCRIPT_OBSERVATION in shown  # shown verbatim, as text
    assert at.dataframe[1].value["tip"].tolist() == [SCRIPT_TIP]
    assert "<script" not in markup(at).lower()


def test_run_comparison_puts_runs_side_by_side_per_game(filled_env, filled):
    at = open_page("compare")
    at.multiselect(key="compare-runs").set_value([filled.random_run, filled.expert_run]).run()
    assert not at.exception
    table = frame(at, "game")
    assert {"random-l1", "expert-l1"} <= set(table.columns)
    assert len(table) == 2 and (table["expert-l1"] == 1.0).all()
    paired = frame(at, "measure").set_index("measure")
    assert paired.loc["success", "test"] == "mcnemar" and paired.loc["success", "pairs"] == 2
    assert paired.loc["score", "test"] == "paired t"
    at.radio(key="compare-measure").set_value("moves").run()
    moves = frame(at, "game")
    assert (moves["random-l1"] > 0).all()


def test_explanation_heatmap_escapes_tokens_and_shows_metrics_and_curves(filled_env, filled):
    at = open_page("explanations", explanation=filled.explanation)
    assert at.selectbox(key="exp-id").value == filled.explanation
    heatmaps = [h.proto.body for h in at.get("html")]
    assert len(heatmaps) == 2  # one per target token
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in heatmaps[0]
    assert "<script" not in "".join(heatmaps)
    assert repr("<b>") in texts(at)  # the target token, as text
    means = frame(at, "metric")
    assert dict(zip(means["metric"], means["mean"])) == {
        "comprehensiveness": 0.42,
        "deletion_auc": 0.45,
    }
    assert at.get("vega_lite_chart")  # the deletion curve
    assert "<script" not in markup(at).lower()


def test_attention_explanation_draws_its_map(filled_env, filled):
    at = open_page("explanations", explanation=filled.attention)
    assert at.selectbox(key="attention-map").options == ["final map"]
    assert at.get("vega_lite_chart")


def test_probing_plots_accuracy_by_layer(filled_env, filled):
    at = open_page("probing")
    assert at.selectbox(key="probe-id").value == filled.probe
    layers = at.dataframe[-1].value
    assert list(layers["layer"]) == [0, 1, 2]
    assert layers["accuracy"].tolist() == [0.6, 0.8, 0.7]
    assert at.get("vega_lite_chart")


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
    links = [(link.proto.page, link.proto.label) for link in at.get("page_link")]
    assert links == [("episode", f"episode {filled.script_episode}")]
    diff = frame(at, "change")
    assert dict(zip(diff["tip"], diff["change"])) == {
        "Open the fridge.": "only in A",
        "Eat the meal last.": "only in B",
        SCRIPT_TIP: "score changed",
    }
    at.selectbox(key="tipset-id").set_value(first).run()
    assert SCRIPT_TIP in texts(at)  # the completion of the LLM call that wrote it
    assert "<script" not in markup(at).lower()


@dataclass
class FakeStepExplanation:
    explanation_id: str
    segments: dict[str, float]
    tips: list[dict] = field(default_factory=list)
    action: str = ""
    total: float = 0.0


def test_explain_this_step_shows_segment_and_tip_bars(filled_env, filled, monkeypatch):
    calls = []

    def explain_step(store, run, episode_id, step, method="ig", lm=None, **params):
        calls.append((run, episode_id, step, method, lm))
        return FakeStepExplanation(
            "e1",
            {"instructions": 0.1, "tips": 0.5, "history": 0.0, "observation": 0.3},
            [{"tip": SCRIPT_TIP, "mass": 0.5, "action_changed": True, "new_action": "look"}],
            SCRIPT,
            0.9,
        )

    module = types.ModuleType("agents.explain_step")
    module.explain_step = explain_step
    monkeypatch.setitem(sys.modules, "agents.explain_step", module)
    episodes = play_store.list_episodes(Store(filled.path), filled.llm_run)
    real = next(e for e in episodes if e["id"] != filled.script_episode)
    at = open_page("explain_step", episode=real["id"], step="1")
    assert at.number_input(key="xs-step").value == 1
    at.button(key="xs-go").click().run()
    assert not at.exception
    assert calls == [("llm-l1", real["id"], 1, "ig", None)]
    segments = frame(at, "segment")
    assert dict(zip(segments["segment"], segments["mass"]))["tips"] == 0.5
    tips = frame(at, "action changes without it")
    assert tips["tip"].tolist() == [SCRIPT_TIP]
    assert tips["action changes without it"].tolist() == [True]
    assert len(at.get("vega_lite_chart")) == 2
    assert "<script" not in markup(at).lower()


def test_explain_this_step_without_the_feature_says_so(filled_env, monkeypatch):
    monkeypatch.setitem(sys.modules, "agents.explain_step", None)  # import fails
    at = open_page("explain_step")
    assert "not available in this installation yet" in at.info[0].value
    assert not at.button
