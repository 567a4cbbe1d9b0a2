"""Fine-tuning on expert trajectories: the demonstrations are the agent's own prompts, a tiny
LoRA adapter lowers the loss and changes the agent's choices, and bad input is one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from agents import PromptTemplate
from agents.finetune import (
    DEMONSTRATIONS,
    MANIFEST,
    FinetuneSettings,
    demonstrations,
    finetune,
    imitation_accuracy,
    read_demonstrations,
    recovery_demonstrations,
    split_games,
)
from agents.policies import LLMAgent
from agents.trajectory import Turn
from tests.run_cli import run_inprocess
from workbench.errors import WorkbenchError
from workbench.llm.local import LocalLLM
from workbench.models import load_model

# A random 2-layer model's output layer is random too: adapting it (as well as the blocks)
# lets a few steps show learning.
TINY = FinetuneSettings(
    epochs=10,
    lr=1e-2,
    rank=8,
    batch_size=2,
    heldout_fraction=0.5,
    seed=3,
    recoveries=0,  # the walkthroughs alone keep these runs short; detours have their test
    precision="float32",  # the same numbers on every CPU; mixed precision has its test
    target_modules=(
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "lm_head",
    ),
)


@pytest.fixture(scope="module")
def demos(level1_games):
    return demonstrations(level1_games, workers=0)


def build_game_llama(demos, path):
    """A tiny Llama whose word-level vocabulary covers the games' words (so that commands
    are told apart), saved as a model folder at `path`."""
    import torch
    from transformers import LlamaForCausalLM

    from tests.conftest import WORDS, tiny_llama_config, tiny_tokenizer

    words = sorted({w for d in demos for w in f"{d.prompt} {d.command}".split()})
    tokenizer = tiny_tokenizer([*WORDS, *words])
    torch.manual_seed(0)
    config = tiny_llama_config(
        len(tokenizer), hidden_size=64, intermediate_size=128, max_position_embeddings=1024
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def game_model_dir(demos, tmp_path_factory):
    return build_game_llama(demos, tmp_path_factory.mktemp("models") / "tiny-game-llama")


@pytest.fixture(scope="module")
def adapter(game_model_dir, level1_games, demos, tmp_path_factory):
    """A tiny adapter trained on the two level-1 games, and the base model's scores of the
    commands on the same prompts, taken before training."""
    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    out = tmp_path_factory.mktemp("adapters") / "l1"
    before = _scores(lm, demos)
    result = finetune(lm, level1_games, out, TINY, workers=0)
    return result, before


def _scores(lm, demos) -> list[list[float]]:
    llm = LocalLLM(lm)
    prompts = [d.prompt for d in demos]
    candidates = [_commands(d.prompt) for d in demos]
    return [s.ranked("sum") for s in llm.score(prompts, candidates)]


def _commands(prompt: str) -> list[str]:
    listed = prompt.split("Valid commands:\n", 1)[1].split("\n\nAnswer with", 1)[0]
    return listed.splitlines()


def test_demonstrations_are_the_prompts_play_shows_along_the_walkthrough(
    demos, level1_games, tiny_causal
):
    for game in level1_games:
        steps = [d for d in demos if d.game == game.id]
        assert [d.step for d in steps] == list(range(len(steps)))
        assert len(steps) == game.walkthrough_steps
        for d in steps:
            # The expert's command is one of the valid commands the prompt lists.
            assert d.command in _commands(d.prompt)
            assert "Tips:" not in d.prompt
        # Later prompts show the expert's earlier commands as the agent's history.
        assert f"> {steps[0].command}\n" in steps[1].prompt
    # The same rendering as the llm agent's: the first prompt of a game from a fresh state.
    import games as game_sets
    from agents.trajectory import EpisodeSpec

    with game_sets.BatchEnv(1, workers=0) as env:
        state = env.reset({0: level1_games[0].path})[0]
    agent = LLMAgent(LocalLLM(tiny_causal), template=PromptTemplate())
    turn = Turn(EpisodeSpec(level1_games[0], 0), state, [], None)
    assert agent.prompt(turn) == demos[0].prompt


def test_recoveries_leave_the_walkthrough_once_then_follow_the_winning_policy(level1_games, demos):
    found = recovery_demonstrations(level1_games, per_game=3, seed=1, workers=0)
    assert found
    walkthrough = {g.id: [d.command for d in demos if d.game == g.id] for g in level1_games}
    for d in found:
        # A wrong command that changes the game, then valid commands towards the win.
        assert d.detour and d.detour.split()[0] not in ("look", "inventory", "examine")
        assert d.command in _commands(d.prompt)
        assert d.step >= 1
    # Each detour shows in the history of the prompt right after it.
    firsts = [d for i, d in enumerate(found) if i == 0 or found[i - 1].step >= d.step]
    assert all(f"> {d.detour}\n" in d.prompt for d in firsts)
    # Some labels are not what the walkthrough does at that step: recovering.
    assert any(
        d.step >= len(walkthrough[d.game]) or walkthrough[d.game][d.step] != d.command
        for d in found
    )
    assert recovery_demonstrations(level1_games, per_game=3, seed=1, workers=0) == found
    assert recovery_demonstrations(level1_games, per_game=0, workers=0) == []


def test_renaming_swaps_the_recipe_foods_everywhere_and_keeps_the_commands_sorted():
    import random
    from pathlib import Path

    from agents.finetune import Demonstration, IngredientRenamer
    from games import GameInfo

    def game(gid: str, foods: list[str]) -> GameInfo:
        return GameInfo(gid, Path(gid), 2, "train", 0, 4, 6, ingredients=foods)

    renamer = IngredientRenamer(
        [game("g1", ["red apple"]), game("g2", ["zucchini"]), game("g3", ["red onion"])]
    )
    commands = ("cook red apple with stove", "take red apple from fridge", "take red onion")
    listed = "\n".join(commands)
    demo = Demonstration(
        "g1",
        2,
        3,
        f"Ingredients:\nred apple\nfry the red apple\nRed apple and a red onion.\n{listed}\n",
        "cook red apple with stove",
        commands=commands,
    )
    renamed = renamer(demo, random.Random(0))
    # "red onion" is in the prompt already, so the apple can only become the zucchini.
    assert renamed.command == "cook zucchini with stove"
    assert "red apple" not in renamed.prompt.lower()
    assert "Zucchini and a red onion" in renamed.prompt
    assert renamed.commands == tuple(sorted(renamed.commands))
    assert "take red onion\ntake zucchini from fridge\n" in renamed.prompt
    assert renamer(demo, random.Random(0)) == renamed
    # A game without a recipe, or with no free food to rename to, is left as it was.
    assert renamer(Demonstration("other", 1, 0, "look", "look"), random.Random(0)).prompt == "look"
    crowded = Demonstration("g1", 2, 0, demo.prompt + "zucchini", demo.command, commands=commands)
    assert renamer(crowded, random.Random(0)) == crowded


def test_split_is_by_game_and_seeded():
    ids = [f"g{i}" for i in range(10)]
    train, held = split_games(ids, 0.2, seed=1)
    assert len(held) == 2 and not set(train) & set(held) and sorted(train + held) == ids
    assert split_games(ids, 0.2, seed=1) == (train, held)
    assert split_games(ids, 0.2, seed=2) != (train, held)
    assert split_games(["a"], 0.5, seed=0) == (["a"], [])


def test_loss_falls_and_the_adapter_is_saved_with_its_manifest(adapter, level1_games):
    result, _ = adapter
    history = result.manifest["history"]
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    assert result.heldout_loss < result.manifest["loss"]["heldout_before"]
    manifest = json.loads((result.out / MANIFEST).read_text())
    assert manifest["games"] == sorted(g.id for g in level1_games)
    assert len(manifest["heldout_games"]) == 1
    assert manifest["hyperparameters"]["rank"] == 8 and manifest["hyperparameters"]["alpha"] == 16
    assert manifest["base_model"].endswith("tiny-game-llama") and manifest["seconds"] > 0
    config = json.loads((result.out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == manifest["base_model"]
    data = read_demonstrations(result.out / DEMONSTRATIONS)
    assert len(data) == manifest["examples"]["train"] + manifest["examples"]["heldout"]
    assert all(d.command in d.commands for d in data)  # the walkthrough's commands are valid
    # The held-out game's steps, chosen as `play --select choose` chooses.
    choices = manifest["heldout_choices"]
    assert choices["steps"] == manifest["examples"]["heldout"]
    assert set(choices["by_decision"]) <= {f"level 1: {d.command.split()[0]}" for d in data}
    assert len(choices["wrong"]) == choices["steps"] - choices["right"]


def test_the_adapter_loads_and_changes_the_choices(adapter, game_model_dir, demos):
    result, before = adapter
    tuned = load_model(str(game_model_dir), device="cpu", dtype="float32", adapter=result.out)
    assert tuned.adapter == str(result.out.resolve())
    assert tuned.identity.adapter == tuned.adapter and tuned.identity.adapter_sha256
    assert LocalLLM(tuned).describe()["adapter"] == tuned.adapter
    after = _scores(tuned, demos)

    def expert_ranks(scores) -> list[int]:
        """Where the expert's command ranks among the valid commands (0: chosen)."""
        ranks = []
        for demo, values in zip(demos, scores):
            commands = _commands(demo.prompt)
            order = sorted(range(len(values)), key=lambda i: -values[i])
            ranks.append([commands[i] for i in order].index(demo.command))
        return ranks

    assert after != before
    # The agent's choices move towards the expert's: its commands rank far higher.
    assert sum(expert_ranks(after)) < 0.6 * sum(expert_ranks(before))
    trained = [d for d in demos if d.game in result.manifest["train_games"]]
    was = imitation_accuracy(LocalLLM(load_model(str(game_model_dir), device="cpu")), trained)
    now = imitation_accuracy(LocalLLM(tuned), trained)
    # The expert's command gains on the best other command at every step, on the whole.
    assert sum(c.margin for c in now.choices) > sum(c.margin for c in was.choices) + len(trained)
    assert now.accuracy >= was.accuracy
    assert [c.right for c in now.choices] == [c.margin > 0 for c in now.choices]
    # Training left the shared (cached) base model as it was.
    base = load_model(str(game_model_dir), device="cpu", dtype="float32")
    assert base.adapter is None and _scores(base, demos) == before


