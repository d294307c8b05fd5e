"""The one exception type for user mistakes; the CLI turns it into one line on stderr and exit code 2."""
from __future__ import annotations

__all__ = ["AdderconvError"]


class AdderconvError(Exception):
    """A problem with what the user asked for (bad file, bad shape, bad option), not a bug."""

    exit_code = 2
