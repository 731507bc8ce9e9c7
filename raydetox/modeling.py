"""Base model loading, LoRA wrapping, and saving/loading trained models.

``model.name_or_path`` is either any Hugging Face seq2seq checkpoint (hub id or local dir, loaded with
``AutoModelForSeq2SeqLM``/``AutoTokenizer``) or ``embedded``: the offline base of
:mod:`raydetox.embedded_base`, built from the corpus and cached.
"""

from __future__ import annotations

import contextlib
import json
import pickle
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from raydetox.config import ConfigError, ExperimentConfig, LoraConfig, ModelConfig
from raydetox.embedded_base import MIN_VOCAB, build_embedded_base, load_tokenizer
from raydetox.errors import ModelError, RaydetoxError, one_line
from raydetox.preflight import TRAINED_META, check_model_dir
from raydetox.pretraining_corpus import (
    EMBEDDED,
    PretrainingCorpus,
    base_digest,
    base_texts,
    cache_root,
    cached_base,
    find_cached_base,
    record_base,
)

if TYPE_CHECKING:
    from raydetox.data.prepare import PreparedData


@contextlib.contextmanager
def loading(what: str) -> Iterator[None]:
    """Turn what transformers/peft/torch raise for a model that cannot be loaded into a one-line
    :class:`ModelError` starting with ``what``: OSError (missing or unreadable files, an unknown hub id),
    ValueError (a config it cannot use) and the UnpicklingError of weights that only load by running a
    pickle (refused: torch loads weights with ``weights_only``)."""
    try:
        yield
    except RaydetoxError:
        raise
    except pickle.UnpicklingError as err:
        raise ModelError(f"{what}: weights refused, a pickle is never run ({one_line(err)})") from err
    except (OSError, ValueError) as err:
        raise ModelError(f"{what}: cannot load: {one_line(err)}") from err




def resolve_base(cfg: ModelConfig, texts: Sequence[str] | PretrainingCorpus | None = None) -> str:
    """Where the base model comes from: the embedded base's cache dir (built from ``texts``, plain
    training texts or a :class:`PretrainingCorpus`, if needed; without ``texts`` the newest cached base
    of this config) or ``model.name_or_path`` itself."""
    if cfg.name_or_path != EMBEDDED:
        return cfg.name_or_path
    if texts is not None:
        return str(build_embedded_base(texts, cfg.embedded, cfg.cache_dir))
    path = find_cached_base(cfg.embedded, cfg.cache_dir)
    if path is None:
        raise ModelError(
            f"model.name_or_path=embedded: no cached base for this model.embedded config under "
            f"{cache_root(cfg.cache_dir)}; pass the corpus texts to build it"
        )
    return str(path)


