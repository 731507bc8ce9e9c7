"""Each private third-party API of raydetox.compat against the library's public API, on real data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from sacrebleu.metrics import BLEU, CHRF
from transformers import T5Config, T5ForConditionalGeneration

from raydetox.compat import corpus_score_from_stats, ray_torch_backend, score_from_stats, sentence_stats
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
