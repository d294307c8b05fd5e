"""The one output object every command writes through: results, notes and errors each through one method.

A command's body (``run_x(options, out)``) never picks a stream itself: what it found is a result
(:meth:`Output.print`), what it wrote is a result line (:meth:`Output.wrote`), and what the user may want to know
on the side is a note (:meth:`Output.note`). Machine-readable results go to the files the user names (``--json``),
never mixed into the human text; errors are raised (:class:`adderconv.errors.AdderconvError`) and the CLI's
boundary writes them to stderr. A Python caller may pass a single rich ``Console`` instead; everything then goes
there (:meth:`Output.of`).

Notes go to stdout beside the results for now: the CLI's contract (tested across the suite) is that stderr holds
exactly the one error line when a command fails, and a note printed before a failure would break it. Sending
notes to stderr is a change to :meth:`Output.cli` alone.

>>> import io
>>> from rich.console import Console
>>> out = Output.of(Console(file=io.StringIO()))
>>> out.note("a zoo model has random weights")
"""
from __future__ import annotations

from typing import Any

from rich.console import Console

from .untrusted import console as esc

__all__ = ["Output"]


class Output:
    """Where a command writes: ``console`` for results, ``notes`` for notes and hints (the same console unless
    given)."""

    def __init__(self, console: Console | None = None, notes: Console | None = None) -> None:
        self.console = console if console is not None else Console()
        self.notes = notes if notes is not None else self.console

    @classmethod
    def cli(cls) -> Output:
        """The command line's: results and notes on stdout (stderr is the error boundary's: one line)."""
        return cls(Console())

    @classmethod
    def of(cls, target: Output | Console | None) -> Output:
        """``target`` as an :class:`Output` (a bare console takes results and notes alike)."""
        return target if isinstance(target, Output) else cls(target)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """A result (a table, a line): rich markup as written."""
        self.console.print(*objects, **kwargs)

    def line(self, text: str) -> None:
        """A result line as plain text: no markup, no highlighting, never wrapped (scripts read these)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def note(self, text: Any) -> None:
        """A note beside the results; ``text`` may quote a file's names, so it is shown as text, never markup."""
        self.notes.print(f"note: {esc(text)}", highlight=False, soft_wrap=True)

    def wrote(self, path: Any, what: str = "") -> None:
        """The line every command prints for each file it wrote."""
        self.console.print(f"wrote {esc(path)}{f' ({what})' if what else ''}", highlight=False, soft_wrap=True)