def test_imitation_accuracy_needs_valid_commands_and_a_known_score_mode(demos, tiny_causal):

    llm = LocalLLM(tiny_causal)
    with pytest.raises(WorkbenchError, match="has no valid commands recorded"):
        imitation_accuracy(llm, [replace(demos[0], commands=())])
    with pytest.raises(WorkbenchError, match="unknown score mode 'max'"):
        imitation_accuracy(llm, demos[:1], score_mode="max")


def test_same_seed_same_adapter(adapter, game_model_dir, level1_games, tmp_path):
    result, _ = adapter
    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    again = finetune(lm, level1_games, tmp_path / "again", TINY, workers=0)
    assert again.manifest["history"] == result.manifest["history"]
    weights = "adapter_model.safetensors"
    assert (again.out / weights).read_bytes() == (result.out / weights).read_bytes()


def test_a_diverging_run_stops_with_one_line_and_saves_no_adapter(
    game_model_dir, level1_games, tmp_path
):

    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    out = tmp_path / "diverged"
    with pytest.raises(WorkbenchError, match=r"training diverged: the loss is .* try a lower"):
        finetune(lm, level1_games, out, replace(TINY, lr=1e30), workers=0)
    assert not (out / "adapter_config.json").exists() and not (out / MANIFEST).exists()
    assert not lm.adapter and not any("lora" in n for n, _ in lm.model.named_parameters())


