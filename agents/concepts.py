"""The concepts family on the agent's own decisions: TCAV, steering and RSA over a run.

A play run records, at every LLM decision, the prompt, the candidates, the command chosen
and the game's true facts. That makes it a labelled data set for concepts: a concept is a
fact pattern ("in(knife, I)": the knife is carried; `games.probing_data.concept_holds`),
its positive examples are the decisions taken while it held, and its direction at a layer
is read from the residual stream at the decision token (the prompt's last) of those
decisions (`explainers.concepts.directions`).

- `run_tcav`: does the choice move along the concept, layer by layer, against random
  directions (`explainers.concepts.tcav`)?
- `run_steering`: the choice distribution as alpha times the direction is added, with a
  random direction of equal norm as the control, and, with `games`, the win rate and
  score of whole episodes played under it (`explainers.concepts.steering`);
- `run_rsa`: the residual stream's geometry against the facts' (`explainers.concepts.rsa`).

Which decisions: by default each explains the command the agent chose; `candidate`
explains the choice of one command (e.g. "take knife", or "take knife*" with a wildcard
for "take knife from table") wherever it was a candidate, and
`where` keeps only the decisions where the concept held ("true") or did not ("false").

Under torchrun (`--gpus N`) the activations and the per-decision gradients or curves split
over the ranks; every rank gets the whole result, and rank 0 saves it.

    >>> result = run_tcav(store, "valid-ft", "in(knife, I)", lm=lm,
    ...                   candidate="take knife", where="false")       # doctest: +SKIP
    >>> [(r.layer, r.score, r.significant) for r in result.layers]     # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.decision_features import DecisionSpec, decision_spec, decisions
from agents.recorded_step import recorded_step, run_agent
from explainers.concepts.directions import (
    ConceptDirection,
    check_classes,
    concept_direction,
    concept_vectors,
    random_like,
    random_vectors,
)
from explainers.concepts.steering import check_alphas, check_positions
from games.probing_data import concept_holds
from workbench import distributed
from workbench.anatomy import model_anatomy
from workbench.errors import WorkbenchError
from workbench.models import LoadedModel
from workbench.store import Store, runs
from workbench.store import play as play_store

if TYPE_CHECKING:
    from explainers.choice import ChoiceObjective
    from explainers.concepts.rsa import RSAResult
    from explainers.concepts.tcav import TCAVResult

Progress = Callable[[int, int], None]
WHERE = ("any", "true", "false")


@dataclass
class RunDecision:
    """One recorded decision: its input, candidates and choice (`DecisionSpec`) and the
    facts true when it was taken."""

    spec: DecisionSpec
    facts: list[str]

    @property
    def where(self) -> dict[str, Any]:
        return {"episode_id": self.spec.episode_id, "step": self.spec.step}


def run_decisions(
    store: Store | None, run: str, lm: LoadedModel, max_decisions: int | None = None
) -> list[RunDecision]:
    """Every LLM decision of `run` (the first `max_decisions`), as the agent faced it.
    Under torchrun rank 0 (the one with the `store`) reads them and every rank gets them."""
    if max_decisions is not None and max_decisions < 1:
        raise WorkbenchError(f"max decisions must be at least 1, not {max_decisions}")
    return distributed.on_main(lambda: _read_decisions(store, run, lm, max_decisions))


def _read_decisions(
    store: Store | None, run: str, lm: LoadedModel, max_decisions: int | None
) -> list[RunDecision]:
    assert store is not None  # rank 0 holds the store
    pairs = decisions(store, run)[:max_decisions]
    facts: dict[str, list[list[str]]] = {}
    out = []
    for episode_id, step in pairs:
        if episode_id not in facts:
            facts[episode_id] = [r["facts"] for r in play_store.get_steps(store, episode_id)]
        spec = decision_spec(lm, recorded_step(store, run, episode_id, step, lm))
        out.append(RunDecision(spec, list(facts[episode_id][step])))
    return out


def _given_or_read(
    store: Store | None,
    run: str,
    lm: LoadedModel,
    max_decisions: int | None,
    given: Sequence[RunDecision] | None,
) -> list[RunDecision]:
    """The run's decisions: `given` (the first `max_decisions`), or read from the store."""
    if given is None:
        return run_decisions(store, run, lm, max_decisions)
    return list(given)[:max_decisions]


