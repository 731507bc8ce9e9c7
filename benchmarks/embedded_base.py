"""Build the embedded base with a config's settings and print its build report (copy + zero-shot edit).

Usage (from the repository root)::

    .venv/bin/python benchmarks/embedded_base.py [OVERRIDES_JSON] [--config experiments/quickstart.yaml]

``OVERRIDES_JSON`` are ``--set``-style overrides, e.g. ``'{"model.embedded.max_steps": 300}'`` or
``'{"model.embedded.mix": {"copy": 1.0, "denoise": 0.0, "deletion": 0.0, "pairs": 0.0}}'`` for the
copy-only base: the held-out pairs depend only on the data and the seed, so two mixes are compared on
the same pairs. Data are prepared once under ``--work`` (default ``/tmp/raydetox-embedded-bench``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from raydetox.config import load_config
from raydetox.data.prepare import load_prepared, prepare
from raydetox.embedded_base import build_embedded_base
from raydetox.pretraining_corpus import BUILD_REPORT, base_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="?", default="{}")
    parser.add_argument("--config", default="experiments/quickstart.yaml")
    parser.add_argument("--data", default="../shared/data/multilingual_paradetox")
    parser.add_argument("--work", default="/tmp/raydetox-embedded-bench")
    args = parser.parse_args()
    cfg = load_config(args.config, json.loads(args.overrides))
    prep_dir = Path(args.work) / "prepared"
    prepared = load_prepared(prep_dir) if (prep_dir / "manifest.json").is_file() else prepare(cfg, prep_dir, args.data)
    corpus = base_corpus(prepared, cfg.model.embedded.sources)
    t0 = time.time()
    path = build_embedded_base(corpus, cfg.model.embedded, cache_dir=Path(args.work) / "cache", progress=True)
    print(f"build wall {time.time() - t0:.1f} s → {path}")
    print(json.dumps(json.loads((path / BUILD_REPORT).read_text()), indent=1))


if __name__ == "__main__":
    main()