def test_top_layers_adapts_only_the_last_blocks(game_model_dir, level1_games, tmp_path):

    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    top = finetune(lm, level1_games, tmp_path / "top", replace(TINY, epochs=1, top_layers=1))
    targets = json.loads((top.out / "adapter_config.json").read_text())["target_modules"]
    assert targets and all(".layers.1." in t for t in targets)
    assert not any(t.endswith("lm_head") for t in targets)  # blocks only
    assert top.manifest["hyperparameters"]["top_layers"] == 1
    with pytest.raises(WorkbenchError, match="at most the model's 2 blocks"):
        finetune(lm, level1_games, tmp_path / "deep", replace(TINY, top_layers=3))


def test_mixed_precision_trains_in_bf16_and_keeps_float32_adapter_weights(
    game_model_dir, level1_games, tmp_path
):

    from safetensors.torch import load_file

    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    mixed = finetune(lm, level1_games, tmp_path / "bf16", replace(TINY, precision="bfloat16"))
    history = mixed.manifest["history"]
    assert mixed.manifest["autocast"] == "bfloat16" and mixed.manifest["dtype"] == "float32"
    assert history[-1]["train_loss"] < history[1]["train_loss"]
    assert mixed.heldout_loss < mixed.manifest["loss"]["heldout_before"]
    weights = load_file(mixed.out / "adapter_model.safetensors")
    assert weights and {str(w.dtype) for w in weights.values()} == {"torch.float32"}
    plain = finetune(lm, level1_games, tmp_path / "fp32", replace(TINY, epochs=1))
    assert plain.manifest["autocast"] is None


