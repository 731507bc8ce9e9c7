"""Data layer: readers → canonical pairs table → cleaning → lexicon → difficulty, splits and stages.

The canonical pairs table is a pandas DataFrame with columns ``id`` (str, unique), ``lang`` (str),
``toxic`` (str), ``neutral`` (str, the first reference) and ``refs`` (list[str], every reference),
plus optional ``toxicity_score`` (float) and ``split`` (str: train/validation/test).
"""

PAIR_COLUMNS: tuple[str, ...] = ("id", "lang", "toxic", "neutral", "refs")
