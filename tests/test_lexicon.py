"""Toxic lexicon on the real multilingual ParaDetox pairs and the ldnoobw word lists."""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path

import pandas as pd
import pytest

from raydetox.config import ConfigError, LexiconConfig
from raydetox.data.io import DataError
from raydetox.data.lexicon import WORDLIST_SCORE, Lexicon, read_wordlist, tokenize

LANGS = ("am", "ar", "de", "en", "es", "hi", "ru", "uk", "zh")
LDNOOBW = "lexicons/ldnoobw_v2/{lang}.txt"


def _pairs(mpd_dir: Path, langs: tuple[str, ...] = LANGS) -> pd.DataFrame:
    frames = []
    for lang in langs:
        raw = pd.read_parquet(mpd_dir / f"{lang}-00000-of-00001.parquet")
        frames.append(
            pd.DataFrame(
                {
                    "id": [f"{lang}-{i}" for i in range(len(raw))],
                    "lang": lang,
                    "toxic": raw["toxic_sentence"].astype(object),
                    "neutral": raw["neutral_sentence"].astype(object),
                    "refs": [[r] for r in raw["neutral_sentence"]],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def pairs(mpd_dir: Path) -> pd.DataFrame:
    return _pairs(mpd_dir)


@pytest.fixture(scope="module")
def learned(pairs: pd.DataFrame) -> Lexicon:
    return Lexicon.learn(pairs, LexiconConfig())


@pytest.fixture(scope="module")
def with_lists(pairs: pd.DataFrame, shared_data: Path) -> Lexicon:
    return Lexicon.learn(pairs, LexiconConfig(wordlists=[LDNOOBW]), base_dir=shared_data)


# ---------------------------------------------------------------------------------------------- learning


def test_learned_english_terms_are_toxic_words_not_stopwords(learned: Lexicon) -> None:
    en = learned.terms["en"]
    print("en top 20:", list(en)[:20])
    assert {"fuck", "fucking", "shit", "stupid", "ass", "idiot", "bitch"} <= set(en)
    assert not {"the", "a", "you", "and", "is", "to", "t", "s", "don"} & set(en)
    scores = list(en.values())
    assert scores == sorted(scores, reverse=True)
    assert all(math.isfinite(s) and s >= LexiconConfig().min_log_odds for s in scores)
    assert len(en) <= LexiconConfig().max_terms_per_lang


def test_learned_terms_per_language(learned: Lexicon) -> None:
    assert learned.languages == list(LANGS)
    assert learned.missing_wordlists == [] and learned.vetoed == {}
    expected = {
        "ru": {"сука", "дебил", "тварь"},
        "uk": {"хуй", "блять"},
        "hi": {"हरामी", "भड़वा", "गांड"},  # combining marks stay inside the words
        "ar": {"غبي", "لعنة"},
        "am": {"ደደብ"},
        "de": {"arsch", "dumme"},
        "es": {"mierda", "puta"},
        "zh": {"恶心", "舔狗"},
    }
    for lang, words in expected.items():
        assert words <= set(learned.terms[lang]), (lang, list(learned.terms[lang])[:30])
    # No single Han character by default: 狗 would flag 狗肉 ("dog meat"), 母 父母 ("parents").
    assert not [t for t in learned.terms["zh"] if len(t) == 1]
    assert sum(learned.summary().values()) == len(learned)


def test_single_cjk_characters_on_request(pairs: pd.DataFrame) -> None:
    zh = pairs[pairs["lang"] == "zh"]
    chars = Lexicon.learn(zh, LexiconConfig(learn_cjk_single_chars=True)).terms["zh"]
    assert "默" in chars  # the euphemism the references replace with 黑人
    # 心 is only ever removed as part of 恶心: a lone character would flag 开心 ("happy").
    assert "恶心" in chars and "心" not in chars


def test_a_sentence_counts_once_whatever_its_rows(pairs: pd.DataFrame) -> None:
    """A toxic sentence listed once per reference (one row each) is one piece of evidence: a word only
    it removes stays under ``min_count`` (2), while two distinct sentences reach it."""
    en = pairs[pairs["lang"] == "en"]
    word = "blorfwit"
    assert word not in " ".join(en["toxic"]).lower()

    def row(i: int, toxic: str, ref: str) -> dict[str, object]:
        return {"id": f"extra-{i}", "lang": "en", "toxic": toxic, "neutral": ref, "refs": [ref]}

    one = [row(i, f"you {word} , leave", ref) for i, ref in enumerate(("you, leave", "please leave", "leave now"))]
    assert word not in Lexicon.learn(pd.concat([en, pd.DataFrame(one)]), LexiconConfig()).terms["en"]
    # Re-cased and re-spaced, it is still the same sentence (text_key).
    same = one + [row(3, f"You  {word.upper()} , leave", "go away")]
    assert word not in Lexicon.learn(pd.concat([en, pd.DataFrame(same)]), LexiconConfig()).terms["en"]
    two = one + [row(4, f"what a {word} he is", "what a man he is")]
    assert word in Lexicon.learn(pd.concat([en, pd.DataFrame(two)]), LexiconConfig()).terms["en"]


def test_learned_lexicon_generalises_to_held_out_pairs(mpd_dir: Path) -> None:
    """Learned on 300 pairs per language, it flags held-out toxic sides far more than their rewrites."""
    data = _pairs(mpd_dir)
    first = data.groupby("lang").cumcount() < 300
    lex = Lexicon.learn(data[first], LexiconConfig())
    for lang, held in data[~first].groupby("lang"):
        toxic = sum(lex.is_toxic(t, lang) for t in held["toxic"]) / len(held)
        neutral = sum(lex.is_toxic(t, lang) for t in held["neutral"]) / len(held)
        print(f"{lang}: held-out toxic flagged {toxic:.2f}, neutral flagged {neutral:.2f}")
        assert toxic >= 0.3 and neutral <= 0.2 and toxic >= 3 * neutral, lang


def test_config_limits(pairs: pd.DataFrame, learned: Lexicon) -> None:
    en = pairs[pairs["lang"] == "en"]
    top = Lexicon.learn(en, LexiconConfig(max_terms_per_lang=5))
    assert list(top.terms["en"]) == list(learned.terms["en"])[:5]
    strict = Lexicon.learn(en, LexiconConfig(min_count=10, min_log_odds=2.0))
    assert set(strict.terms["en"]) < set(learned.terms["en"]) and "fuck" in strict.terms["en"]
    assert all(s >= 2.0 for s in strict.terms["en"].values())


def test_tokenize_scripts() -> None:
    assert tokenize("Don 't you DARE, i said") == ["don", "you", "dare", "said"]
    assert tokenize("भड़वा कलूटे") == ["भड़वा", "कलूटे"]
    assert tokenize("不得house") == ["不", "得", "不得", "house"]


# ------------------------------------------------------------------------------------------- word lists


def test_wordlists_templated_missing_and_vetoed(pairs: pd.DataFrame, shared_data: Path, with_lists: Lexicon) -> None:
    en_list = read_wordlist(shared_data / "lexicons/ldnoobw_v2/en.txt")
    assert len(en_list) > 12000 and "[" not in en_list  # punctuation-only lines skipped
    assert with_lists.missing_wordlists == []
    assert with_lists.terms["en"]["fuck"] == WORDLIST_SCORE
    assert "motherfucker" in with_lists.terms["en"]  # listed, never seen in the pairs: kept
    # Generic entries the references keep using are vetoed, and listed.
    assert {"i", "us"} <= set(with_lists.vetoed["en"]) and "i" not in with_lists.terms["en"]
    assert "es" in with_lists.vetoed["es"] and "الله" in with_lists.vetoed["ar"]
    assert "性" in with_lists.vetoed["zh"]
    for lang in ("en", "es", "ar", "zh"):
        neutral = pairs.loc[pairs["lang"] == lang, "neutral"]
        rate = sum(with_lists.is_toxic(t, lang) for t in neutral) / len(neutral)
        assert rate < 0.15, (lang, rate)

    # learn=False: exactly the word list, nothing vetoed; a language without a file is recorded.
    odd = pairs[pairs["lang"] == "en"].head(20).assign(lang="xx")
    with pytest.warns(UserWarning, match=r"no word list for language\(s\) xx \(.*ldnoobw_v2/xx\.txt\)"):
        listed = Lexicon.learn(
            pd.concat([pairs[pairs["lang"] == "en"], odd]), LexiconConfig(learn=False, wordlists=[LDNOOBW]), shared_data
        )
    assert set(listed.terms["en"]) == set(en_list) and listed.vetoed == {}
    assert listed.terms["xx"] == {}
    assert listed.missing_wordlists == [str(shared_data / "lexicons/ldnoobw_v2/xx.txt")]
    unvetoed = Lexicon.learn(
        pairs[pairs["lang"] == "en"], LexiconConfig(wordlists=[LDNOOBW], veto_wordlists=False), shared_data
    )
    assert "i" in unvetoed.terms["en"]


def test_plain_wordlist_applies_to_every_language_and_must_exist(pairs: pd.DataFrame, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("\ufeffTroll Face\n\n  dummkopf  \n[\n", encoding="utf-8")
    two = pairs[pairs["lang"].isin(["de", "en"])]
    lex = Lexicon.learn(two, LexiconConfig(learn=False, wordlists=["mine.txt"]), base_dir=tmp_path)
    assert lex.terms == {lang: {"troll face": WORDLIST_SCORE, "dummkopf": WORDLIST_SCORE} for lang in ("de", "en")}
    with pytest.raises(DataError, match="nope.txt"):
        Lexicon.learn(two, LexiconConfig(wordlists=["nope.txt"]), base_dir=tmp_path)
    (tmp_path / "latin1.txt").write_bytes("schei\xdfe\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt"):
        Lexicon.learn(two, LexiconConfig(wordlists=["latin1.txt"]), base_dir=tmp_path)


def test_templated_wordlist_that_matches_no_file_is_a_config_error(pairs: pd.DataFrame, tmp_path: Path) -> None:
    en = pairs[pairs["lang"] == "en"].head(50)
    # A wrong path (here: relative to the wrong folder) silently shrank the en lexicon to the learned terms.
    with pytest.raises(ConfigError, match=r"lexicon.wordlists: 'lexicons/ldnoobw_v2/\{lang\}.txt' matches no file"):
        Lexicon.learn(en, LexiconConfig(wordlists=[LDNOOBW]), base_dir=tmp_path)
    # Files for other languages only: the path is right, en has no list; warned, not an error.
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "de.txt").write_text("dummkopf\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"no word list for language\(s\) en \(.*lists/en\.txt\)"):
        lex = Lexicon.learn(en, LexiconConfig(wordlists=["lists/{lang}.txt"]), base_dir=tmp_path)
    assert lex.missing_wordlists == [str(tmp_path / "lists" / "en.txt")]


# ------------------------------------------------------------------------------- languages it lacks


def test_evaluation_only_languages_get_their_word_lists(pairs: pd.DataFrame, shared_data: Path) -> None:
    en = pairs[pairs["lang"] == "en"]
    cfg = LexiconConfig(wordlists=[LDNOOBW])
    lex = Lexicon.learn(en, cfg, shared_data, languages=["en", "de", "fr"])
    assert lex.languages == ["de", "en", "fr"]
    for lang in ("de", "fr"):  # no pairs: the list as it is, nothing learned or vetoed
        assert set(lex.terms[lang]) == set(read_wordlist(shared_data / f"lexicons/ldnoobw_v2/{lang}.txt"))
        assert lang not in lex.vetoed
    assert lex.terms["en"] == Lexicon.learn(en, cfg, shared_data).terms["en"]  # learned from the pairs only
    assert lex.find("tu es un enculé", "fr") == ["enculé"]


def test_unknown_language_has_no_terms_and_one_warning_with_row_counts(with_lists: Lexicon) -> None:
    lex = Lexicon(with_lists.terms)  # its own warned-about set
    langs = ["fr", "en", "fr", "it", "fr"]
    with pytest.warns(UserWarning) as caught:
        assert lex.warn_unknown(langs, "pairs") == {"fr": 3, "it": 1}
        # The delete system (`raydetox baselines`) on held-out French: deletes nothing, says nothing more.
        texts = ["tu es un enculé", "what the fuck", "ferme ta gueule, enculé", "che cazzo", "merde"]
        assert [lex.remove(t, lang) for t, lang in zip(texts, langs)] == [
            "tu es un enculé", "what the", "ferme ta gueule, enculé", "che cazzo", "merde"
        ]
        assert lex.token_ids(None, "fr") == []  # no term, no tokenizer call
    assert [str(w.message) for w in caught] == [
        f"the lexicon has no terms for language(s) fr (3 rows), it (1 rows) of the pairs (it has {list(LANGS)}): "
        "their texts are matched against no terms (nothing found, nothing deleted)"
    ]
    assert lex.warn_unknown(["en", "de"]) == {}


def test_for_languages_loads_the_recorded_word_lists(with_lists: Lexicon, shared_data: Path, tmp_path: Path) -> None:
    assert with_lists.wordlists == [str(shared_data / LDNOOBW)]  # absolute: usable from any folder
    with_lists.save(tmp_path / "lexicon.json")
    loaded = Lexicon.load(tmp_path / "lexicon.json")
    assert loaded.wordlists == with_lists.wordlists
    wider = loaded.for_languages(["fr", "en", "fr", "qq"])  # qq: no list exists for it
    assert wider.languages == sorted([*LANGS, "fr"]) and "fr" not in loaded.terms
    assert set(wider.terms["fr"]) == set(read_wordlist(shared_data / "lexicons/ldnoobw_v2/fr.txt"))
    assert wider.terms["en"] == loaded.terms["en"] and wider.vetoed == loaded.vetoed
    assert wider.remove("tu es un enculé", "fr") == "tu es un"
    # A lexicon file that predates the recorded lists loads, and has nothing to add.
    data = json.loads((tmp_path / "lexicon.json").read_text(encoding="utf-8"))
    del data["wordlists"]
    (tmp_path / "old.json").write_text(json.dumps(data), encoding="utf-8")
    old = Lexicon.load(tmp_path / "old.json")
    assert old.wordlists == [] and old.for_languages(["fr"]) is old
    # Lists recorded where they no longer are (a removed checkout): said, not silently missing.
    data["wordlists"] = [str(tmp_path / "gone" / "lists" / "{lang}.txt")]
    (tmp_path / "moved.json").write_text(json.dumps(data), encoding="utf-8")
    moved = Lexicon.load(tmp_path / "moved.json")
    with pytest.warns(UserWarning, match=r"word lists are no longer where it was built .*gone.*: language\(s\) fr get"):
        assert moved.for_languages(["fr", "en"]) is moved


# --------------------------------------------------------------------------------------------- matching


def test_find_in_cyrillic_devanagari_arabic_amharic(pairs: pd.DataFrame, with_lists: Lexicon) -> None:
    toxic = pairs.set_index("id")["toxic"]
    ru = toxic["ru-7"]  # "мразота,больше ни хуя делать ..."
    assert {"мразота", "ни хуя"} <= set(with_lists.find(ru, "ru"))  # a listed phrase
    assert "хуй" not in with_lists.find(ru, "ru")  # the phrase wins over its part
    assert with_lists.find(toxic["uk-2"], "uk") == ["мудак"]
    hi = toxic["hi-206"]  # "... भेनचोद मूर्ख लोग ..."
    assert {"भेनचोद", "मूर्ख"} <= set(with_lists.find(hi, "hi"))
    assert "भड़वा" in with_lists.find(toxic["hi-2"], "hi")
    assert "غبي" in with_lists.find(toxic["ar-0"], "ar")
    assert "يلعن" in with_lists.find(toxic["ar-33"], "ar")
    assert "ደደብ" in with_lists.find(toxic["am-5"], "am")
    # Combining marks are word characters: गा is not inside गांड; ውሻ not inside የውሻ; غبي not in الغبي.
    lex = Lexicon.from_terms({"hi": ["गा"], "am": ["ውሻ"], "ar": ["غبي"]})
    assert lex.find("गांड", "hi") == [] and lex.find("वो गा रहा है", "hi") == ["गा"]
    assert lex.find("የውሻ ልጅ", "am") == [] and lex.find("አንተ ውሻ።", "am") == ["ውሻ"]
    assert lex.find("الغبي", "ar") == [] and lex.find("أنت غبي!", "ar") == ["غبي"]


def test_word_boundaries_case_phrases_and_counts() -> None:
    lex = Lexicon.from_terms({"en": ["ass", "fuck", "fuck off", "Red  Light"], "de": ["scheiße"], "uk": ["п'яний"]})
    assert lex.find("a first-class assessment of the bass", "en") == []
    assert lex.find("Kiss my ASS!", "en") == ["ass"]
    assert lex.find("ass-kisser", "en") == ["ass"]  # hyphen is an edge
    assert lex.find("oh FUCK off,\tfuck", "en") == ["fuck off", "fuck"]
    assert lex.count("oh FUCK off,\tfuck", "en") == 2
    assert lex.find("the red\n light district", "en") == ["red light"]
    assert lex.find("SCHEISSE und Scheiße", "de") == ["scheiße"] and lex.count("SCHEISSE und Scheiße", "de") == 2
    # The other way round: a term spelt with "ss" finds the text's "ß"; Turkish İ is a capital i.
    listed = Lexicon.from_terms({"de": ["scheisse"], "tr": ["it", "siktir"]})
    assert listed.find("Scheiße und SCHEISSE", "de") == ["scheisse"] and listed.count("Scheiße, scheisse", "de") == 2
    assert listed.remove("So eine Scheiße!", "de") == "So eine!"
    assert listed.find("SİKTİR git, İT", "tr") == ["siktir", "it"]
    assert listed.remove("SİKTİR git", "tr") == "git"
    assert lex.find("він п’яний", "uk") == ["п'яний"]  # typographic apostrophe
    assert lex.find("fuck", None) == ["fuck"] and lex.find("scheiße", "en") == []
    assert lex.is_toxic("what the fuck", "en") and not lex.is_toxic("what the duck", "en")
    # A language without an entry has no terms (held-out data may hold one), said once, not per text.
    with pytest.warns(UserWarning, match=r"no terms for language 'fr'") as caught:
        assert lex.find("merde fuck", "fr") == [] and lex.remove("merde fuck", "fr") == "merde fuck"
        assert not lex.is_toxic("fuck", "fr") and lex.count("fuck", "fr") == 0 and lex.spans("fuck", "fr") == []
    assert len(caught) == 1
    assert "fr" not in lex.terms  # looking it up adds no entry
    with pytest.raises(TypeError, match="language"):
        lex.find("merde", 3)  # type: ignore[arg-type]  # a programming error still fails
    with pytest.raises(TypeError):
        lex.find(None, "en")  # type: ignore[arg-type]


def test_chinese_substring(learned: Lexicon) -> None:
    lex = Lexicon.from_terms({"zh": ["傻逼", "house", "ai chai"]})
    assert lex.find("你这个傻逼东西", "zh") == ["傻逼"]
    assert lex.count("傻逼傻逼", "zh") == 2
    assert lex.find("不得house了", "zh") == ["house"]  # CJK neighbours are no word edge
    assert lex.find("lighthouse", "zh") == [] and lex.find("kai chai", "zh") == []
    assert learned.find("我觉得同性恋很恶心，但支持吃狗肉。", "zh") == ["恶心"]  # 狗肉: dog meat
    assert learned.find("我觉得同性恋很让人不舒服。", "zh") == []  # the reference of that row, shortened
    # 很恶 straddles a kept and a deleted word: the character alignment keeps it out of the lexicon.
    assert "很恶" not in learned.terms["zh"]


def test_remove_is_the_delete_system(pairs: pd.DataFrame, learned: Lexicon) -> None:
    lex = Lexicon.from_terms({"en": ["fucking", "idiot", "fuck"], "zh": ["傻逼"]})
    assert lex.remove("You are a  fucking idiot, man.", "en") == "You are a, man."
    assert lex.remove("Fucking idiot!  Go", "en") == "!  Go"  # spacing away from a deletion is kept
    assert lex.remove("what the fuck  ", "en") == "what the"
    assert lex.remove("a fucking  man", "en") == "a man"
    assert lex.remove("fine text  stays", "en") == "fine text  stays"  # untouched without a hit
    assert lex.remove("你这个傻逼东西", "zh") == "你这个东西"  # no space put into CJK text
    # spans: where remove() cuts, as positions in the (NFC) text
    assert lex.spans("You are a  fucking idiot, man.", "en") == [(11, 18, "fucking"), (19, 24, "idiot")]
    assert lex.spans("fine text", "en") == [] and lex.spans("你这个傻逼东西", "zh") == [(3, 5, "傻逼")]
    toxic = pairs.set_index("id")["toxic"]
    assert toxic["en-1"].startswith("My page should be protected first so that worthless scum like you")
    assert learned.remove(toxic["en-1"], "en") == (
        "My page should be protected first so that like you can't keep vandalizing it."
    )
    en = list(toxic[toxic.index.str.startswith("en-")])
    deleted = [learned.remove(t, "en") for t in en]
    assert sum(d != t for d, t in zip(deleted, en)) > 300
    assert not any(learned.is_toxic(d, "en") for d in deleted)


def test_find_throughput_all_languages(pairs: pd.DataFrame, with_lists: Lexicon) -> None:
    """3,600 sentences, each with its own language (the metrics' case), then with all languages at once."""
    texts, langs = list(pairs["toxic"]), list(pairs["lang"])
    assert len(texts) == 3600
    for lang in LANGS:
        with_lists.find("", lang)  # compile outside the timing
    start = time.perf_counter()
    hits = sum(bool(with_lists.find(t, lang)) for t, lang in zip(texts, langs))
    per_lang = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    with_lists.find("")
    compiled = time.perf_counter()
    hits_any = sum(bool(with_lists.find(t)) for t in texts)
    any_lang = len(texts) / (time.perf_counter() - compiled)
    print(
        f"{len(with_lists)} terms: find {per_lang:.0f} sentences/s with lang, {any_lang:.0f}/s with "
        f"lang=None (compile {compiled - start:.2f}s); {hits} / {hits_any} sentences hit"
    )
    assert 0.7 * len(texts) < hits <= hits_any


# ---------------------------------------------------------------------------------------- persistence


def test_save_load_round_trip(with_lists: Lexicon, tmp_path: Path) -> None:
    path = tmp_path / "sub" / "lexicon.json"
    with_lists.save(path)
    text = path.read_text(encoding="utf-8")
    assert "сука" in text  # ensure_ascii=False

    def no_constants(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(text, parse_constant=no_constants)
    back = Lexicon.load(path)
    assert back == with_lists and back.vetoed == with_lists.vetoed
    assert back.terms["en"]["fuck"] == math.inf
    assert back.find("what the fuck", "en") == with_lists.find("what the fuck", "en") == ["fuck"]
    shipped = pickle.loads(pickle.dumps(with_lists))  # Ray ships lexicons to workers
    assert shipped == with_lists and shipped.find("сука", "ru") == ["сука"]

    (tmp_path / "bad.json").write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        Lexicon.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="absent.json"):
        Lexicon.load(tmp_path / "absent.json")


def test_bad_input_is_named(pairs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="toxic"):
        Lexicon.learn(pairs.drop(columns=["toxic"]), LexiconConfig())
    broken = pairs.head(5).copy()
    broken.loc[3, "toxic"] = None
    with pytest.raises(ValueError, match="am-3"):
        Lexicon.learn(broken, LexiconConfig())
    with pytest.raises(ValueError, match="smoothing"):
        Lexicon.learn(pairs.head(5), LexiconConfig(smoothing=0.0))
    with pytest.raises(TypeError, match="en"):
        Lexicon.from_terms({"en": "fuck"})
    # Without a refs column the neutral side is the reference.
    no_refs = Lexicon.learn(pairs[pairs["lang"] == "en"].drop(columns=["refs"]), LexiconConfig())
    assert no_refs.terms["en"] == Lexicon.learn(pairs[pairs["lang"] == "en"], LexiconConfig()).terms["en"]


# ---------------------------------------------------------------------------------------- token ids


@pytest.fixture(scope="module")
def sp_tokenizer(pairs: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """A tiny SentencePiece (T5 ids: pad 0, eos 1, unk 2) trained on real en+ru sentences."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    sub = pairs[pairs["lang"].isin(["en", "ru"])]
    texts = list(sub["toxic"]) + list(sub["neutral"])
    out = tmp_path_factory.mktemp("spm")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(out / "spiece"),
        vocab_size=700,
        model_type="unigram",
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    tok = T5Tokenizer.from_pretrained(str(out), extra_ids=0)
    assert len(tok) == 700  # not the silent 4-token vocabulary
    return tok


def test_token_ids_sentencepiece(sp_tokenizer, learned: Lexicon) -> None:
    tok = sp_tokenizer
    ids = learned.token_ids(tok, "en")
    assert ids == sorted(set(ids)) and ids
    assert not set(ids) & set(tok.all_special_ids)
    pieces = tok.convert_ids_to_tokens(ids)
    assert "▁" not in pieces and "," not in pieces and not any(p.startswith("<0x") for p in pieces)
    for word in ("fuck", "stupid", "idiot", "Shit", " bitch"):
        encoded = [i for i in tok(word, add_special_tokens=False)["input_ids"] if tok.convert_ids_to_tokens(i) != "▁"]
        assert encoded[0] in ids, (word, tok.convert_ids_to_tokens(encoded))
    ru_ids = learned.token_ids(tok, "ru")
    first = [i for i in tok("сука", add_special_tokens=False)["input_ids"] if tok.convert_ids_to_tokens(i) != "▁"][0]
    assert first in ru_ids
    assert set(ids) | set(ru_ids) <= set(learned.token_ids(tok))
    short = learned.token_ids(tok, "en", max_pieces=1)
    assert set(short) < set(ids) and tok("fuck", add_special_tokens=False)["input_ids"][0] in short
    assert Lexicon.from_terms({"en": ["@@@", "🖕"]}).token_ids(tok, "en") == []  # punctuation / bytes only
    phrase = Lexicon.from_terms({"en": ["the f word"]})
    assert phrase.token_ids(tok, "en") == []  # "▁the" alone is no toxic token
    with_phrase = phrase.token_ids(tok, "en", phrases=True)
    assert tok.convert_tokens_to_ids("▁the") in with_phrase
    assert {p.lower() for p in tok.convert_ids_to_tokens(with_phrase)} == {"▁the"}  # and "▁The"


def test_token_ids_byte_level_bpe(pairs: pd.DataFrame, learned: Lexicon) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    en = pairs[pairs["lang"] == "en"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(list(en["toxic"]) + list(en["neutral"]), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>")
    ids = learned.token_ids(tok, "en")
    # Mid-sentence words start with a "Ġ" piece, sentence-initial ones without: both are covered.
    for text in (" fucking", "fucking", " stupid"):
        assert tok(text, add_special_tokens=False)["input_ids"][0] in ids, text
    assert tok.convert_tokens_to_ids("Ġ") not in ids