def padding_changes_nothing(lm, rows, settings: FinetuneSettings = TINY) -> None:
    """A batch's summed loss and its gradients are the sum of its rows' alone (`rows`:
    training examples of different lengths), so padding is never attended to and never
    turns a gradient into NaN (left padding did on CUDA). Exact in float32; under bf16
    autocast the loss within 2% and each gradient pointing the same way."""
    import torch

    from agents.finetune import training

    trainer = training._Trainer(lm, replace(settings, dropout=0.0))
    exact = trainer.autocast is None and lm.dtype == torch.float32
    try:
        params = [p for p in trainer.model.parameters() if p.requires_grad]

        def loss_and_grads(batch):
            trainer.model.zero_grad(set_to_none=True)
            loss, n = trainer._loss(batch)
            loss.backward()
            return loss.item(), n, [p.grad.clone() for p in params]

        together = loss_and_grads(rows)
        alone = [loss_and_grads([row]) for row in rows]
        assert together[1] == sum(a[1] for a in alone) == sum(r.answer for r in rows)
        assert together[0] == pytest.approx(sum(a[0] for a in alone), rel=1e-4 if exact else 0.02)
        for i, grad in enumerate(together[2]):
            assert torch.isfinite(grad).all()
            summed = sum(a[2][i] for a in alone)
            if exact:
                torch.testing.assert_close(grad, summed, rtol=1e-3, atol=1e-5)
            elif summed.norm() > 0:
                cosine = torch.nn.functional.cosine_similarity(grad.flatten(), summed.flatten(), 0)
                assert cosine > 0.95
    finally:
        trainer.restore()


def encoded_extremes(lm, demos) -> list:
    """The shortest, the longest and a middle demonstration, encoded for training."""
    from agents.finetune.training import _encode

    examples = sorted((_encode(LocalLLM(lm), d) for d in demos), key=lambda e: len(e.ids))
    rows = [examples[0], examples[-1], examples[len(examples) // 2]]
    assert len(rows[1].ids) - len(rows[0].ids) > 20
    return rows


def test_padding_changes_neither_the_loss_nor_the_gradients(game_model_dir, demos):
    lm = load_model(str(game_model_dir), device="cpu", dtype="float32")
    padding_changes_nothing(lm, encoded_extremes(lm, demos))


def test_auto_precision_is_bf16_where_the_hardware_does_bf16(monkeypatch):
    import torch

    from agents.finetune import training

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training.autocast_dtype("float32", cuda) is None
    assert training.autocast_dtype("bfloat16", cpu) is torch.bfloat16
    assert training.autocast_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(training, "_cpu_has_bf16", lambda: False)
    assert training.autocast_dtype("auto", cpu) is None
    monkeypatch.setattr(training, "_cpu_has_bf16", lambda: True)
    assert training.autocast_dtype("auto", cpu) is torch.bfloat16
    with pytest.raises(WorkbenchError, match="unknown precision 'fp8'; choose one of auto"):
        FinetuneSettings(precision="fp8")


def test_bad_settings_and_an_adapter_of_another_model(adapter, tiny_causal, tmp_path):
    with pytest.raises(WorkbenchError, match="epochs must be at least 1"):
        FinetuneSettings(epochs=0)
    with pytest.raises(WorkbenchError, match="heldout fraction"):
        FinetuneSettings(heldout_fraction=1.0)
    result, _ = adapter
    other = tmp_path / "other-model"
    tiny_causal.model.save_pretrained(other)
    tiny_causal.tokenizer.save_pretrained(other)
    with pytest.raises(WorkbenchError, match="was trained on base model .*tiny-game-llama"):
        load_model(str(other), device="cpu", adapter=result.out)
    with pytest.raises(WorkbenchError, match="already holds an adapter"):
        finetune(tiny_causal, [], result.out)


def test_cli_bad_input_is_one_line(capsys, tmp_path, adapter, level1_games):
    result, _ = adapter
    level1 = str(level1_games[0].path.parent)
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["finetune", "--games", str(empty), "--out", str(tmp_path / "a")], 1, "no games in"),
        (
            ["finetune", "--games", str(empty), "--out", str(tmp_path / "a"), "--epochs", "0"],
            2,
            "--epochs",
        ),
        (
            ["finetune", "--games", level1, "--out", str(tmp_path / "b"), "--precision", "fp8"],
            1,
            "unknown precision 'fp8'",
        ),
        (
            ["play", "--games", str(empty), "--adapter", str(tmp_path / "nope")],
            2,
            "does not exist",
        ),
        (
            ["explain", "--text", "open the", "--target", " door", "--no-save"]
            + ["--model", str(tmp_path), "--adapter", str(result.out)],
            1,
            "was trained on base model",
        ),
        (
            ["experiment", "introspective-tips", "--train", level1, "--test", level1]
            + ["--llm", "openai:gpt-4o-mini", "--adapter", str(result.out)],
            1,
            "--adapter does not apply to experiment",
        ),
    ]
    for args, code, message in cases:
        got, _, err = run_inprocess(capsys, *args)
        assert got == code, (args, err)
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_experiment_adds_the_finetuned_conditions_on_the_same_games(
    level1_games, games_base, store
):
    """The fine-tuned LLM plays the same train and test games: `finetuned` and
    `finetuned+self` beside the paper's conditions, each compared with `none`."""
    from agents.experiment import introspective_tips
    from tests.agents.test_tips import scripted_actor
    from tests.games.compiled import compiled
    from tests.workbench.openai_server import ScriptedOpenAIServer
    from workbench.llm.openai_backend import OpenAILLM

    test_games = compiled(games_base, 1, 1, seed=3, split="test")
    with ScriptedOpenAIServer(scripted_actor()) as server:
        llm = OpenAILLM("scripted", base_url=server.base_url, backoff=0.01)
        tuned = OpenAILLM("scripted-finetuned", base_url=server.base_url, backoff=0.01)
        result = introspective_tips(
            level1_games,
            test_games,
            llm=llm,
            finetuned=tuned,
            store=store,
            name="it-ft",
            trials=2,
            max_steps=6,
            parallel=4,
            select="generate",
            workers=0,
        )
    table = {(r["phase"], r["condition"], r["trial"]): r for r in result.to_dict()["rows"]}
    assert result.finetuned_runs == ["it-ft-train-finetuned", "it-ft-test-finetuned"]
    # The scripted actor cooks only with tips: finetuned+self learns like self does.
    assert table[("train", "finetuned", 1)]["success"] == 0.0
    assert table[("train", "finetuned+self", 1)]["success"] == 1.0
    assert table[("train", "finetuned+self", 1)]["games"] == 2
    assert table[("train", "finetuned+self", 1)]["success_diff"] == 1.0
    assert table[("test", "finetuned", 0)]["games"] == 1
    assert ("test", "finetuned+self", 0) not in table


