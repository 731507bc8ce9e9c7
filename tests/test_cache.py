"""The content-keyed cache: a build is renamed into place whole, and builders of one key take turns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raydetox.cache import building

# A second process asks for the same entry; it prints what `building` gave it.
_OTHER_BUILDER = """
import sys
from pathlib import Path
from raydetox.cache import building
with building(Path(sys.argv[1]), "done") as tmp:
    print("built" if tmp is not None else "reused")
    if tmp is not None:
        (tmp / "done").write_text("second")
"""


def test_a_second_builder_waits_and_reuses_the_entry(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with building(final, "done") as tmp:
        assert tmp is not None
        # Started while this process holds the entry's lock: it can only go on once the entry exists.
        other = subprocess.Popen([sys.executable, "-c", _OTHER_BUILDER, str(final)], stdout=subprocess.PIPE, text=True)
        (tmp / "done").write_text("first")
    out, _ = other.communicate(timeout=120)
    assert other.returncode == 0 and out.strip() == "reused"
    assert (final / "done").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_a_failed_build_leaves_nothing_and_the_next_one_builds(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with pytest.raises(RuntimeError, match="interrupted"):
        with building(final, "done") as tmp:
            assert tmp is not None
            (tmp / "half").write_text("x")
            raise RuntimeError("interrupted")
    assert not final.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
    with building(final, "done") as tmp:
        assert tmp is not None
        (tmp / "done").write_text("ok")
    with building(final, "done") as tmp:
        assert tmp is None  # complete: nothing to build