def check_where(where: str) -> None:
    if where not in WHERE:
        raise WorkbenchError(f"where must be {', '.join(WHERE)}, not {where!r}")


def selected(
    items: Sequence[RunDecision],
    labels: Sequence[bool],
    candidate: str | None,
    where: str,
) -> list[tuple[RunDecision, str]]:
    """(decision, the command whose choice is explained) for the decisions asked for."""
    check_where(where)
    out = []
    for item, label in zip(items, labels):
        if where != "any" and label != (where == "true"):
            continue
        if candidate is None:
            out.append((item, item.spec.chosen))
            continue
        found = matching(candidate, item.spec.candidates)
        if found is not None:
            out.append((item, found))
    return out


def matching(candidate: str, candidates: Sequence[str]) -> str | None:
    """The candidate named: itself, or with `*` wildcards the first that fits ("take
    knife*" finds "take knife from table")."""
    if "*" not in candidate:
        return candidate if candidate in candidates else None
    return next((c for c in candidates if fnmatchcase(c, candidate)), None)


def choice_of(lm: LoadedModel, spec: DecisionSpec, command: str) -> ChoiceObjective:
    """The choice objective of `command` in the decision, scored as the agent scored."""
    from explainers.choice import prepare_choice

    return prepare_choice(
        lm,
        spec.text,
        spec.candidates,
        command,
        score_mode=spec.score_mode,
        offsets=spec.offsets or None,
    )


def state_features(
    lm: LoadedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 16,
    progress: Progress | None = None,
) -> np.ndarray:
    """[N, layers, D] residual stream at each text's last token (the decision token), split
    over torchrun's ranks (`explainers.probing.probes.extract_sharded`)."""
    from explainers.probing.probes import ProbeExample, extract_sharded

    examples = [ProbeExample(t, "", -1) for t in texts]
    features, _ = extract_sharded(lm, examples, list(layers), batch_size, progress)
    return features


def each_decision(
    chosen: Sequence[tuple[RunDecision, str]],
    fn: Callable[[RunDecision, str], Any],
    progress: Progress | None = None,
) -> list[Any]:
    """`fn(decision, command)` for every chosen decision, in order: under torchrun each rank
    computes its block and every rank gets all; `progress(done, this rank's total)`."""
    mine = distributed.shard(chosen)
    out = []
    for k, (item, command) in enumerate(mine):
        out.append(fn(item, command))
        if progress is not None:
            progress(k + 1, len(mine))
    return distributed.all_gather(out)


def _labels(concept: str, items: Sequence[RunDecision]) -> np.ndarray:
    holds = concept_holds(concept)
    return np.array([holds(item.facts) for item in items], dtype=bool)


def _identity(lm: LoadedModel) -> dict[str, Any]:
    return lm.identity.to_dict()


# -- TCAV -------------------------------------------------------------------------------------