def load_base(
    cfg: ModelConfig, texts: Sequence[str] | PretrainingCorpus | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Base seq2seq model + tokenizer from :func:`resolve_base`."""
    path = resolve_base(cfg, texts)
    return _load_pretrained(path, cache_dir=None if cfg.name_or_path == EMBEDDED else cfg.cache_dir)




def _load_pretrained(
    name_or_path: str | Path, cache_dir: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    with loading(f"model.name_or_path={str(name_or_path)!r}: seq2seq model"):
        model = AutoModelForSeq2SeqLM.from_pretrained(str(name_or_path), cache_dir=cache_dir)
        tok = AutoTokenizer.from_pretrained(str(name_or_path), cache_dir=cache_dir)
    n_emb = model.get_input_embeddings().num_embeddings
    if not MIN_VOCAB <= len(tok) <= n_emb:
        raise ModelError(
            f"model.name_or_path={str(name_or_path)!r}: tokenizer vocab {len(tok)} does not fit the model's "
            f"{n_emb} embeddings (tokenizer loaded the wrong way?)"
        )
    return model, tok


def apply_lora(model: PreTrainedModel, cfg: LoraConfig | None) -> PreTrainedModel:
    """Wrap ``model`` with a peft LoRA adapter (only adapter weights trainable); ``None`` = full fine-tuning."""
    if cfg is None:
        return model
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ConfigError(f"key 'lora.target_modules': {missing} not found in {type(model).__name__}")
    peft_cfg = PeftLoraConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        modules_to_save=list(cfg.modules_to_save) if cfg.modules_to_save else None,
    )
    with _quiet_peft():
        return get_peft_model(model, peft_cfg)


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """Wrapping a model with peft without the FutureWarning peft 0.21 raises by reading transformers'
    deprecated ``is_gradient_checkpointing`` (transformers >= 5.2): printed at every wrap (each trial,
    each ``detox``), nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def save_trained(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path,
    max_source_length: int | None = None,
) -> Path:
    """Save a trained model: adapter only (safetensors) for a peft model, the full model otherwise.

    ``max_source_length`` (the input length it was trained with) is recorded beside it, so that
    ``raydetox detox``/``evaluate`` without ``--config`` cut inputs where training did
    (:func:`raydetox.preflight.trained_max_source_length`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if _is_peft(model):
        peft_cfg = model.peft_config[model.active_adapter]
        base = str(peft_cfg.base_model_name_or_path or "")
        if base and Path(base).is_dir():
            base = str(Path(base).resolve())
            peft_cfg.base_model_name_or_path = base
        if not base:
            raise ValueError("cannot save adapter: the peft model does not name its base model")
        model.save_pretrained(out, safe_serialization=True)
        meta = {"format": "adapter", "base": base}
    else:
        model.save_pretrained(out, safe_serialization=True)
        meta = {"format": "full"}
    if max_source_length is not None:
        meta["max_source_length"] = int(max_source_length)
    tokenizer.save_pretrained(out)
    (out / TRAINED_META).write_text(json.dumps(meta, indent=2))
    return out


def load_trained(
    model_dir: str | Path, merge: bool = False, trainable: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load what :func:`save_trained` wrote: a full model dir, or an adapter dir on top of its base.

    An adapter is returned as a ``PeftModel`` (``trainable`` to continue training), or merged into its
    base with ``merge=True``. Whatever stops the load is a :class:`ModelError` naming the dir.
    """
    path = Path(model_dir)
    base = check_model_dir(path)
    if base is None:
        return _load_pretrained(path)
    from peft import PeftModel

    base_model, base_tok = _load_pretrained(base)
    with loading(f"{path}: adapter"), _quiet_peft():
        model = PeftModel.from_pretrained(base_model, str(path), is_trainable=trainable)
        tok = load_tokenizer(path) if (path / "tokenizer_config.json").is_file() else base_tok
    if merge:
        model = model.merge_and_unload()
    model.eval()
    return model, tok


def adopt_node_base(cfg: ExperimentConfig, prepared: PreparedData, driver_base: dict[str, str]) -> None:
    """On a node that prepared its own copy of the data (not the sweep driver's): find or build this
    node's embedded base and record it for the trial, refusing it unless its weights and tokenizer are
    those of the driver's base (``driver_base``: the driver's pointer). Another CPU builds other weights
    from the same seed, and trials started from different bases would not be comparable."""
    texts = base_texts(cfg, prepared)
    expected = driver_base.get("sha256")
    if texts is None or not expected:  # a hub or local checkpoint, or a pointer from before the digest
        return
    path = cached_base(texts, cfg.model.embedded, cfg.model.cache_dir) or resolve_base(cfg.model, texts=texts)
    found = base_digest(path)
    if found != expected:
        raise ModelError(
            f"{path}: this node's embedded base (sha256 {found[:12]}) is not the sweep driver's "
            f"{driver_base.get('path')} (sha256 {expected[:12]}): a machine with another CPU builds other "
            "weights from the same seed; set model.name_or_path to the driver's base on a file system every "
            "node reads"
        )
    record_base(prepared.out_dir, path)