def test_a_run_records_its_adapter_and_explain_step_reloads_it(
    adapter, game_model_dir, level1_games, store
):
    import agents
    from agents.recorded_step import run_model
    from workbench.store import runs

    result, _ = adapter
    tuned = load_model(str(game_model_dir), device="cpu", dtype="float32", adapter=result.out)
    agents.play(
        level1_games[:1],
        "llm",
        llm=LocalLLM(tuned),
        max_steps=2,
        store=store,
        run_name="ft",
        workers=0,
    )
    played_with = runs.get_run(store, "ft", kind="play")["params"]["llm"]
    assert played_with["adapter"] == tuned.adapter
    assert played_with["model"] == str(game_model_dir)
    # Explaining a step of that run without --model explains the fine-tuned weights.
    assert run_model(store, "ft").adapter == tuned.adapter


def test_cli_trains_an_adapter_and_prints_its_manifest(
    capsys, tmp_path, game_model_dir, level1_games
):
    out = tmp_path / "cli-adapter"
    args = ["finetune", "--games", str(level1_games[0].path.parent), "--out", str(out)]
    options = ["--model", str(game_model_dir), "--device", "cpu", "--dtype", "float32"]
    code, printed, err = run_inprocess(
        capsys, *args, *options, "--epochs", "1", "--keep-ingredients", "--json"
    )
    assert code == 0, err
    manifest = json.loads(printed)
    assert manifest["hyperparameters"]["epochs"] == 1 and manifest["examples"]["train"] > 0
    assert manifest["hyperparameters"]["rename_ingredients"] is False
    assert (out / "adapter_model.safetensors").is_file() and (out / DEMONSTRATIONS).is_file()
    # The default trains on detours too, written beside the walkthroughs' steps.
    assert manifest["hyperparameters"]["recoveries"] == 1
    assert any(d.detour for d in read_demonstrations(out / DEMONSTRATIONS))


def test_cli_defaults_are_the_library_defaults():
    # The CLI spells its defaults out (importing agents.finetune would import torch at
    # start-up), so this keeps the two in step.
    import inspect
    from dataclasses import fields

    from workbench.cli.finetune import finetune as command

    options = {n: p.default.default for n, p in inspect.signature(command).parameters.items()}
    for field in fields(FinetuneSettings):
        if field.name in options:
            assert options[field.name] == field.default, field.name
    assert {"epochs", "lr", "dropout", "recoveries", "rename_ingredients"} <= set(options)
