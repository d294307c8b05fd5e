"""Text from files is data: sanitisers for every view that shows it, and a guarded JSON reader.

A name read from a file (an ONNX node, a module path, a recipe entry) can hold anything: control characters
and terminal escape sequences, rich markup, Markdown and HTML, Mermaid directives. Each view escapes for
itself, with one function here per kind of view, so a name is safe wherever it is shown:

- :func:`plain`: one printable line (control characters, ANSI/OSC sequences, bidi overrides and line breaks
  removed); what every name becomes where it enters (ingress), and what one-line errors print;
- :func:`console`: :func:`plain`, then rich markup escaped (``[link=...]`` is shown, not applied);
- :func:`markdown`: :func:`plain`, then escaped for a Markdown table cell or inline text (no links, HTML,
  comments, code spans or pipes);
- :func:`code`: a Markdown inline code span that holds the text whatever backticks it contains;
- :func:`mermaid`: a quoted Mermaid label (no ``%%`` directives, quotes, entities or line breaks).

>>> plain("conv\\r```\\x1b]52;c;aGk=\\x07<!--")
'conv ```<!--'
>>> console("[link=https://x]a[/link] [/]")
'\\\\[link=https://x]a\\\\[/link] \\\\[/]'
>>> markdown("a|b <!-- [x](y)")
'a\\\\|b &lt;\\\\!-- \\\\[x\\\\](y)'
>>> mermaid('%%{init: {"theme": "dark"}}%% "x"')
'"%{init: {\\'theme\\': \\'dark\\'}}% \\'x\\'"'
"""
from __future__ import annotations

import json as _json
import re
from typing import Any

from .errors import AdderconvError

__all__ = ["plain", "console", "markdown", "code", "mermaid", "json_loads", "MAX_JSON_DEPTH"]

# ESC-introduced sequences: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (ESC ] ... BEL or ST), and
# two-character escapes; the same with the 8-bit introducers (CSI U+009B, OSC U+009D, DCS U+0090, ...).
_SEQUENCES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"                          # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"   # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]?")                                           # any other escape
_BREAKS = re.compile(r"[\t\n\v\f\r\x1c-\x1e\x85\u2028\u2029]+")
# C0/C1 controls and DEL; bidi embeddings/overrides/isolates (text shown in another order than it is stored);
# zero-width characters that hide text; the BOM.
_INVISIBLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def plain(text: Any) -> str:
    """``text`` as one printable line: escape sequences and control characters removed, line breaks and tabs
    made spaces. Idempotent."""
    s = _SEQUENCES.sub("", str(text))
    s = _BREAKS.sub(" ", s)
    return _INVISIBLE.sub("", s)


def console(text: Any) -> str:
    """For a rich console (markup on): :func:`plain`, then every ``[`` that could open a tag escaped."""
    from rich.markup import escape

    return escape(plain(text))


_MD = re.compile(r"([\\`*_\[\]#!|~])")


def markdown(text: Any) -> str:
    """For Markdown text or a table cell: :func:`plain`, HTML's ``& < >`` as entities (no tags, no comments),
    and Markdown's punctuation backslash-escaped (no links, images, emphasis, code spans, headings or cell
    breaks). A bare URL may still be auto-linked by GitHub: show names in :func:`code` spans where you can."""
    s = plain(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD.sub(r"\\\1", s)


def code(text: Any) -> str:
    """A Markdown inline code span holding :func:`plain` ``text``: fenced by one more backtick than its longest
    run of backticks; a pipe (which would end a table cell even inside code) becomes a broken bar."""
    s = plain(text).replace("|", "\u00a6")
    run = max((len(m) for m in re.findall(r"`+", s)), default=0)
    fence = "`" * (run + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def mermaid(text: Any) -> str:
    """A double-quoted Mermaid label: :func:`plain`; no ``%%`` (comments and ``%%{init}%%`` directives), no
    ``"``, no ``#...;`` entities, no HTML brackets, no backticks (Markdown strings)."""
    s = re.sub(r"%+", "%", plain(text)).replace('"', "'").replace("`", "'").replace("#", "\u266f")
    s = s.replace("<", "\u2039").replace(">", "\u203a")
    return f'"{s}"'


MAX_JSON_DEPTH = 32


def json_loads(text: str | bytes, what: str) -> Any:
    """Parse JSON read from a file: a syntax error, nesting deeper than :data:`MAX_JSON_DEPTH` (which would
    otherwise blow the interpreter's stack here or in any recursive reader after) or a bare ``NaN`` is one
    :class:`AdderconvError` naming ``what``."""
    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        value = _json.loads(text, parse_constant=reject)
    except RecursionError:
        raise AdderconvError(f"{what}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)") from None
    except (ValueError, TypeError) as e:
        raise AdderconvError(f"{what}: not readable JSON ({plain(e)})") from None
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise AdderconvError(f"{what}: JSON nested too deeply (more than {MAX_JSON_DEPTH} levels)")
            stack += [(c, depth + 1) for c in (v.values() if isinstance(v, dict) else v)]
    return value
