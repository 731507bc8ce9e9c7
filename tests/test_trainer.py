"""CurriculumSeq2SeqTrainer on real data with a tiny embedded base: stages, lr, checkpoints, resume, loss hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from raydetox.config import ConfigError, StageConfig
from raydetox.data.prepare import prepare
from raydetox.experiment import build_trainer, run_training
from raydetox.losses import copy_unlikelihood_loss
from raydetox.trainer import STATE_FILE, baseline_schedule
from tests.tiny import tiny_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, mpd_dir: Path, embedded_cache: Path):
    root = tmp_path_factory.mktemp("trainer")
    cfg = tiny_config(mpd_dir, root / "runs", embedded_cache)
    prepared = prepare(cfg, root / "data")
    return cfg, prepared, root


def test_schedule_order_lr_and_examples_per_stage(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    schedule = [StageConfig(stage="hard", epochs=1, lr=2e-3), StageConfig(stage="easy", epochs=1, lr=5e-4)]
    trainer = build_trainer(cfg, prepared, tmp_path)
    results = trainer.run_schedule(schedule)
    assert [r.stage for r in results] == ["hard", "easy"]
    assert [r.lr_applied for r in results] == [2e-3, 5e-4]
    for result in results:
        # Each stage saw exactly its own subset of the train split.
        assert sorted(result.example_ids) == sorted(prepared.stages[result.stage]["id"])
        assert result.steps == cfg.training.max_steps_per_stage
        assert (tmp_path / result.checkpoint).is_dir()
        for key in ("eval_loss", "eval_perplexity", "eval_copy_rate", "eval_chrf", "eval_bertscore_f1", "eval_j"):
            assert key in result.metrics, key
        assert "eval_copy_rate/en" in result.metrics


def test_lora_checkpoints_hold_only_the_adapter(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    trainer = build_trainer(cfg, prepared, tmp_path)
    results = trainer.run_schedule([StageConfig(stage="easy", epochs=1, lr=1e-3)])
    files = {p.name for p in (tmp_path / results[0].checkpoint).iterdir()}
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files
    assert not {"model.safetensors", "pytorch_model.bin"} & files


def test_resume_skips_finished_stages(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    first = build_trainer(cfg, prepared, tmp_path).run_schedule(cfg.schedule[:1])
    assert len(first) == 1
    calls: list[str] = []

    class Spy(TrainerCallback):
        def on_stage_end(self, args, state, control, result, trainer, **_):
            calls.append(result.stage)

    trainer = build_trainer(cfg, prepared, tmp_path)
    trainer.add_callback(Spy())
    resumed = trainer.run_schedule(cfg.schedule)
    assert calls == ["hard"]  # only the unfinished stage ran
    assert [r.stage for r in resumed] == ["easy", "hard"]
    assert resumed[0].metrics == first[0].metrics
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert [s["stage"] for s in state["stages"]] == ["easy", "hard"]
    # A different schedule cannot silently reuse those stages.
    with pytest.raises(ValueError, match="not a prefix"):
        build_trainer(cfg, prepared, tmp_path).run_schedule([StageConfig(stage="medium")])


def test_run_training_writes_test_metrics_and_samples(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    run = run_training(cfg, prepared, tmp_path, schedule=baseline_schedule(cfg.schedule))
    assert list(run.stages["stage"]) == ["full"]
    assert run.stages["epochs"].iloc[0] == sum(s.epochs for s in cfg.schedule)
    assert run.test_metrics["test_n"] == len(prepared.test)
    assert set(run.samples["lang"]) == set(prepared.test["lang"])
    for name in ("stages.csv", "samples.csv", "test_metrics.json", "lexicon.json"):
        assert (tmp_path / name).is_file()


def test_copy_unlikelihood_penalises_copying_removed_tokens() -> None:
    # Source [5, 6, 7], target [5, 7]: token 6 was removed, so only p(6) is penalised.
    vocab = 10
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "labels": torch.tensor([[5, 7, 1, -100]])}
    logits = torch.zeros(1, 4, vocab)
    logits[0, :, 6] = 3.0

    class Out:
        pass

    out = Out()
    out.logits = logits
    loss = copy_unlikelihood_loss(torch.nn.Linear(1, 1), inputs, out)
    p6 = torch.softmax(logits[0, 0], -1)[6]
    assert torch.isclose(loss, -torch.log1p(-p6), atol=1e-6)
    out.logits = torch.zeros(1, 4, vocab)
    out.logits[0, :, 6] = -3.0
    assert copy_unlikelihood_loss(torch.nn.Linear(1, 1), inputs, out) < loss


def test_extra_loss_changes_training(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    stage = [StageConfig(stage="easy", epochs=1, lr=1e-3)]
    plain = build_trainer(cfg, prepared, tmp_path / "a").run_schedule(stage)[0]
    cfg_ul = tiny_config(
        Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
        **{"training.extra_loss": "copy_unlikelihood", "training.extra_loss_weight": 1.0},
    )
    trainer = build_trainer(cfg_ul, prepared, tmp_path / "b")
    assert trainer._extra_loss is copy_unlikelihood_loss
    with_ul = trainer.run_schedule(stage)[0]
    assert with_ul.train_loss > plain.train_loss  # same seed and data: the extra term adds to the loss
    # An unknown loss is refused when the config loads, before any model is built or stage trained.
    with pytest.raises(ConfigError, match="key 'training.extra_loss': unknown extra loss 'nope'"):
        tiny_config(Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
                    **{"training.extra_loss": "nope"})


def test_same_seed_same_run(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    stage = [StageConfig(stage="easy", epochs=1, lr=1e-3)]
    first = build_trainer(cfg, prepared, tmp_path / "a").run_schedule(stage)[0]
    torch.manual_seed(1234)  # whatever ran before in the process must not matter
    second = build_trainer(cfg, prepared, tmp_path / "b").run_schedule(stage)[0]
    assert first.train_loss == second.train_loss
    assert first.metrics["eval_loss"] == second.metrics["eval_loss"]
