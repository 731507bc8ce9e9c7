"""CurriculumSeq2SeqTrainer on real data with a tiny embedded base: stages, lr, checkpoints, resume, loss hook."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from raydetox.config import ConfigError, StageConfig
from raydetox.errors import ResultsError
from raydetox.data.difficulty import difficulty_cdf
from raydetox.data.io import DataError
from raydetox.data.prepare import prepare
from raydetox.experiment import build_trainer, run_training
from raydetox.data.lexicon import Lexicon
from raydetox.losses import LossContext, LossSetupError, ToxicUnlikelihood, copy_unlikelihood_loss
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


@pytest.mark.parametrize("empty", ["validation", "test"])
def test_a_run_without_validation_or_test_rows_is_refused_before_the_model_loads(setup, tmp_path: Path, empty) -> None:
    cfg, prepared, _ = setup
    hollow = dataclasses.replace(prepared, **{empty: getattr(prepared, empty).iloc[:0]})
    with pytest.raises(DataError, match=rf"{prepared.out_dir}: the {empty} split holds no rows"):
        build_trainer(cfg, hollow, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    prepared.require_training_splits()  # the real splits pass


def test_resume_refuses_finished_stages_trained_on_other_rows(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    first = cfg.schedule[0].stage
    build_trainer(cfg, prepared, tmp_path).run_schedule(cfg.schedule[:1])
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert set(state["data"]) == {first}, "the state records the rows each scheduled stage trains on"
    build_trainer(cfg, prepared, tmp_path).run_schedule(cfg.schedule[:1])  # the same rows resume
    fewer = dataclasses.replace(prepared, stages={**prepared.stages, first: prepared.stages[first].iloc[1:]})
    with pytest.raises(ResultsError, match=rf"finished stage\(s\) \['{first}'\] were trained on other rows.*--no-resume"):
        build_trainer(cfg, fewer, tmp_path).run_schedule(cfg.schedule[:1])
    redone = build_trainer(cfg, fewer, tmp_path).run_schedule(cfg.schedule[:1], resume=False)
    assert redone[0].n_examples == len(prepared.stages[first]) - 1


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


def test_a_stage_evaluates_in_one_pass_over_the_validation_rows(setup, tmp_path: Path) -> None:
    """Loss and generations come from one prediction pass: one prediction step and one generate call per
    validation batch, each row generated once, the texts of the separate generation path, HF's loss."""
    cfg, prepared, _ = setup
    trainer = build_trainer(cfg, prepared, tmp_path)
    steps: list[int] = []
    generated: list[tuple[int, int]] = []  # (rows, the prediction step it ran in; 0 = outside any)
    real_step, real_generate = trainer.prediction_step, trainer.model.generate

    def counted_step(*args, **kwargs):
        steps.append(len(steps) + 1)
        try:
            return real_step(*args, **kwargs)
        finally:
            steps.append(0)

    def counted_generate(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        generated.append((len(out), steps[-1] if steps else 0))
        return out

    trainer.prediction_step = counted_step
    trainer.model.generate = counted_generate
    metrics, predictions = trainer.evaluate_stage()
    rows = len(prepared.validation)
    batches = math.ceil(rows / cfg.training.eval_batch_size)
    assert batches > 1  # more than one batch, so the row order is really mapped back
    inside = [step for step in steps if step]
    assert len(inside) == batches and sum(n for n, _ in generated) == rows
    # Each batch is generated inside its own prediction step (the loss pass), never in a pass of its own.
    assert sorted(step for _, step in generated) == inside
    assert list(predictions["id"]) == list(prepared.validation["id"].astype(str))
    assert {"eval_loss", "eval_perplexity", "eval_copy_rate", "eval_j"} <= set(metrics)
    # The same texts as generating on their own, and the same loss as HF's evaluate().
    separate_scores, separate = trainer.generate_and_predict(prepared.validation, prefix="eval_")
    assert list(predictions["output"]) == list(separate["output"])
    assert {k: metrics[k] for k in separate_scores} == pytest.approx(separate_scores, nan_ok=True)
    assert metrics["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"])
    # With the logits processors on (built per batch from its sources), still the separate path's texts.
    trainer.decoding = dataclasses.replace(cfg.decoding, toxic_penalty=2.0, copy_penalty=1.0)
    _, penalised = trainer.generate_and_predict(prepared.validation, prefix="eval_")
    assert trainer._loss_and_generations()[1] == list(penalised["output"])
    # The every-piece ban matches terms in the raw source text: the stage generates apart, with the ban.
    trainer.decoding = dataclasses.replace(cfg.decoding, toxic_penalty=math.inf, toxic_ban="every_piece")
    metrics, predictions = trainer.evaluate_stage()
    _, banned = trainer.generate_and_predict(prepared.validation, prefix="eval_")
    assert list(predictions["output"]) == list(banned["output"])
    assert metrics["eval_loss"] == pytest.approx(trainer.evaluate()["eval_loss"])


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