def run_tcav(
    store: Store,
    run: str,
    concept: str,
    *,
    lm: LoadedModel,
    layers: Sequence[int] | None = None,
    source: str = "means",
    positions: str = "last",
    candidate: str | None = None,
    where: str = "any",
    n_random: int = 20,
    resamples: int = 10,
    max_decisions: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> TCAVResult:
    """TCAV of `concept` for the run's decisions at each of `layers` (all by default)."""
    from explainers.concepts.tcav import TCAVResult, decision_gradient, tcav_test

    start = time.perf_counter()
    layer_list = model_anatomy(lm).check_layers("resid", layers)
    check_positions(positions)
    check_where(where)
    items = run_decisions(store, run, lm, max_decisions)
    labels = _labels(concept, items)
    positive, negative = check_classes(concept, labels)
    chosen = selected(items, labels, candidate, where)
    if len(chosen) < 2:
        raise WorkbenchError(
            f"only {len(chosen)} decisions of run {run!r} match (candidate {candidate!r}, "
            f"where {where}); TCAV needs at least 2"
        )
    features = state_features(lm, [i.spec.text for i in items], layer_list)
    grads = np.stack(
        each_decision(
            chosen,
            lambda d, cmd: decision_gradient(choice_of(lm, d.spec, cmd), layer_list, positions),
            progress,
        )
    )
    vectors = concept_vectors(features, labels, source, resamples, seed)  # [R, L, D]
    randoms = random_vectors(
        vectors.shape[1:], np.linalg.norm(vectors[0], axis=-1), n_random, seed + 1
    )
    sens = np.einsum("nld,ld->nl", grads, vectors[0])
    return TCAVResult(
        concept=concept,
        model=lm.name,
        model_info=_identity(lm),
        layers=tcav_test(grads, layer_list, vectors, randoms),
        n_decisions=len(chosen),
        n_positive=positive,
        n_negative=negative,
        params={
            "run": run,
            "source": source,
            "positions": positions,
            "candidate": candidate,
            "where": where,
            "n_random": n_random,
            "resamples": resamples,
            "seed": seed,
            "objective": "choice",
        },
        decisions=[{**item.where, "command": command} for item, command in chosen],
        sensitivities=sens.tolist(),
        seconds=time.perf_counter() - start,
    )


# -- steering ---------------------------------------------------------------------------------


@dataclass
class AlphaEffect:
    """At one alpha: the mean change (from alpha 0) of the explained command's probability
    along the concept and along the random directions, and their paired difference."""

    alpha: float
    concept_change: float
    random_change: float
    difference: float
    low: float
    high: float
    p_value: float
    n: int


@dataclass
class EpisodeOutcome:
    """Episodes played under one direction and alpha."""

    direction: str  # "concept" or "random"
    alpha: float
    episodes: int
    won: int
    win_rate: float
    low: float
    high: float
    mean_score: float


@dataclass
class SteeringResult:
    """Steering along a concept direction over a run's decisions (and episodes)."""

    concept: str
    model: str
    layer: int
    alphas: list[float]
    effects: list[AlphaEffect]
    n_decisions: int
    direction: dict[str, Any]  # ConceptDirection.to_dict()
    params: dict[str, Any] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)  # per decision: curves
    episodes: list[EpisodeOutcome] = field(default_factory=list)
    model_info: dict[str, Any] | None = None
    seconds: float = 0.0
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, store: Store, run_id: str | None = None) -> str:
        from workbench.store.concepts import save_concept_result

        self.id = save_concept_result(store, "steer", self.to_dict(), run_id=run_id)
        return self.id


def run_direction(
    store: Store,
    run: str,
    concept: str,
    layer: int,
    *,
    lm: LoadedModel,
    source: str = "means",
    max_decisions: int | None = None,
    seed: int = 0,
    decisions: Sequence[RunDecision] | None = None,
) -> ConceptDirection:
    """The concept's direction at `layer` from the run's decisions (means or probe);
    `decisions`, where given, are the run's, read already (`run_decisions`)."""
    (layer,) = model_anatomy(lm).check_layers("resid", [layer])
    items = _given_or_read(store, run, lm, max_decisions, decisions)
    labels = _labels(concept, items)
    check_classes(concept, labels)
    features = state_features(lm, [i.spec.text for i in items], [layer])[:, 0]
    return concept_direction(
        features, labels, concept=concept, layer=layer, model=lm.name, source=source, seed=seed
    )


