"""The project's error types: one base class, one subclass per kind of input a user hands raydetox.

An error of these types is an input problem whose one-line message names the file, row, column or key:
the command line prints it and exits 2. Any other exception is a bug in raydetox (traceback, exit 1).
Third-party exceptions are converted to these only where a named one is raised by reading the input
(a reader, a loader), never by a blanket ``except Exception``.

:class:`~raydetox.config.ConfigError` (config files, ``--set`` and other options) and
:class:`~raydetox.losses.LossSetupError` (an extra loss term the run cannot build) live beside the code
that raises them; :class:`DataError` is here because the readers (:mod:`raydetox.data.io`, which
re-exports it) and the pairs table's checks (:mod:`raydetox.data.pairs`) both raise it. Every class is
also a ``ValueError``, as the project's input errors always were.
"""

from __future__ import annotations

from typing import Any


class RaydetoxError(Exception):
    """An input problem, described in one line that names where it is (file, row, column or key)."""


class DataError(RaydetoxError, ValueError):
    """Bad data source or content; the message names the file (and the row and column when relevant)."""


class ModelError(RaydetoxError, ValueError):
    """A model directory cannot be used: missing, malformed ``config.json``/``adapter_config.json``,
    weights offered only as a pickle, or an adapter whose base model cannot be reached."""


class PretrainingLeakError(RaydetoxError, ValueError):
    """The embedded base's pretraining set holds a validation, test or holdout text."""


class ResultsError(RaydetoxError, ValueError):
    """A results folder cannot be used: a sweep's result files are missing, malformed or wrong-typed, a
    run directory does not match, or a folder is not a raydetox sweep that may be resumed or replaced."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of a library's exception (theirs may run to many lines, e.g.
    schema dumps), to quote inside one of ours."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, to quote a bad value inside a one-line message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
