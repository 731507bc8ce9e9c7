"""Each private third-party API of raydetox.compat against the library's public API, on real data."""

from __future__ import annotations

import inspect
from pathlib import Path

import pandas as pd
import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF
from transformers import T5Config, T5ForConditionalGeneration

from raydetox.compat import (
    bertscore_model,
    c10d_store_creator,
    corpus_score_from_stats,
    mlflow_trial_runs,
    ray_torch_backend,
    score_from_stats,
    sentence_stats,
    set_c10d_store_creator,
    torchelastic_uses_agent_store,
    without_placement_group_cleaner,
)
from raydetox.metrics import ref_streams


@pytest.fixture(scope="module")
def pairs(mpd_dir: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p).head(20) for p in sorted(mpd_dir.glob("*.parquet"))]
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("metric", [CHRF(), BLEU()], ids=["chrf", "bleu"])
def test_sacrebleu_statistics_give_the_public_scores(pairs: pd.DataFrame, metric) -> None:
    hyps = list(pairs["toxic_sentence"])
    refs = [[r] for r in pairs["neutral_sentence"]]
    streams = ref_streams(refs)
    stats = sentence_stats(metric, hyps, streams)
    assert len(stats) == len(hyps)
    assert corpus_score_from_stats(metric, stats) == pytest.approx(metric.corpus_score(hyps, streams).score, abs=1e-9)
    if isinstance(metric, CHRF):  # sentence BLEU smooths differently from the corpus formula
        for h, r, s in list(zip(hyps, refs, stats))[:30]:
            assert score_from_stats(metric, s) == pytest.approx(metric.sentence_score(h, r).score, abs=1e-9)


def test_t5_bucket_places_the_previous_token_bias_where_t5_reads_it() -> None:
    from raydetox.embedded_base import _init_previous_token_head

    model = T5ForConditionalGeneration(T5Config(vocab_size=32, d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                                num_decoder_layers=1, num_heads=4))
    _init_previous_token_head(model, 8.0)
    attn = model.encoder.block[0].layer[0].SelfAttention
    bias = attn.compute_bias(6, 6)[0]  # T5's public path: (heads, query, key)
    for head, offset in {0: -1, 1: -2, 2: -3}.items():
        assert all(bias[head, q, q + offset].item() == 8.0 for q in range(-offset, 6))


def test_ray_torch_backend_is_the_one_torch_config_uses() -> None:
    from ray.train.torch import TorchConfig

    assert TorchConfig().backend_cls is ray_torch_backend()
    assert torch.distributed.is_available()


def test_bertscore_model_is_what_bertscorer_scores_with(pairs: pd.DataFrame) -> None:
    from collections import defaultdict

    from bert_score import BERTScorer
    from bert_score.utils import bert_cos_score_idf

    from raydetox.metrics import default_bertscore_model

    model_dir, layers = default_bertscore_model()
    scorer = BERTScorer(model_type=model_dir, num_layers=layers, device="cpu", use_fast_tokenizer=True)
    tokenizer, model = bertscore_model(scorer)
    hyps, refs = list(pairs["toxic_sentence"][:12]), list(pairs["neutral_sentence"][:12])
    idf = defaultdict(lambda: 1.0, {tokenizer.sep_token_id: 0, tokenizer.cls_token_id: 0})  # score()'s no-idf
    ours = bert_cos_score_idf(model, refs, hyps, tokenizer, idf, device="cpu")[:, 2]
    torch.testing.assert_close(ours, scorer.score(hyps, refs)[2], rtol=0, atol=1e-6)


def test_torch_env_rendezvous_creates_its_store_through_the_compat_factory(monkeypatch) -> None:
    import socket
    from datetime import timedelta

    import torch.distributed as dist

    create = c10d_store_creator()
    assert create is not None
    assert list(inspect.signature(create).parameters) == ["hostname", "port", "rank", "world_size", "timeout",
                                                          "use_libuv"]
    calls = []

    def counting(hostname, port, rank, world_size, timeout, use_libuv=True):
        calls.append((hostname, rank, world_size))
        return create(hostname, port, rank, world_size, timeout, use_libuv)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    set_c10d_store_creator(counting)
    try:
        store, rank, world_size = next(dist.rendezvous("env://", rank=0, world_size=1, timeout=timedelta(seconds=30)))
        store.set("k", "v")
        assert store.get("k") == b"v" and (rank, world_size) == (0, 1)
    finally:
        set_c10d_store_creator(create)
    assert calls == [("127.0.0.1", 0, 1)] and c10d_store_creator() is create
    del store


@pytest.mark.parametrize("value", [None, "True", "False"])
def test_torchelastic_agent_store_follows_its_documented_variable(monkeypatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    else:
        monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", value)
    assert torchelastic_uses_agent_store() is (value == "True")


def test_mlflow_trial_runs_is_the_map_the_callback_logs_through(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow")
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.experiment import Trial

    callback = MLflowLoggerCallback(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_name="compat")
    callback.setup()
    trial = Trial("trainable", config={"lr": 0.1}, stub=True)
    callback.log_trial_start(trial)  # the public hook starts the trial's run
    runs = mlflow_trial_runs(callback)
    assert list(runs) == [trial]
    run = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(runs[trial])
    assert run.data.tags["trial_name"] == str(trial) and run.data.params == {"lr": "0.1"}


def test_without_placement_group_cleaner_leaves_every_other_default_callback() -> None:
    from ray import train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    def build(cls: type):
        return cls(lambda: None, scaling_config=train.ScalingConfig(num_workers=1))

    default = [type(c) for c in build(TorchTrainer)._create_default_callbacks()]
    lean = [type(c) for c in build(without_placement_group_cleaner(TorchTrainer))._create_default_callbacks()]
    assert PlacementGroupCleanerCallback in default
    assert lean == [c for c in default if c is not PlacementGroupCleanerCallback]
    assert issubclass(without_placement_group_cleaner(TorchTrainer), TorchTrainer)
