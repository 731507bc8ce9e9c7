"""Toxic lexicon: terms learned from the training pairs (log-odds) plus word-list files, per language.

Learning. For each language, every distinct toxic sentence (compared by
:func:`~raydetox.data.pairs.text_key`; a sentence given as one row per reference counts once, its
references merged) contributes the *set* of tokens of its toxic side and the set of tokens of all its
references together. A token's document counts ``c_tox`` / ``c_neu`` (sentences whose toxic side /
whose references contain it) give a smoothed log-odds ratio over the ``N`` sentences::

    score = log((c_tox + s) / (N - c_tox + s)) - log((c_neu + s) / (N - c_neu + s))

with ``s = cfg.smoothing``. A token is kept when the references *remove* it (present in the toxic side,
absent from every reference) in at least ``cfg.min_count`` sentences and ``score >= cfg.min_log_odds``;
the ``cfg.max_terms_per_lang`` best scores are kept. Stopwords occur on both sides and score near 0.

Tokens are runs of letters, combining marks and digits (``\\p{L}\\p{M}\\p{N}``, so Devanagari vowel
signs stay inside words), lower-cased, of two or more characters with at least one letter: one-letter
words are function words (``a``, ``и``, ``y``), and apostrophes split words because the English toxic
sides are tokenised (``don 't``) while their references are not (``don't``), which would otherwise
"learn" ``t``. Chinese/Japanese (Han, Hiragana, Katakana) runs have no spaces between words, so they
are cut into character 1- and 2-grams instead: the ParaDetox zh rewrites replace short words (默 → 黑人,
恶心 → deleted), which the 1–2-grams cover, and the log-odds filter drops the n-grams the rewrite keeps.
A character is dropped when it is removed no more often than a kept bigram containing it (心 of 恶心
would otherwise flag 开心 and 小心). Single characters are not learned at all unless
``cfg.learn_cjk_single_chars``: a character is a morpheme of many words, and a few hundred pairs cannot
tell its toxic uses from the rest (learned 狗, 母 and 哥 flagged 狗肉 "dog meat", 父母 "parents" and 老哥
"bro" in correct rewrites, which cleaning then dropped as still toxic); word lists still supply single
characters.

Word lists: one term a line (UTF-8), multi-word phrases allowed; terms made only of punctuation (the
ldnoobw lists hold ``[``, ``__``, ``/.``) are skipped as they would flag ordinary punctuation. Their
terms get the score :data:`WORDLIST_SCORE` (``math.inf``: unconditionally toxic, above any learned
log-odds), written as JSON ``null`` by :meth:`Lexicon.save` so the file stays strict JSON. Generic
lists over-reach (ldnoobw ``en`` holds ``i`` and ``us``, ``es`` holds ``es``, ``ar`` holds الله, ``zh``
holds 性), so when learning, a word-list term is *vetoed* for a language when the references keep it in
at least ``min_count`` pairs and its log-odds (same formula, counted by phrase matching) is below
``min_log_odds``: by the corpus's own standard it is not toxic. Vetoed terms are listed, not lost.

Matching is case-insensitive (text lower-cased, Turkish ``İ`` as ``i``; a term also matches in its
``casefold`` spelling, so ``SCHEISSE`` finds ``scheiße``, and with ``ß`` for ``ss``, so ``Scheiße``
finds ``scheisse``), NFC-normalised, with typographic apostrophes read as ``'``. A term
edge that is a letter/mark/digit must not touch another one (``class`` does not contain ``ass``), except
that characters of scripts written without spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar)
never count as neighbours: a CJK term matches as a substring, and a Latin term matches inside CJK
text (``不得house``). This is how ``zh``/``ja`` get substring matching: by script rather than by language
code, so the romanised entries of the zh/ja lists (``ai chai``) still need word edges. Spaces in a
phrase match any run of whitespace. One regex per language is compiled lazily from a character trie
of its terms (a flat alternation of the ~13k English terms matches ~100× slower) and cached.

Languages it lacks. Held-out data may hold a language the training pairs did not: a language without an
entry has no terms (nothing is found in its texts, nothing deleted), by rule rather than by error.
:meth:`Lexicon.warn_unknown` says so once for a whole batch, with the row counts; a single lookup of
such a language warns once per lexicon otherwise. :meth:`Lexicon.for_languages` gives such languages
the word lists the lexicon was built with (recorded in ``wordlists``), where they exist.
"""

from __future__ import annotations

import difflib
import glob
import json
import math
import os
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import regex

from raydetox.config import ConfigError, LexiconConfig
from raydetox.data.io import DataError
from raydetox.data.langid import UNDETERMINED
from raydetox.data.pairs import text_key

