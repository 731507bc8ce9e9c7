"""Training targets: the deletion-only target of ``training.target: kept_source_words``."""

from __future__ import annotations

import pandas as pd
import pytest

from raydetox.targets import word_tokens, kept_source_words, training_targets


def test_kept_source_words_keeps_what_the_reference_keeps_in_the_source_spelling() -> None:
    assert kept_source_words("You made a mistake you ass.", "You made a mistake.") == "You made a mistake."
    assert kept_source_words("In addition, I see no sock puppet, jackass.",
                             "In addition, I see no sock puppet.") == "In addition, I see no sock puppet."
    # case from the source, the reference's paraphrase dropped (it cannot be written by deleting)
    assert kept_source_words("YOU are a fucking idiot, man.", "you are wrong, man.") == "YOU are, man."
    # unspaced script: character tokens, no spaces put in
    assert kept_source_words("凭那句你您不好看，女拳就已经炸了", "凭那句你您不好看，女权就已经生气了") == "凭那句你您不好看，女就已经了"
    assert kept_source_words("same text", "same text") == "same text"
    assert kept_source_words("nothing in common", "entirely different") == ""


def test_kept_source_words_on_the_shared_pairs_is_a_subsequence_of_the_source(mpd_pairs: pd.DataFrame) -> None:
    kept = training_targets(list(mpd_pairs["toxic"]), list(mpd_pairs["neutral"]), "kept_source_words")
    assert len(kept) == len(mpd_pairs) == 3600
    for source, target in zip(mpd_pairs["toxic"], kept):
        rest = iter([m.group() for m in word_tokens(source)])
        assert all(token in rest for token in (m.group() for m in word_tokens(target))), (source, target)
    changed = sum(k != s for k, s in zip(kept, mpd_pairs["toxic"]))
    assert changed > 0.9 * len(kept), "references drop or change words in nearly every pair"
    assert training_targets(["a b"], ["a"], "neutral") == ["a"]
    with pytest.raises(ValueError, match="training.target"):
        training_targets(["a"], ["a"], "paraphrase")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 references"):
        training_targets(["a"], ["a", "b"], "neutral")
