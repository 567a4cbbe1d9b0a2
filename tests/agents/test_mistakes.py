"""The mistake miner on real games: the expert makes none, every flagged mistake of a random
agent lengthens TextWorld's winning plan or loses the game (checked against a replay made
here with TextWorld itself), back-filling an old run gives the rows recorded while it
played, and a run whose game files are gone or changed is refused with nothing written."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict, deque

import pytest
import textworld

import agents
import games
from agents.mistakes import EpisodeJudge, mine_run, mistake_report
from games import GameState
from tests import store_reads
from tests.run_cli import run_inprocess
from workbench.errors import WorkbenchError
from workbench.store import play as play_store
from workbench.store import runs
from workbench.store.mistakes import list_step_mistakes


def test_the_expert_makes_no_mistakes(level_games, store):
    found = list(level_games.values())
    agents.play(found, "expert", parallel=2, max_steps=60, store=store, run_name="ex", workers=0)
    report = mistake_report(store, "ex")
    assert report.episodes == len(found) and report.unjudged == 0
    assert report.decisions == sum(g.walkthrough_steps for g in found)
    # The walkthrough reads the cookbook and checks the inventory, which TextWorld's plan
    # never needs: allowed once, so the expert's steps all keep a shortest plan.
    assert report.mistakes == 0 and report.failed == [] and report.by_kind == []
    assert {s.regret for s in report.steps} == {0}
    assert not any(s.lost for s in report.steps)
    assert all(r.rate.mean == 0.0 and r.rate.high > 0 for r in report.by_level)


def state(facts: list[str], plan: list[str], won: bool = False, lost: bool = False) -> GameState:
    return GameState(
        observation="",
        score=0,
        max_score=3,
        moves=0,
        done=won or lost,
        won=won,
        lost=lost,
        objective="",
        admissible_commands=[],
        facts=facts,
        walkthrough=["examine cookbook", "go north", "take pepper", "go south", "cook cheese"]
        + ["prepare meal"],
        policy_commands=plan,
    )


def test_a_greedy_detour_that_the_next_step_pays_back_is_no_mistake():
    """TextWorld's plan from the garden goes back to cook first (+2 by its length), and
    taking the pepper there pays it back (-2): by the shortest plan the episode shows,
    both steps keep a shortest plan."""
    kitchen = state(["at(P, kitchen)"], ["cook cheese", "go north", "take pepper", "go south"])
    garden = state(["at(P, garden)"], ["go south", "cook cheese", "go north", "take pepper"])
    garden.policy_commands += ["go south"]
    carried = state(["at(P, garden)", "in(pepper, I)"], ["go south", "cook cheese"])
    back = state(["at(P, kitchen)", "in(pepper, I)"], ["cook cheese"])
    eaten = state(["eaten(cheese)"], [], lost=True)
    judge = EpisodeJudge(kitchen)
    steps = [
        ("go north", garden),
        ("take pepper", carried),
        ("examine cookbook", carried),  # the walkthrough's look-up: allowed once
        ("examine cookbook", carried),  # twice is a mistake
        ("go south", back),
        ("eat cheese", eaten),
    ]
    for command, after in steps:
        judge.add(command, after)
    verdicts = judge.verdicts()
    assert [v.regret for v in verdicts] == [0, 0, 0, 1, 0, None]
    assert [v.mistake for v in verdicts] == [False, False, False, True, False, True]
    assert [v.lost for v in verdicts] == [False] * 5 + [True]
    assert verdicts[0].optimal_command == "cook cheese"


def replay(path, commands: list[str]) -> tuple[list[str], list[dict]]:
    """Replay `commands` with TextWorld itself: the walkthrough, and every state (the first,
    then the one after each command) with its facts, plan, and whether it is won or lost."""
    infos = textworld.EnvInfos(
        policy_commands=True, facts=True, lost=True, won=True, extras=["walkthrough"]
    )
    env = textworld.start(str(path), infos)
    state = env.reset()
    walkthrough = list(state["extra.walkthrough"])
    states = [snapshot(state)]
    for command in commands:
        state, _, _ = env.step(command)
        states.append(snapshot(state))
    env.close()
    return walkthrough, states


def snapshot(state) -> dict:
    won, lost = bool(state["won"]), bool(state["lost"])
    facts = frozenset(str(f) for f in state["facts"])
    return {"key": (facts, won, lost), "plan": list(state["policy_commands"] or []), "lost": lost}


def shortest_known(states: list[dict]) -> list[float]:
    """Per state, the fewest moves to win that the episode shows: the length of TextWorld's
    plan from any state its steps reach from there, plus the steps to get there (breadth-
    first over the steps taken)."""
    inf = float("inf")
    own = {}
    for s in states:
        length = 0 if s["key"][1] else inf if s["lost"] or not s["plan"] else len(s["plan"])
        own[s["key"]] = min(own.get(s["key"], inf), length)
    edges = defaultdict(set)
    for a, b in zip(states, states[1:]):
        edges[a["key"]].add(b["key"])
    best = {}
    for start in own:
        distance, queue = {start: 0}, deque([start])
        while queue:
            here = queue.popleft()
            for there in edges[here] - set(distance):
                distance[there] = distance[here] + 1
                queue.append(there)
        best[start] = min(d + own[key] for key, d in distance.items())
    return [best[s["key"]] for s in states]


def test_every_flagged_mistake_of_a_random_agent_lengthens_the_plan_or_loses(
    level1_games, level_games, store
):
    found = [*level1_games, level_games[3], level_games[5]]
    result = agents.play(
        found, "random", trials=3, max_steps=15, seed=2, store=store, run_name="rnd", workers=0
    )
    verdicts = {(r["episode_id"], r["step"]): r for r in list_step_mistakes(store, result.run_id)}
    flagged = lost = allowed = 0
    for episode in result.episodes:
        commands = [s.action for s in episode.steps]
        walkthrough, states = replay(episode.spec.game.path, commands)
        allowance = Counter(walkthrough) - Counter(states[0]["plan"])
        shortest = shortest_known(states)
        for idx, command in enumerate(commands):
            before, after = states[idx], states[idx + 1]
            row = verdicts[(episode.id, idx)]
            assert row["optimal"] == before["plan"] and row["lost"] == after["lost"]
            if row["mistake"]:  # by TextWorld's plans as they are
                flagged += 1
                regret = len(after["plan"]) - (len(before["plan"]) - 1)
                assert after["lost"] or regret > 0, (command, before["plan"], after["plan"])
            if after["lost"]:
                lost += 1
                assert row["mistake"] and row["regret"] is None
                continue
            regret = shortest[idx + 1] - (shortest[idx] - 1)
            if regret > 0 and allowance[command] > 0:  # the walkthrough's look-up, once
                allowance[command] -= 1
                allowed += 1
                regret = 0
            assert row["regret"] == regret and row["mistake"] == (regret > 0), command
    # The seed was picked so that each case happens.
    assert flagged and lost and allowed
    report = mistake_report(store, "rnd")
    assert report.mistakes == flagged
    assert sum(r.mistakes for r in report.by_kind) == flagged
    assert sum(r.mistakes for r in report.by_level) == flagged
    not_won = [e for e in result.episodes if not e.won]
    assert {f.episode_id for f in report.failed} == {e.id for e in not_won}
    for f in report.failed:
        steps = [s for s in report.steps if s.episode_id == f.episode_id and s.mistake]
        assert f.first_mistake == steps[0] and f.mistakes == len(steps)
        assert f.outcome in ("lost", "max_steps")
    kind = report.by_kind[0]
    assert kind.rate.n == sum(1 for s in report.steps if s.kind[0] == kind.optimal_verb)
    assert kind.rate.mean == pytest.approx(kind.mistakes / kind.decisions)
    # A correct decision of a kind: its optimal verb chosen, regret 0.
    for step in report.correct_decisions(kind.optimal_verb):
        assert step.regret == 0 and step.kind == (kind.optimal_verb, kind.optimal_verb)


def test_back_fill_gives_the_rows_recorded_while_playing(level1_games, level_games, store):
    found = [*level1_games, level_games[5]]
    result = agents.play(
        found, "random", trials=2, max_steps=10, seed=7, store=store, run_name="old", workers=0
    )
    recorded = list_step_mistakes(store, result.run_id)
    assert len(recorded) == sum(e.moves for e in result.episodes)
    store_reads.delete_step_mistakes(store, result.run_id)  # a run from before the miner
    assert mistake_report(store, "old").unjudged == len(result.episodes)
    calls = []
    mined = mine_run(store, "old", progress=lambda done, total: calls.append((done, total)))
    assert (mined.mined, mined.steps, mined.already) == (len(result.episodes), len(recorded), 0)
    assert calls[-1] == (len(result.episodes), len(result.episodes))
    assert list_step_mistakes(store, result.run_id) == recorded
    again = mine_run(store, "old")
    assert (again.mined, again.already) == (0, len(result.episodes))


@pytest.fixture
def copied_run(level1_games, tmp_path, store):
    """A random run played from a copy of the games, its verdicts deleted (an old run)."""
    folder = tmp_path / "games"
    shutil.copytree(level1_games[0].path.parent, folder)
    found = games.list_games(folder)
    result = agents.play(found, "random", max_steps=5, seed=1, store=store, run_name="cp")
    store_reads.delete_step_mistakes(store, result.run_id)
    return found


def test_a_run_whose_game_file_is_gone_is_refused_with_nothing_written(copied_run, store, capsys):
    gone = copied_run[1].path
    gone.unlink()
    with pytest.raises(WorkbenchError) as info:
        mine_run(store, "cp")
    assert str(gone) in str(info.value) and "\n" not in str(info.value)
    assert list_step_mistakes(store, runs.get_run(store, "cp")["id"]) == []
    code, out, err = run_inprocess(capsys, "mistakes", "--run", "cp", "--db", str(store.path))
    assert code == 1 and not out
    assert err.startswith("error: game file ") and err.count("\n") == 1 and str(gone) in err
    assert list_step_mistakes(store, runs.get_run(store, "cp")["id"]) == []


def test_a_changed_game_file_is_refused_with_nothing_written(copied_run, store):
    first, second = copied_run
    shutil.copy(second.path, first.path)  # another game under the recorded file's name
    shutil.copy(second.path.with_suffix(".json"), first.path.with_suffix(".json"))
    with pytest.raises(WorkbenchError, match="the game file changed since the run was played"):
        mine_run(store, "cp")
    assert list_step_mistakes(store, runs.get_run(store, "cp")["id"]) == []


def test_cli_judges_an_old_run_and_reports_it(copied_run, store, capsys):
    code, out, err = run_inprocess(
        capsys, "mistakes", "--run", "cp", "--db", str(store.path), "--format", "json"
    )
    assert code == 0, err
    assert "judged 2 older episode(s)" in err
    shown = json.loads(out)
    report = mistake_report(store, "cp")
    moves = sum(e["moves"] for e in play_store.list_episodes(store, report.run["id"]))
    assert shown["run"]["name"] == "cp" and shown["unjudged"] == 0
    assert shown["decisions"] == report.decisions == moves
    assert shown["mistakes"] == report.mistakes
    assert [f["episode_id"] for f in shown["failed"]] == [f.episode_id for f in report.failed]
    code, out, err = run_inprocess(capsys, "mistakes", "--run", "cp", "--db", str(store.path))
    assert code == 0 and not err  # nothing left to judge
    assert out.startswith(f"run cp: {report.mistakes} mistake(s) in {moves} decisions of 2 ep")
    assert "by level" in out


def test_cli_refuses_a_run_without_episodes_or_not_a_play_run(store, capsys):
    runs.create_run(store, "empty", "play", {})
    runs.create_run(store, "explained", "explain", {})
    for name, message in [
        ("empty", "run 'empty' has no episodes to judge"),
        ("explained", "no play run named 'explained'"),
        ("missing", "no play run named 'missing'"),
    ]:
        code, out, err = run_inprocess(capsys, "mistakes", "--run", name, "--db", str(store.path))
        assert code == 1 and not out and err.count("\n") == 1, err
        assert err.startswith(f"error: {message}"), err
    assert play_store.list_episodes(store, runs.get_run(store, "empty")["id"]) == []
