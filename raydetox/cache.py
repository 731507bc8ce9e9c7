"""Directories keyed by the content they were built from (the embedded base, the toxicity judge).

A build writes into a temporary directory beside its final place and renames it there only when it
completes, so a crash never leaves a half-built entry. Builders of the same key take turns (a file
lock beside the entry): the second finds the first's entry and uses it instead of building it again.
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

from filelock import FileLock


def content_hash(obj: Any) -> str:
    """SHA-256 hex digest of ``obj`` as canonical JSON (sorted keys): the same content, the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


@contextmanager
def building(final: Path, marker: str) -> Iterator[Path | None]:
    """Yield an empty temporary directory that becomes ``final`` when the block ends without error, or
    ``None`` when ``final`` is already complete (it holds ``marker``).

    Held under a lock on ``final``: a process that waited while another built the same entry gets
    ``None`` and reads that entry instead of building it a second time.
    """
    locks = final.parent / ".locks"  # hidden, like the temporary directories: the entries stay what a listing shows
    locks.mkdir(parents=True, exist_ok=True)
    with FileLock(locks / f"{final.name}.lock"):
        if (final / marker).is_file():
            yield None
            return
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