WORDLIST_SCORE: float = math.inf
"""Score of a term that comes from a word list (or :meth:`Lexicon.from_terms`)."""

_FORMAT = "raydetox.lexicon"
_VERSION = 1

# Characters of a word (ZWNJ/ZWJ sit inside Indic and Persian words), and the scripts written without
# spaces between words: shared with raydetox.targets, which splits texts into the same words.
WORD_CHARS = r"\p{L}\p{M}\p{N}\u200c\u200d"
_CJK = r"\p{Han}\p{Hiragana}\p{Katakana}"
UNSPACED = _CJK + r"\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
# A neighbour that would make a match part of a longer word.
_JOINER = rf"[[{WORD_CHARS}]--[{UNSPACED}]]"
# Fails only between two joiners: applied before and after a term, it needs word edges exactly where
# the term's own first/last character is a joiner (so "13." needs no edge after its dot).
_EDGE = rf"(?:(?<!{_JOINER})|(?!{_JOINER}))"

_TOKEN = regex.compile(rf"[{WORD_CHARS}]+", regex.V1)
_SCRIPT_RUNS = regex.compile(rf"([{_CJK}]+)|[^{_CJK}]+", regex.V1)
_HAS_LETTER = regex.compile(r"\p{L}")
_ONLY_PUNCT = regex.compile(r"[\p{P}\s]+")
_CLOSING = regex.compile(r"[\p{Pe}\p{Pf},.!?;:…]")
_FANOUT = 48
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})
# SentencePiece / byte-level BPE word-start markers, and byte-fallback pieces like <0xF0>.
_PIECE_MARKERS = "\u2581\u0120 \t\n"
BYTE_PIECE = regex.compile(r"<0x[0-9A-Fa-f]{2}>")


def _lower(text: str) -> str:
    """``str.lower`` that keeps every character's position: ``İ`` (whose lower case is ``i`` and a
    combining dot) becomes ``i``."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c.lower()[0] for c in text)


def _view(text: str) -> tuple[str, str]:
    """(NFC text, same-length matching view: apostrophes unified, lower-cased)."""
    nfc = unicodedata.normalize("NFC", text)
    return nfc, _lower(nfc.translate(_APOSTROPHES))


def normalize_term(term: str) -> str:
    """The stored form of a term: NFC, lower-cased, single spaces, typographic apostrophes as ``'``."""
    text = " ".join(unicodedata.normalize("NFC", term).translate(_APOSTROPHES).split())
    return unicodedata.normalize("NFC", text.lower())


def tokenize(text: str) -> list[str]:
    """Learning tokens: lower-cased words of 2+ characters with a letter; CJK runs as 1- and 2-grams."""
    out: list[str] = []
    for word in _TOKEN.findall(_view(text)[1]):
        for run in _SCRIPT_RUNS.finditer(word):
            if run.group(1):
                chars = run.group(1)
                out.extend(chars)
                out.extend(chars[i : i + 2] for i in range(len(chars) - 1))
            elif len(run.group()) > 1 and _HAS_LETTER.search(run.group()):
                out.append(run.group())
    return out


def _trie_pattern(variants: Iterable[str]) -> str:
    """Alternation of ``variants`` factored as a character trie; longer continuations are tried first."""
    root: dict[str, Any] = {}
    for text in variants:
        node = root
        for ch in text:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        chars = sorted(ch for ch in node if ch)
        alts = [(r"\s+" if ch == " " else regex.escape(ch)) + emit(node[ch]) for ch in chars]
        if len(alts) > _FANOUT:
            # The engine tries branches one by one: behind a wide node (the root of an all-language
            # lexicon has ~2k first characters) dispatch by a character class per group first.
            size = math.ceil(math.sqrt(len(alts)))
            alts = [
                "(?=[" + "".join(r"\s" if c == " " else regex.escape(c) for c in chars[i : i + size]) + "])"
                + "(?:" + "|".join(alts[i : i + size]) + ")"
                for i in range(0, len(alts), size)
            ]
        if "" in node:
            alts.append("")  # last: the shorter term only when no longer one matches
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root)


@dataclass(frozen=True)
class _Matcher:
    pattern: regex.Pattern[str]
    variant_to_term: dict[str, str]

    def term(self, matched: str) -> str:
        return self.variant_to_term[" ".join(matched.split())]


