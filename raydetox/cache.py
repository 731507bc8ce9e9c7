"""Directories keyed by the content they were built from (the embedded base, the toxicity judge).

A build writes into a temporary directory beside its final place and renames it there only when it
completes, so a crash never leaves a half-built entry and a concurrent builder of the same key wins
harmlessly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def content_hash(obj: Any) -> str:
    """SHA-256 hex digest of ``obj`` as canonical JSON (sorted keys): the same content, the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@contextmanager
def building(final: Path, marker: str) -> Iterator[Path]:
    """Yield an empty temporary directory that becomes ``final`` when the block ends without error.

    ``marker`` is the file a complete entry holds: when the rename fails because another process
    finished ``final`` first, its entry is kept and this build is discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not (final / marker).is_file():  # not a concurrent builder winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
