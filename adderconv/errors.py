"""The one exception type for user mistakes; the CLI turns it into one line on stderr and exit code 2.

Messages speak library terms: a parameter is named in backticks (```arch```, ```input_shape```), which a Python
caller reads as the argument to pass; the CLI's error boundary writes each such name as its flag
(``--arch``, ``--input-shape``), so one message serves both.
"""
from __future__ import annotations

__all__ = ["AdderconvError"]


class AdderconvError(Exception):
    """A problem with what the user asked for (bad file, bad shape, bad option), not a bug."""

    exit_code = 2