@dataclass(eq=True, repr=False)
class Lexicon:
    """Toxic terms per language: ``terms[lang][term] = score`` (log-odds, or :data:`WORDLIST_SCORE`).

    Terms are stored normalised (:func:`normalize_term`). ``missing_wordlists`` lists the templated
    word-list paths that did not exist for some language; ``vetoed`` the word-list terms that
    :meth:`learn` dropped per language because the references keep them; ``wordlists`` the word-list
    paths it was built with (absolute, ``{lang}`` kept). A language without an entry has no terms (see
    the module doc). Treat ``terms`` as read-only once the lexicon has been used for matching: the
    compiled patterns are cached.
    """

    terms: dict[str, dict[str, float]]
    missing_wordlists: list[str] = field(default_factory=list)
    vetoed: dict[str, list[str]] = field(default_factory=dict)
    wordlists: list[str] = field(default_factory=list)
    _matchers: dict[str | None, _Matcher | None] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    # Languages without an entry already warned about: one warning each, not one per text.
    _warned: set[str] = field(default_factory=set, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.terms, Mapping):
            raise TypeError(f"Lexicon.terms must map lang -> {{term: score}}, got {type(self.terms).__name__}")
        clean: dict[str, dict[str, float]] = {}
        for lang, scored in self.terms.items():
            if not isinstance(lang, str) or not lang:
                raise TypeError(f"Lexicon.terms: language keys must be non-empty strings, got {lang!r}")
            if not isinstance(scored, Mapping):
                raise TypeError(f"Lexicon.terms[{lang!r}] must map term -> score, got {type(scored).__name__}")
            out: dict[str, float] = {}
            for term, score in scored.items():
                if not isinstance(term, str):
                    raise TypeError(f"Lexicon.terms[{lang!r}]: term {term!r} is not a string")
                if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
                    raise TypeError(f"Lexicon.terms[{lang!r}][{term!r}]: score {score!r} is not a number")
                key = normalize_term(term)
                if key:
                    out[key] = max(float(score), out.get(key, -math.inf))
            clean[lang] = out
        self.terms = clean
        self.missing_wordlists = [str(p) for p in self.missing_wordlists]
        self.vetoed = {str(lang): [str(t) for t in v] for lang, v in self.vetoed.items()}
        self.wordlists = [str(p) for p in self.wordlists]

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def learn(
        cls,
        pairs: pd.DataFrame,
        cfg: LexiconConfig,
        base_dir: str | os.PathLike[str] | None = None,
        languages: Iterable[str] = (),
    ) -> Lexicon:
        """Learn per-language terms from ``pairs`` (see the module doc) and add ``cfg.wordlists``.

        Every language of ``pairs`` and of ``languages`` gets an entry, even an empty one: a language
        only in ``languages`` (one the data holds for evaluation only) gets its word lists' terms,
        unvetoed (no pairs to judge them by), and no learned term. Relative word-list paths are resolved
        from ``base_dir`` (default: the working directory); a ``{lang}`` path missing for a language is
        skipped, recorded in ``missing_wordlists`` and warned about; a missing plain path, or a
        ``{lang}`` path that matches no file for any language (a wrong path), is an error. A plain
        (non-templated) word list applies to every language. With ``cfg.learn`` and
        ``cfg.veto_wordlists``, word-list terms the references keep are dropped (listed in ``vetoed``).
        """
        _check_config(cfg)
        toxic, refs, langs = _pairs_columns(pairs)
        rows: dict[str, list[int]] = {lang: [] for lang in languages}
        for i, lang in enumerate(langs):
            rows.setdefault(lang, []).append(i)
        words, missing = read_wordlists(cfg.wordlists, sorted(rows), base_dir)
        if missing:
            listed = ", ".join(f"{lang} ({', '.join(paths)})" for lang, paths in sorted(missing.items()))
            warnings.warn(
                f"lexicon.wordlists: no word list for language(s) {listed}: their terms are only the learned "
                "ones and those of the other lists", stacklevel=2,
            )
        terms: dict[str, dict[str, float]] = {}
        vetoed: dict[str, list[str]] = {}
        for lang in sorted(rows):
            lang_toxic, lang_refs = _distinct_sentences([toxic[i] for i in rows[lang]], [refs[i] for i in rows[lang]])
            terms[lang] = _learn_scores(lang_toxic, lang_refs, cfg) if cfg.learn and lang_toxic else {}
            listed = words[lang]
            if cfg.learn and cfg.veto_wordlists and listed and lang_toxic:
                listed, vetoed[lang] = _veto(lang, listed, lang_toxic, lang_refs, cfg)
            terms[lang].update(dict.fromkeys(listed, WORDLIST_SCORE))
        missing_paths = [p for lang in sorted(rows) for p in missing.get(lang, [])]
        resolved = [str(_resolve(spec, base_dir)) for spec in cfg.wordlists]
        return cls(terms, missing_paths, {lang: v for lang, v in vetoed.items() if v}, resolved)

    def for_languages(self, langs: Iterable[str]) -> Lexicon:
        """This lexicon plus an entry for each language of ``langs`` it lacks and that one of its recorded
        ``wordlists`` exists for: that list's terms, unvetoed (no training pairs to judge them by).

        For held-out data in languages the training pairs did not hold; a language no recorded list
        exists for (or a lexicon saved before lists were recorded) stays without an entry.
        """
        new = sorted({str(lang) for lang in langs} - set(self.terms))
        templated = [p for p in self.wordlists if "{lang}" in p]
        plain = [p for p in self.wordlists if "{lang}" not in p and Path(p).is_file()]
        # Recorded as absolute paths: a lexicon moved to another machine (or a removed checkout) finds none.
        gone = [p for p in self.wordlists if not Path(p.split("{lang}")[0] + "x").parent.is_dir()]  # its folder
        if new and gone:
            warnings.warn(f"the lexicon's word lists are no longer where it was built ({', '.join(gone)}): "
                          f"language(s) {', '.join(new)} get no word-list terms from them", stacklevel=2)
        added: dict[str, dict[str, float]] = {}
        for lang in new:
            found = [p.replace("{lang}", lang) for p in templated if Path(p.replace("{lang}", lang)).is_file()]
            if found or plain:
                listed = (t for path in [*found, *plain] for t in read_wordlist(path))
                added[lang] = dict.fromkeys(listed, WORDLIST_SCORE)
        if not added:
            return self
        return Lexicon({**self.terms, **added}, self.missing_wordlists, self.vetoed, self.wordlists)

    @classmethod
    def from_terms(cls, terms: Mapping[str, Iterable[str]]) -> Lexicon:
        """A lexicon of given terms per language, each scored :data:`WORDLIST_SCORE`."""
        out: dict[str, dict[str, float]] = {}
        for lang, listed in terms.items():
            if isinstance(listed, str):
                raise TypeError(f"Lexicon.from_terms: terms[{lang!r}] must be an iterable of terms, not a str")
            out[lang] = {t: WORDLIST_SCORE for t in listed}
        return cls(out)

    # -- matching -----------------------------------------------------------------------------------

    def unknown_languages(self, langs: Iterable[str]) -> dict[str, int]:
        """{language: rows} of the entries of ``langs`` (one per row) that the lexicon has no entry for."""
        counts = Counter(str(lang) for lang in langs)
        return {lang: n for lang, n in sorted(counts.items()) if lang not in self.terms}

    def warn_unknown(self, langs: Iterable[str], what: str = "rows", stacklevel: int = 2) -> dict[str, int]:
        """Warn once, naming them with their row counts, when languages of ``langs`` (one per row of
        ``what``) have no entry: their texts are matched against no terms. Returns the counts; later
        lookups of those languages do not warn again."""
        unknown = self.unknown_languages(langs)
        if unknown:
            listed = ", ".join(f"{lang} ({n} rows)" for lang, n in unknown.items())
            warnings.warn(
                f"the lexicon has no terms for language(s) {listed} of the {what} (it has {self.languages}): "
                "their texts are matched against no terms (nothing found, nothing deleted)", stacklevel=stacklevel,
            )
            self._warned.update(unknown)
        return unknown

    def _terms_of(self, lang: str | None) -> Iterable[str]:
        """The terms matched for ``lang`` (``None``: every language; a language without an entry: none)."""
        if lang is None:
            return {t for d in self.terms.values() for t in d}
        if not isinstance(lang, str):
            raise TypeError(f"Lexicon: a language is a string code, got {type(lang).__name__}: {lang!r}")
        if lang not in self.terms:
            if lang not in self._warned:
                self._warned.add(lang)
                warnings.warn(
                    f"the lexicon has no terms for language {lang!r} (it has {self.languages}): its texts are "
                    "matched against no terms (nothing found, nothing deleted)", stacklevel=3,
                )
            return {}
        return self.terms[lang]

    def _matcher(self, lang: str | None) -> _Matcher | None:
        if lang in self._matchers:
            return self._matchers[lang]
        keys = self._terms_of(lang)
        variant_to_term: dict[str, str] = {}
        for key in keys:
            variant_to_term.setdefault(key, key)
            # Text is matched lower-cased; the casefold spelling catches "SCHEISSE" for "scheiße", and
            # "ß" for "ss" catches "Scheiße" for "scheisse" (lower-casing keeps ß, casefolding it would
            # change the text's length).
            folded = unicodedata.normalize("NFC", key.casefold())
            for variant in (folded, folded.replace("ss", "ß")):
                variant_to_term.setdefault(variant, key)
        matcher = None
        if variant_to_term:
            pattern = _EDGE + "(?:" + _trie_pattern(variant_to_term) + ")" + _EDGE
            matcher = _Matcher(regex.compile(pattern, regex.V1), variant_to_term)
        self._matchers[lang] = matcher
        return matcher

    def _spans(self, text: str, lang: str | None) -> tuple[str, list[tuple[int, int, str]]]:
        """(NFC text, [(start, end, term)] of non-overlapping hits, leftmost-longest)."""
        if not isinstance(text, str):
            raise TypeError(f"Lexicon: expected a string to match, got {type(text).__name__}: {text!r}")
        matcher = self._matcher(lang)
        nfc, view = _view(text)
        if matcher is None:
            return nfc, []
        return nfc, [(m.start(), m.end(), matcher.term(m.group())) for m in matcher.pattern.finditer(view)]

    def spans(self, text: str, lang: str | None = None) -> list[tuple[int, int, str]]:
        """(start, end, term) of each term occurrence, leftmost-longest and non-overlapping, as character
        positions in ``text``'s NFC form (the same positions as in ``text`` when it is NFC already)."""
        return self._spans(text, lang)[1]

    def find(self, text: str, lang: str | None = None) -> list[str]:
        """Distinct terms present in ``text``, in order of first occurrence (``lang=None``: all languages)."""
        return list(dict.fromkeys(term for _, _, term in self._spans(text, lang)[1]))

    def count(self, text: str, lang: str | None = None) -> int:
        """Number of term occurrences in ``text``."""
        return len(self._spans(text, lang)[1])

    def is_toxic(self, text: str, lang: str | None = None) -> bool:
        """Whether any term occurs in ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"Lexicon: expected a string to match, got {type(text).__name__}: {text!r}")
        matcher = self._matcher(lang)
        return matcher is not None and matcher.pattern.search(_view(text)[1]) is not None

    def remove(self, text: str, lang: str | None = None) -> str:
        """``text`` (NFC) with every term occurrence deleted: the *delete* reference system.

        Around each deletion the whitespace is tidied (one space between the neighbouring words,
        none before closing punctuation or at either end); the rest of the text is left as it was.
        """
        nfc, spans = self._spans(text, lang)
        if not spans:
            return nfc
        out = nfc[: spans[0][0]]
        for i, (_, end, _) in enumerate(spans):
            out = join_around_deletion(out, nfc[end : spans[i + 1][0] if i + 1 < len(spans) else len(nfc)])
        return out

    def word_terms(self, text: str, lang: str | None = None) -> list[str]:
        """:meth:`find`'s single-word terms: what a decoding ban or a loss term acts on (a phrase's words
        are mostly harmless alone: ``the f word``, ``de mierda``)."""
        return [term for term in self.find(text, lang) if " " not in term]

    def token_ids(
        self, tokenizer: Any, lang: str | None = None, max_pieces: int | None = None, phrases: bool = False
    ) -> list[int]:
        """Sorted ids of the sub-word pieces that start a term when ``tokenizer`` encodes it.

        Each term is encoded as-is, capitalised, and both with a leading space (word-start pieces
        differ for byte-level BPE). Leading pieces that are only a word-start marker (``▁``, ``Ġ``)
        are skipped; the first real piece counts unless it is a special token, pure punctuation or a
        byte-fallback piece (``<0xF0>``: shared by every emoji). Multi-word terms count only with
        ``phrases=True``: their first word is mostly harmless alone (``the f word``, ``de mierda``).
        ``max_pieces`` keeps only spellings of at most that many pieces: the first piece of a long
        or rare word is a short prefix (``▁f``, ``s``) that also starts many harmless words, so a big
        word list with ``max_pieces=None`` reaches a good share of the vocabulary.
        """
        if max_pieces is not None and max_pieces < 1:
            raise ValueError(f"token_ids: max_pieces must be >= 1 or None, got {max_pieces}")
        terms = self._terms_of(lang)
        variants: dict[str, None] = {}
        for term in sorted(terms):
            if " " in term and not phrases:
                continue
            for spelling in (term, term[:1].upper() + term[1:]):
                variants[spelling] = None
                variants[" " + spelling] = None
        if not variants:
            return []
        encoded = tokenizer(list(variants), add_special_tokens=False)["input_ids"]
        special = set(tokenizer.all_special_ids)
        piece_of: dict[int, str] = {}
        ids: set[int] = set()
        for seq in encoded:
            pieces = []
            for i in seq:
                if i not in piece_of:
                    piece_of[i] = str(tokenizer.convert_ids_to_tokens(int(i)))
                if i in special or piece_of[i].strip(_PIECE_MARKERS):
                    pieces.append(int(i))
            if not pieces or (max_pieces is not None and len(pieces) > max_pieces):
                continue
            first = pieces[0]
            text = piece_of[first].strip(_PIECE_MARKERS)
            if first in special or _ONLY_PUNCT.fullmatch(text) or BYTE_PIECE.fullmatch(text):
                continue
            ids.add(first)
        return sorted(ids)

    # -- persistence and views ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the lexicon as UTF-8 JSON (word-list scores as ``null``)."""
        data = {
            "format": _FORMAT,
            "version": _VERSION,
            "missing_wordlists": self.missing_wordlists,
            "vetoed": self.vetoed,
            "wordlists": self.wordlists,
            "terms": {
                lang: {t: (None if math.isinf(s) else s) for t, s in scored.items()}
                for lang, scored in self.terms.items()
            },
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Lexicon:
        """Read a lexicon written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: lexicon file not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: not a lexicon JSON file: {err}") from None
        except OSError as err:
            raise DataError(f"{path}: cannot read: {err.strerror or err}") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(f"{path}: not a lexicon file (key 'format' is not {_FORMAT!r})")
        if data.get("version") != _VERSION:
            raise DataError(f"{path}: unsupported lexicon version {data.get('version')!r}, expected {_VERSION}")
        terms, missing, vetoed = data.get("terms"), data.get("missing_wordlists", []), data.get("vetoed", {})
        wordlists = data.get("wordlists", [])  # absent from files written before it was recorded
        if not isinstance(terms, dict) or not all(isinstance(v, dict) for v in terms.values()):
            raise DataError(f"{path}: key 'terms' must map language -> {{term: score}}")
        if not isinstance(missing, list):
            raise DataError(f"{path}: key 'missing_wordlists' must be a list")
        if not isinstance(vetoed, dict) or not all(isinstance(v, list) for v in vetoed.values()):
            raise DataError(f"{path}: key 'vetoed' must map language -> [term]")
        if not isinstance(wordlists, list):
            raise DataError(f"{path}: key 'wordlists' must be a list")
        scored = {
            lang: {t: (WORDLIST_SCORE if s is None else s) for t, s in d.items()} for lang, d in terms.items()
        }
        try:
            return cls(scored, missing, vetoed, wordlists)
        except TypeError as err:
            raise DataError(f"{path}: {err}") from None

    @property
    def languages(self) -> list[str]:
        """Languages with an entry (possibly empty), sorted."""
        return sorted(self.terms)

    def __len__(self) -> int:
        return sum(len(d) for d in self.terms.values())

    def summary(self) -> dict[str, int]:
        """Number of terms per language."""
        return {lang: len(self.terms[lang]) for lang in self.languages}

    def __repr__(self) -> str:
        vetoed = sum(len(v) for v in self.vetoed.values())
        return f"Lexicon({self.summary()}, missing_wordlists={len(self.missing_wordlists)}, vetoed={vetoed})"

    def __getstate__(self) -> dict[str, Any]:
        # Compiled patterns are rebuilt lazily on the other side (Ray ships lexicons to workers).
        return {"terms": self.terms, "missing_wordlists": self.missing_wordlists, "vetoed": self.vetoed,
                "wordlists": self.wordlists}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.terms = state["terms"]
        self.missing_wordlists = state["missing_wordlists"]
        self.vetoed = state["vetoed"]
        self.wordlists = state.get("wordlists", [])
        self._matchers = {}
        self._warned = set()


def join_around_deletion(left: str, right: str) -> str:
    """``left + right`` where words were deleted between them, with the whitespace there tidied (the
    ``delete`` system's rule, also :func:`raydetox.decoding.kept_source_text`'s)."""
    lt, rt = left.rstrip(), right.lstrip()
    spaced = len(lt) < len(left) or len(rt) < len(right)
    # No space at the ends, where the term was glued to its neighbours (CJK, hyphens), or before ", . !".
    sep = " " if lt and rt and spaced and not _CLOSING.match(rt) else ""
    return lt + sep + rt


# -- learning and word lists --------------------------------------------------------------------------


def _check_config(cfg: LexiconConfig) -> None:
    if cfg.min_count < 1:
        raise ConfigError(f"lexicon.min_count must be >= 1, got {cfg.min_count}")
    if not cfg.smoothing > 0:
        raise ConfigError(f"lexicon.smoothing must be > 0 (it keeps log-odds finite), got {cfg.smoothing}")
    if cfg.max_terms_per_lang is not None and cfg.max_terms_per_lang < 0:
        raise ConfigError(f"lexicon.max_terms_per_lang must be >= 0 or null, got {cfg.max_terms_per_lang}")


def _pairs_columns(pairs: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """(toxic texts, references per pair, languages) with a clear error for any bad cell."""
    if not isinstance(pairs, pd.DataFrame):
        raise TypeError(f"Lexicon.learn: pairs must be a pandas DataFrame, got {type(pairs).__name__}")
    missing = [c for c in ("lang", "toxic") if c not in pairs.columns]
    if "refs" not in pairs.columns and "neutral" not in pairs.columns:
        missing.append("refs (or neutral)")
    if missing:
        raise ValueError(f"Lexicon.learn: pairs table lacks column(s) {missing}; has {list(pairs.columns)}")
    if pairs.empty:
        raise ValueError("Lexicon.learn: the pairs table is empty")
    ids = pairs["id"].tolist() if "id" in pairs.columns else list(pairs.index)
    toxic, refs, langs = [], [], []
    for row, (rid, lang, tox) in enumerate(zip(ids, pairs["lang"], pairs["toxic"])):
        where = f"Lexicon.learn: pairs row {row} (id {rid!r})"
        if not isinstance(lang, str) or not lang:
            raise ValueError(f"{where}: column 'lang' is not a language code: {lang!r}")
        if not isinstance(tox, str):
            raise ValueError(f"{where}: column 'toxic' is not a string: {tox!r}")
        own = pairs["refs"].iat[row] if "refs" in pairs.columns else None
        if own is None or (isinstance(own, float) and math.isnan(own)):
            own = []
        own = [own] if isinstance(own, str) else list(own)
        if not own and "neutral" in pairs.columns:
            own = [pairs["neutral"].iat[row]]
        bad = [r for r in own if not isinstance(r, str)]
        if bad or not own:
            raise ValueError(f"{where}: columns 'refs'/'neutral' hold no reference strings: {own!r}")
        toxic.append(tox)
        refs.append(own)
        langs.append(lang)
    return toxic, refs, langs


def _distinct_sentences(toxic: list[str], refs: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """One entry per distinct toxic sentence (:func:`~raydetox.data.pairs.text_key`), its references
    merged: a sentence given as one row per reference is one piece of evidence, not one per row."""
    merged: dict[str, tuple[str, dict[str, None]]] = {}
    for tox, own in zip(toxic, refs):
        _, seen = merged.setdefault(text_key(tox), (tox, {}))
        seen.update(dict.fromkeys(own))
    return [tox for tox, _ in merged.values()], [list(own) for _, own in merged.values()]


def _log_odds(c_tox: int, c_neu: int, n: int, s: float) -> float:
    return math.log((c_tox + s) / (n - c_tox + s)) - math.log((c_neu + s) / (n - c_neu + s))


def _learn_scores(toxic: list[str], refs: list[list[str]], cfg: LexiconConfig) -> dict[str, float]:
    """Log-odds of toxic-side tokens that the references remove, best first (module doc)."""
    in_toxic: Counter[str] = Counter()
    in_neutral: Counter[str] = Counter()
    removed: Counter[str] = Counter()
    for tox, own in zip(toxic, refs):
        t = set(tokenize(tox))
        r = set().union(*(tokenize(x) for x in own))
        in_toxic.update(t)
        in_neutral.update(r)
        gone = t - r
        cjk = {g for g in gone if _SCRIPT_RUNS.match(g).group(1)}
        removed.update(gone - cjk)
        if cjk:
            removed.update(_deleted_ngrams(tox, own, cjk))
    n, s = len(toxic), cfg.smoothing
    scores = {
        term: score
        for term, c in removed.items()
        if c >= cfg.min_count and (score := _log_odds(in_toxic[term], in_neutral[term], n, s)) >= cfg.min_log_odds
    }
    # A CJK character removed only as part of a kept bigram (心 of 恶心) adds no evidence of its own and
    # would flag every word that contains it (开心, 小心): keep it only when removed more often.
    for bigram in [t for t in scores if len(t) == 2 and _SCRIPT_RUNS.fullmatch(t).group(1)]:
        for char in bigram:
            if char in scores and removed[char] <= removed[bigram]:
                del scores[char]
    if not cfg.learn_cjk_single_chars:
        scores = {t: v for t, v in scores.items() if len(t) > 1 or not _SCRIPT_RUNS.fullmatch(t).group(1)}
    ranked = sorted(scores, key=lambda t: (-scores[t], -removed[t], t))[: cfg.max_terms_per_lang]
    return {t: scores[t] for t in ranked}


def _deleted_ngrams(toxic: str, refs: list[str], grams: set[str]) -> set[str]:
    """The ``grams`` with an occurrence in ``toxic`` whose every character no reference aligns to.

    Without word boundaries, a bigram straddling a kept and a deleted word (很恶 in 很恶心 →
    很让人不舒服) is absent from the reference yet not removed; a character alignment tells them apart.
    """
    view = _view(toxic)[1]
    kept = [False] * len(view)
    for ref in refs:
        matcher = difflib.SequenceMatcher(None, view, _view(ref)[1], autojunk=False)
        for block in matcher.get_matching_blocks():
            kept[block.a : block.a + block.size] = [True] * block.size
    out = set()
    for gram in grams:
        start = view.find(gram)
        while start >= 0 and gram not in out:
            if not any(kept[start : start + len(gram)]):
                out.add(gram)
            start = view.find(gram, start + 1)
    return out


def _veto(
    lang: str, listed: list[str], toxic: list[str], refs: list[list[str]], cfg: LexiconConfig
) -> tuple[list[str], list[str]]:
    """(kept, vetoed) word-list terms: vetoed when the references keep using them (module doc)."""
    probe = Lexicon({lang: dict.fromkeys(listed, WORDLIST_SCORE)})
    in_toxic: Counter[str] = Counter()
    in_neutral: Counter[str] = Counter()
    for tox, own in zip(toxic, refs):
        in_toxic.update(probe.find(tox, lang))
        in_neutral.update(set().union(*(probe.find(x, lang) for x in own)))
    vetoed = {
        term
        for term, c in in_neutral.items()
        if c >= cfg.min_count and _log_odds(in_toxic[term], c, len(toxic), cfg.smoothing) < cfg.min_log_odds
    }
    return [t for t in listed if t not in vetoed], [t for t in listed if t in vetoed]


def read_wordlist(path: str | os.PathLike[str]) -> list[str]:
    """Normalised terms of a word-list file (one a line; blank and punctuation-only lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: word list is not UTF-8 text: {err}") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read word list: {err.strerror or err}") from None
    terms = (normalize_term(line) for line in lines)
    return list(dict.fromkeys(t for t in terms if t and not _ONLY_PUNCT.fullmatch(t)))


def _resolve(spec: str, base_dir: str | os.PathLike[str] | None) -> Path:
    """A word-list path as read: relative ones from ``base_dir`` (default: the working directory)."""
    return (Path(base_dir) if base_dir is not None else Path.cwd()) / Path(spec).expanduser()


def read_wordlists(
    paths: Iterable[str], langs: Iterable[str], base_dir: str | os.PathLike[str] | None = None
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({lang: terms}, {lang: missing templated paths}) for ``paths`` (``{lang}`` substituted per language).

    ``und`` (:data:`~raydetox.data.langid.UNDETERMINED`) gets no templated list and is not missing one.
    A ``{lang}`` path that exists for none of ``langs`` and matches no file for any other language either
    is a wrong path, not languages without a list: a :class:`ConfigError` naming ``lexicon.wordlists``.
    """
    langs = list(langs)
    words: dict[str, dict[str, None]] = {lang: {} for lang in langs}
    missing: dict[str, list[str]] = {}
    for spec in paths:
        if "{lang}" in spec:
            template = _resolve(spec, base_dir)
            found = 0
            for lang in langs:
                if lang == UNDETERMINED:
                    continue  # rows the identifier could not place: no language, so no list of one
                path = Path(str(template).replace("{lang}", lang))
                if path.is_file():
                    words[lang].update(dict.fromkeys(read_wordlist(path)))
                    found += 1
                else:
                    missing.setdefault(lang, []).append(str(path))
            pattern = "*".join(glob.escape(part) for part in str(template).split("{lang}"))
            if langs and not found and not any(Path(p).is_file() for p in glob.iglob(pattern)):
                raise ConfigError(
                    f"lexicon.wordlists: {spec!r} matches no file for any language (no "
                    f"{os.path.normpath(template)}; relative paths are read from {_resolve('', base_dir)}): "
                    "check the path"
                )
        else:
            path = _resolve(spec, base_dir)
            if not path.is_file():
                raise DataError(f"lexicon.wordlists: word list {spec!r} not found (at {path})")
            terms = dict.fromkeys(read_wordlist(path))
            for lang in langs:
                words[lang].update(terms)
    return {lang: list(d) for lang, d in words.items()}, missing
