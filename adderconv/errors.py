"""The one exception type for user mistakes; the CLI turns it into one line on stderr and exit code 2.

Messages speak library terms: a parameter is named in backticks (```arch```, ```input_shape```), which a Python
caller reads as the argument to pass; the CLI's error boundary writes each such name as its flag
(``--arch``, ``--input-shape``), so one message serves both. Torch-free: the CLI imports it to parse arguments.

>>> check_choice("capture", "real", ("dispatch", "real", "jit"))
'real'
>>> first_line(ValueError(""))
'ValueError'
"""
from __future__ import annotations

from collections.abc import Collection

__all__ = ["AdderconvError", "check_choice", "first_line"]


class AdderconvError(Exception):
    """A problem with what the user asked for (bad file, bad shape, bad option), not a bug."""

    exit_code = 2


def first_line(e: BaseException) -> str:
    """The first non-blank line of ``e``'s message, or its type's name when it has none; never raises (a
    message of "" or only whitespace, or a ``__str__`` that fails, must not turn a one-line error into a
    traceback)."""
    try:
        text = str(e)
    except Exception:   # a broken __str__ is still an error we must be able to name
        text = ""
    return next((line.strip() for line in text.splitlines() if line.strip()), type(e).__name__)


def check_choice(name: str, value: str, choices: Collection[str], what: str | None = None) -> str:
    """``value`` if it is one of ``choices``, else an :class:`AdderconvError` naming parameter ``name`` (in
    backticks, so the CLI shows its flag), what it is (``what``, default ``name``) and every choice."""
    if value not in choices:
        raise AdderconvError(f"`{name}`: unknown {what or name} {value!r}; choose one of {', '.join(choices)}")
    return value
