"""Price lists: energy per operation (and per memory word) by precision, read from TOML data files.

A price list is data with sources, never code: the built-in one is ``tables/horowitz_45nm.toml``; users
pass their own file in the same format (``--table my.toml``).

>>> t = load_table()
>>> t.price("fp32", "mul"), t.price("int8", "add"), t.price("fp32", "cmp")
(3.7, 0.03, 0.9)
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from adderconv.errors import AdderconvError

from .counts import KINDS

__all__ = ["PriceTable", "load_table", "PRECISIONS", "BYTES_PER_ELEMENT", "DEFAULT_TABLE"]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int8", "int16", "int32")
BYTES_PER_ELEMENT: dict[str, int] = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "int16": 2, "int32": 4}
DEFAULT_TABLE = Path(__file__).resolve().parent / "tables" / "horowitz_45nm.toml"


@dataclass(frozen=True)
class Entry:
    pj: float
    source: str
    estimate: bool = False


@dataclass(frozen=True)
class PriceTable:
    name: str
    description: str
    compute: dict[str, dict[str, Entry]]          # precision -> kind -> entry
    aliases: dict[str, str] = field(default_factory=dict)   # kind -> kind it is priced as
    memory: dict[str, Entry] = field(default_factory=dict)  # level -> entry per word
    word_bits: int = 32
    scale: float = 1.0                            # technology-node factor applied to every price

    def entry(self, precision: str, kind: str) -> Entry | None:
        """The entry pricing ``kind`` at ``precision`` (through an alias), or None if unpriced."""
        row = self.compute.get(precision)
        if row is None:
            raise AdderconvError(f"price list {self.name!r} has no precision {precision!r}; "
                                 f"it has {', '.join(self.compute)}")
        return row.get(kind) or row.get(self.aliases.get(kind, ""))

    def price(self, precision: str, kind: str) -> float | None:
        e = self.entry(precision, kind)
        return None if e is None else e.pj * self.scale

    def memory_price(self, level: str) -> float:
        if level not in self.memory:
            raise AdderconvError(f"price list {self.name!r} has no memory level {level!r}; "
                                 f"it has {', '.join(self.memory) or 'none'}")
        return self.memory[level].pj * self.scale

    def scaled(self, factor: float) -> "PriceTable":
        """The same table with every price multiplied by ``factor`` (e.g. a node-scaling energy ratio)."""
        if not (math.isfinite(factor) and factor > 0):
            raise AdderconvError(f"energy scale factor must be a finite positive number, got {factor}")
        return PriceTable(self.name, self.description, self.compute, self.aliases, self.memory,
                          self.word_bits, self.scale * factor)


def _entry(raw: object, where: str) -> Entry:
    if not isinstance(raw, dict) or isinstance(raw.get("pj"), bool) or not isinstance(raw.get("pj"), (int, float)) \
            or not isinstance(raw.get("source"), str) or not raw["source"].strip():
        raise AdderconvError(f"{where}: each price needs a number 'pj' and a non-empty 'source', got {raw!r}")
    if not math.isfinite(raw["pj"]):
        raise AdderconvError(f"{where}: the energy must be a finite number, got {raw['pj']}")
    if raw["pj"] < 0:
        raise AdderconvError(f"{where}: negative energy {raw['pj']}")
    return Entry(float(raw["pj"]), raw["source"], bool(raw.get("estimate", False)))


def load_table(path: str | Path | None = None) -> PriceTable:
    """Read a price list (the built-in Horowitz 45 nm table when ``path`` is None)."""
    path = Path(path) if path is not None else DEFAULT_TABLE
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AdderconvError(f"cannot read price list {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AdderconvError(f"{path}: a price list must be UTF-8 text (TOML)") from None
    except tomllib.TOMLDecodeError as e:
        raise AdderconvError(f"{path}: not valid TOML ({e})") from None
    for section in ("compute", "aliases", "memory", "table"):
        if section in raw and not isinstance(raw[section], dict):
            raise AdderconvError(f"{path}: [{section}] must be a table, got {raw[section]!r}")
    compute: dict[str, dict[str, Entry]] = {}
    for precision, row in (raw.get("compute") or {}).items():
        if not isinstance(row, dict):
            raise AdderconvError(f"{path}: [compute.{precision}] must be a table")
        for kind, e in row.items():
            if kind not in KINDS:
                raise AdderconvError(f"{path}: unknown operation kind {kind!r} in [compute.{precision}]; "
                                     f"known: {', '.join(KINDS)}")
            compute.setdefault(precision, {})[kind] = _entry(e, f"{path} [compute.{precision}] {kind}")
    if not compute:
        raise AdderconvError(f"{path}: no [compute.<precision>] prices")
    aliases = {}
    for kind, a in (raw.get("aliases") or {}).items():
        if kind not in KINDS or not isinstance(a, dict) or a.get("as") not in KINDS:
            raise AdderconvError(f"{path}: [aliases] {kind} must read {{ as = \"<kind>\", source = \"...\" }}")
        aliases[kind] = a["as"]
    mem = dict(raw.get("memory") or {})
    word_bits = mem.pop("word_bits", 32)
    if isinstance(word_bits, bool) or not isinstance(word_bits, int) or word_bits < 1:
        raise AdderconvError(f"{path}: [memory] word_bits must be a positive integer (bits per word), "
                             f"got {word_bits!r}")
    memory = {level: _entry(e, f"{path} [memory] {level}") for level, e in mem.items()}
    meta = raw.get("table") or {}
    return PriceTable(str(meta.get("name", path.stem)), str(meta.get("description", "")), compute, aliases,
                      memory, word_bits)