def run_steering(
    store: Store,
    run: str,
    direction: ConceptDirection,
    alphas: Sequence[float],
    *,
    lm: LoadedModel,
    positions: str = "all",
    candidate: str | None = None,
    where: str = "any",
    n_random: int = 5,
    max_decisions: int | None = None,
    games: int = 0,
    episode_alphas: Sequence[float] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    decisions: Sequence[RunDecision] | None = None,
) -> SteeringResult:
    """The dose-response of the run's decisions along `direction` against `n_random`
    random directions of its norm; with `games` > 0 also that many of the run's games
    played under each of `episode_alphas` (default: 0 and the alphas' extremes), along
    the direction and along the first random one. `decisions`, where given, are the
    run's, read already (`run_decisions`)."""
    from explainers.concepts.steering import dose_response
    from workbench.stats import paired_t

    start = time.perf_counter()
    alphas = check_alphas(alphas)
    if 0.0 not in alphas:
        alphas = sorted([0.0, *alphas])
    check_positions(positions, direction)
    check_where(where)
    direction.check_model(lm, model_anatomy(lm).n_layers + 1)
    if n_random < 1:
        raise WorkbenchError(f"steering needs at least one random direction, not {n_random}")
    items = _given_or_read(store, run, lm, max_decisions, decisions)
    labels = _labels(direction.concept, items) if where != "any" else np.zeros(len(items), bool)
    chosen = selected(items, labels, candidate, where)
    if not chosen:
        raise WorkbenchError(
            f"no decision of run {run!r} matches (candidate {candidate!r}, where {where})"
        )
    controls = random_like(direction, n_random, seed)

    def curve(item: RunDecision, command: str) -> dict[str, Any]:
        obj = choice_of(lm, item.spec, command)
        p = dose_response(obj, [direction, *controls], alphas, positions).of(command)
        return {
            **item.where,
            "command": command,
            "concept": p[0].tolist(),  # [alphas]
            "random": p[1:].mean(0).tolist(),  # the random directions' mean
        }

    curves = each_decision(chosen, curve, progress)
    zero = alphas.index(0.0)
    effects = []
    for a, alpha in enumerate(alphas):
        if alpha == 0.0:
            continue
        concept = [c["concept"][a] - c["concept"][zero] for c in curves]
        random = [c["random"][a] - c["random"][zero] for c in curves]
        test = paired_t(random, concept)
        effects.append(
            AlphaEffect(
                alpha=alpha,
                concept_change=float(np.mean(concept)),
                random_change=float(np.mean(random)),
                difference=test.difference,
                low=test.low,
                high=test.high,
                p_value=test.p_value,
                n=test.n,
            )
        )
    outcomes: list[EpisodeOutcome] = []
    if games and distributed.is_main():  # episodes play on rank 0, which holds the store
        chosen_alphas = (
            check_alphas(episode_alphas)
            if episode_alphas is not None
            else sorted({0.0, min(alphas), max(alphas)})
        )
        outcomes = steered_episodes(
            store, run, direction, controls[0], chosen_alphas, lm=lm, games=games, seed=seed
        )
    return SteeringResult(
        concept=direction.concept,
        model=lm.name,
        model_info=_identity(lm),
        layer=direction.layer,
        alphas=alphas,
        effects=effects,
        n_decisions=len(chosen),
        direction=direction.to_dict(),
        params={
            "run": run,
            "positions": positions,
            "candidate": candidate,
            "where": where,
            "n_random": n_random,
            "seed": seed,
            "objective": "choice",
        },
        decisions=curves,
        episodes=outcomes,
        seconds=time.perf_counter() - start,
    )