class _Out:
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


def test_toxic_unlikelihood_penalises_only_removed_term_pieces(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    tok = build_trainer(cfg, prepared, tmp_path).processing_class
    term = ToxicUnlikelihood(LossContext(tokenizer=tok, lexicon=Lexicon.from_terms({"en": ["idiot", "the f word"]})))
    source = tok(["You are an Idiot and the f word"], return_tensors="pt")["input_ids"]
    kept = tok(text_target=["You are the f word"], return_tensors="pt")["input_ids"]
    labels = torch.cat([kept, torch.full((1, source.size(1) - kept.size(1)), -100)], dim=1)
    # The term's pieces (as the source spells it), never the harmless removed word "an" or the phrase.
    idiot = sorted(set(tok("Idiot", add_special_tokens=False)["input_ids"]) & set(source[0].tolist())
                   - set(kept[0].tolist()))
    assert idiot and term.candidates(source, labels) == [idiot]
    an = tok(" an", add_special_tokens=False)["input_ids"][-1]
    assert an not in idiot and an in copy_candidates(source, labels)
    vocab = len(tok)
    logits = torch.zeros(1, labels.size(1), vocab)
    logits[0, :, idiot[0]] = 3.0
    loss = term(torch.nn.Linear(1, 1), {"input_ids": source, "labels": labels}, _Out(logits))
    p = torch.softmax(logits[0, 0], -1)
    expected = -torch.log1p(-p[idiot]).sum()  # same at every target position
    assert torch.isclose(loss, expected, atol=1e-5)
    # Mass on a removed harmless word costs this term nothing extra; copy_unlikelihood charges it.
    harmless = torch.zeros(1, labels.size(1), vocab)
    harmless[0, :, an] = 3.0
    flat = term(torch.nn.Linear(1, 1), {"input_ids": source, "labels": labels}, _Out(torch.zeros_like(harmless)))
    assert term(torch.nn.Linear(1, 1), {"input_ids": source, "labels": labels}, _Out(harmless)) < flat
    assert copy_unlikelihood_loss(torch.nn.Linear(1, 1), {"input_ids": source, "labels": labels}, _Out(harmless)) > \
        copy_unlikelihood_loss(torch.nn.Linear(1, 1), {"input_ids": source, "labels": labels}, _Out(torch.zeros_like(harmless)))
    # A reference that keeps the term (or a source without one) leaves nothing to penalise.
    assert term.candidates(source, torch.cat([source[:, :-1], torch.full((1, 1), -100)], 1)) == [[]]
    with pytest.raises(LossSetupError, match="toxic_unlikelihood needs the tokenizer and a lexicon with terms"):
        ToxicUnlikelihood(LossContext(tokenizer=tok, lexicon=Lexicon.from_terms({"en": []})))


def copy_candidates(source: torch.Tensor, labels: torch.Tensor) -> set[int]:
    """Source ids the target lacks (what copy_unlikelihood penalises)."""
    return set(source[0].tolist()) - set(labels[0][labels[0] >= 0].tolist())


@pytest.mark.parametrize("name", ["copy_unlikelihood", "toxic_unlikelihood"])
def test_extra_loss_changes_training(setup, tmp_path: Path, name: str) -> None:
    cfg, prepared, _ = setup
    stage = [StageConfig(stage="easy", epochs=1, lr=1e-3)]
    plain = build_trainer(cfg, prepared, tmp_path / "a").run_schedule(stage)[0]
    cfg_ul = tiny_config(
        Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
        **{"training.extra_loss": name, "training.extra_loss_weight": 1.0},
    )
    trainer = build_trainer(cfg_ul, prepared, tmp_path / "b")
    if name == "copy_unlikelihood":
        assert trainer._extra_loss is copy_unlikelihood_loss
    else:
        assert isinstance(trainer._extra_loss, ToxicUnlikelihood)
    with_ul = trainer.run_schedule(stage)[0]
    assert with_ul.train_loss > plain.train_loss  # same seed and data: the extra term adds to the loss
    # An unknown loss, or a toxic term without a lexicon, is refused when the config loads, before any
    # model is built or stage trained.
    with pytest.raises(ConfigError, match="key 'training.extra_loss': unknown extra loss 'nope'"):
        tiny_config(Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
                    **{"training.extra_loss": "nope"})
    with pytest.raises(ConfigError, match="key 'training.extra_loss': toxic_unlikelihood penalises lexicon terms"):
        tiny_config(Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
                    **{"training.extra_loss": "toxic_unlikelihood", "lexicon.learn": False})


def test_same_seed_same_run(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    stage = [StageConfig(stage="easy", epochs=1, lr=1e-3)]
    first = build_trainer(cfg, prepared, tmp_path / "a").run_schedule(stage)[0]
    torch.manual_seed(1234)  # whatever ran before in the process must not matter
    second = build_trainer(cfg, prepared, tmp_path / "b").run_schedule(stage)[0]
    assert first.train_loss == second.train_loss
    assert first.metrics["eval_loss"] == second.metrics["eval_loss"]


def test_cumulative_pacing_trains_each_stage_on_the_earlier_buckets_too(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    cumulative = tiny_config(Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
                             **{"curriculum.pacing": "cumulative"})
    schedule = [StageConfig(stage=s, epochs=1, lr=1e-3) for s in ("hard", "easy", "medium")]
    results = build_trainer(cumulative, prepared, tmp_path).run_schedule(schedule)
    ids = {b: set(prepared.stages[b]["id"]) for b in ("easy", "medium", "hard", "full")}
    assert [set(r.example_ids) for r in results] == [ids["hard"], ids["hard"] | ids["easy"], ids["full"]]
    assert [r.n_examples for r in results] == [len(ids["hard"]), len(ids["hard"] | ids["easy"]), len(ids["full"])]
    assert all(len(r.example_ids) == r.n_examples for r in results)  # each pair once per stage
    assert {r.pacing for r in results} == {"cumulative"} and {r.competence for r in results} == {None}


def test_competence_pacing_trains_on_pairs_within_competence_and_resumes(setup, tmp_path: Path) -> None:
    cfg, prepared, _ = setup
    c0 = 0.1
    paced = tiny_config(Path(cfg.data.source), Path(cfg.output_dir), Path(cfg.model.cache_dir),
                        **{"curriculum.pacing": "competence", "curriculum.c0": c0,
                           "training.max_steps_per_stage": None})
    schedule = [StageConfig(stage="easy", epochs=0.25, lr=1e-3), StageConfig(stage="hard", epochs=0.5, lr=5e-4)]
    # One run split among the stages' epochs: an epoch is a pass over the full train split.
    per_epoch = math.ceil(len(prepared.stages["full"]) / paced.training.batch_size)
    steps = [math.ceil(0.25 * per_epoch), math.ceil(0.5 * per_epoch)]
    total = sum(steps)

    def c(t: int) -> float:
        return min(1.0, math.sqrt(t * (1 - c0**2) / total + c0**2))

    trainer = build_trainer(paced, prepared, tmp_path / "a")
    # What HF's loop actually trained on: every training batch, in order (one per step, no accumulation).
    batches: list[dict[str, torch.Tensor]] = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        if model.training:
            batches.append({k: inputs[k].detach().cpu() for k in ("input_ids", "attention_mask", "labels")})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    results = trainer.run_schedule(schedule)
    assert [r.steps for r in results] == steps and len(batches) == total
    # Each batch's pairs, found by their tokens, have a difficulty CDF value within c(t) at step t.
    full = trainer.stage_datasets["full"]
    cdf = dict(zip(prepared.stages["full"]["id"], difficulty_cdf(prepared.stages["full"])))
    by_tokens: dict[tuple, float] = {}
    for id_, source, target in zip(full["id"], full["input_ids"], full["labels"]):
        key = (tuple(source), tuple(target))
        by_tokens[key] = max(by_tokens.get(key, 0.0), cdf[id_])
    drawn = []
    for t, batch in enumerate(batches, start=1):
        d = [by_tokens[(tuple(s[m.bool()].tolist()), tuple(y[y != -100].tolist()))]
             for s, m, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]
        assert max(d) <= c(t) + 1e-12, (t, c(t), max(d))
        drawn.append(max(d))
    assert max(drawn[:2]) <= c(2) < 0.5 < max(drawn[-3:])  # the pool grew from easy pairs to hard ones
    assert [r.competence for r in results] == pytest.approx([c(steps[0]), 1.0])
    assert results[0].n_examples < results[1].n_examples <= len(full)
    assert all(cdf[i] <= c(steps[0]) + 1e-12 for i in results[0].example_ids)

    # Interrupted after its first stage, the run resumes with the very phase it would have trained.
    class Crash(TrainerCallback):
        def on_stage_end(self, args, state, control, result, trainer, **_):
            raise RuntimeError("stop after the first stage")

    interrupted = build_trainer(paced, prepared, tmp_path / "b")
    interrupted.add_callback(Crash())
    with pytest.raises(RuntimeError, match="stop after"):
        interrupted.run_schedule(schedule)
    resumed = build_trainer(paced, prepared, tmp_path / "b").run_schedule(schedule)
    assert resumed[1].example_ids == results[1].example_ids
    assert resumed[1].train_loss == results[1].train_loss and resumed[1].competence == 1.0
    # The phases were cut from this whole schedule: another one (or another pacing) cannot continue them.
    with pytest.raises(ValueError, match="whole schedule"):
        build_trainer(paced, prepared, tmp_path / "b").run_schedule([schedule[0], StageConfig(stage="hard", epochs=2)])
    with pytest.raises(ValueError, match="paced \\['competence'\\]"):
        build_trainer(cfg, prepared, tmp_path / "b").run_schedule(schedule)


def test_kept_source_words_target_is_what_the_trainer_learns(setup, tmp_path: Path) -> None:
    from raydetox.targets import kept_source_words

    cfg, prepared, _ = setup
    deleting = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, target="kept_source_words"))
    trainer = build_trainer(deleting, prepared, tmp_path)
    tokenizer = trainer.processing_class
    full = prepared.stages["full"]
    rows = trainer.stage_datasets["full"]
    assert list(rows["id"]) == list(full["id"])
    wanted = tokenizer(text_target=[kept_source_words(t, n) for t, n in zip(full["toxic"], full["neutral"])],
                       max_length=cfg.model.max_target_length, truncation=True)["input_ids"]
    assert list(rows["labels"]) == wanted
    plain = build_trainer(cfg, prepared, tmp_path / "plain").stage_datasets["full"]
    assert list(plain["labels"]) != wanted and list(plain["input_ids"]) == list(rows["input_ids"])
    result = trainer.run_schedule([StageConfig(stage="easy", epochs=1, lr=1e-3)])[0]
    assert math.isfinite(result.metrics["eval_loss"]) and "eval_j" in result.metrics