def steered_episodes(
    store: Store,
    run: str,
    direction: ConceptDirection,
    control: ConceptDirection,
    alphas: Sequence[float],
    *,
    lm: LoadedModel,
    games: int,
    seed: int = 0,
) -> list[EpisodeOutcome]:
    """The run's first `games` games replayed by the run's agent (without tips) under each
    alpha along `direction` and along `control`; alpha 0 is played once."""
    from agents.runner import play
    from explainers.concepts.steering import steered
    from games.catalog import list_games
    from workbench.stats import wilson_interval

    record = runs.require_run(store, run, kind="play")
    params = record["params"] or {}
    infos, seen = [], set()
    for episode in play_store.list_episodes(store, record["id"]):
        if episode["game"] in seen or len(infos) >= games:
            continue
        path = (play_store.get_episode(store, episode["id"]) or {}).get("game_path")
        if not path or not Path(path).is_file():
            raise WorkbenchError(
                f"game {episode['game']} of run {run!r} is gone ({path or 'no file recorded'})"
            )
        infos.extend(list_games(path))
        seen.add(episode["game"])
    outcomes = []
    for name, d in (("concept", direction), ("random", control)):
        for alpha in alphas:
            if alpha == 0.0 and name == "random":
                continue
            with steered(lm, d, alpha):
                result = play(
                    infos,
                    run_agent(record, lm),
                    max_steps=int(params.get("max_steps", 50)),
                    seed=seed,
                    parallel=len(infos),
                    workers=0,
                )
            won = sum(bool(e.won) for e in result.episodes)
            scores = [e.score / max(e.max_score, 1) for e in result.episodes]
            interval = wilson_interval(won, len(result.episodes))
            outcomes.append(
                EpisodeOutcome(
                    direction="concept" if alpha == 0.0 else name,
                    alpha=alpha,
                    episodes=len(result.episodes),
                    won=won,
                    win_rate=interval.mean,
                    low=interval.low,
                    high=interval.high,
                    mean_score=float(np.mean(scores)) if scores else float("nan"),
                )
            )
    return outcomes


# -- RSA --------------------------------------------------------------------------------------


def run_rsa(
    store: Store,
    run_names: Sequence[str],
    *,
    lm: LoadedModel,
    layers: Sequence[int] | None = None,
    metric: str = "cosine",
    permutations: int = 1000,
    max_states: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> RSAResult:
    """RSA of the residual stream at the decision token against the true facts, over the
    recorded states of `run_names` (every LLM step; the first `max_states`)."""
    from explainers.concepts.rsa import METRICS, rsa

    start = time.perf_counter()
    layer_list = model_anatomy(lm).check_layers("resid", layers)
    if metric not in METRICS:
        raise WorkbenchError(f"metric must be {', '.join(METRICS)}, not {metric!r}")
    if max_states is not None and max_states < 4:
        raise WorkbenchError(f"max states must be at least 4, not {max_states}")
    texts, facts = distributed.on_main(lambda: _read_states(store, run_names, lm))
    texts, facts = texts[:max_states], facts[:max_states]
    features = state_features(lm, texts, layer_list, progress=progress)
    result = rsa(features, facts, layer_list, metric=metric, permutations=permutations, seed=seed)
    result.model = lm.name
    result.model_info = _identity(lm)
    result.params.update(runs=list(run_names))
    result.seconds = time.perf_counter() - start
    return result


def _read_states(
    store: Store | None, run_names: Sequence[str], lm: LoadedModel
) -> tuple[list[str], list[list[str]]]:
    """Every LLM step's model input (the prompt in the chat template) and true facts."""
    from workbench.llm.local import LocalLLM

    assert store is not None  # rank 0 holds the store
    texts, facts = [], []
    llm = LocalLLM(lm, spare_core=False)
    for name in run_names:
        record = runs.require_run(store, name, kind="play")
        for episode in play_store.list_episodes(store, record["id"]):
            for row in play_store.get_steps(store, episode["id"]):
                if row.get("prompt"):
                    texts.append(llm.format_prompt(row["prompt"]))
                    facts.append(list(row["facts"]))
    if not texts:
        raise WorkbenchError(f"runs {', '.join(run_names)} have no LLM steps")
    return texts, facts
