"""Price lists: energy per operation (and per memory word) by precision, and the silicon area of each
operator, read from TOML data files.

A price list is data with sources, never code: the built-in one is ``tables/horowitz_45nm.toml``; users
pass their own file in the same format (``--table my.toml``). ``[compute.<precision>]`` gives picojoules
per operation, ``[area.<precision>]`` square micrometres per operator (optional), ``[aliases]`` kinds priced
as another kind of the same precision. An accumulation (``acc``) is an ``add`` at the accumulator's width
unless a list prices it itself.

>>> t = load_table()
>>> t.price("fp32", "mul"), t.price("int8", "add"), t.price("int32", "acc"), t.price("fp32", "cmp")
(3.7, 0.03, 0.1, 0.9)
>>> t.area("int8", "mul").value, t.area("int32", "acc").value
(282.0, 137.0)
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from adderconv.errors import AdderconvError

from .counts import KINDS

__all__ = ["PriceTable", "load_table", "PRECISIONS", "BYTES_PER_ELEMENT", "DEFAULT_TABLE"]

#: int4..int7: what quantised adder layers below 8 bits declare (the built-in list prices them by estimate)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int4", "int5", "int6", "int7", "int8", "int16", "int32")
#: memory packs narrow integers: an int4 element is half a byte
BYTES_PER_ELEMENT: dict[str, float] = {"fp32": 4, "fp16": 2, "bf16": 2, **{f"int{n}": n / 8 for n in range(4, 8)},
                                       "int8": 1, "int16": 2, "int32": 4}
DEFAULT_TABLE = Path(__file__).resolve().parent / "tables" / "horowitz_45nm.toml"


@dataclass(frozen=True)
class Entry:
    value: float            # pJ per operation (compute), per word (memory), or um^2 per operator (area)
    source: str
    estimate: bool = False

    @property
    def pj(self) -> float:
        return self.value


@dataclass(frozen=True)
class PriceTable:
    name: str
    description: str
    compute: dict[str, dict[str, Entry]]          # precision -> kind -> entry
    aliases: dict[str, str] = field(default_factory=dict)   # kind -> kind it is priced as
    memory: dict[str, Entry] = field(default_factory=dict)  # level -> entry per word
    word_bits: int = 32
    scale: float = 1.0                            # technology-node factor applied to every price
    areas: dict[str, dict[str, Entry]] = field(default_factory=dict)   # precision -> kind -> um^2

    def entry(self, precision: str, kind: str) -> Entry | None:
        """The entry pricing ``kind`` at ``precision`` (through an alias), or None if unpriced."""
        row = self.compute.get(precision)
        if row is None:
            raise AdderconvError(f"price list {self.name!r} has no precision {precision!r}; "
                                 f"it has {', '.join(self.compute)}")
        return _lookup(row, kind, self.aliases)

    def area(self, precision: str, kind: str) -> Entry | None:
        """The silicon area of one ``kind`` operator at ``precision`` (through an alias), or None if not listed
        (areas are not scaled by ``scale``, an energy factor)."""
        return _lookup(self.areas.get(precision, {}), kind, self.aliases)

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
                          self.word_bits, self.scale * factor, self.areas)


def _lookup(row: dict[str, Entry], kind: str, aliases: dict[str, str]) -> Entry | None:
    alias = aliases.get(kind, "add" if kind == "acc" else "")     # an accumulation is an add, at its own width
    return row.get(kind) or row.get(alias)


def _entry(raw: object, where: str, key: str = "pj") -> Entry:
    what = "an area" if key == "um2" else "the energy"
    if not isinstance(raw, dict) or isinstance(raw.get(key), bool) or not isinstance(raw.get(key), (int, float)) \
            or not isinstance(raw.get("source"), str) or not raw["source"].strip():
        raise AdderconvError(f"{where}: each entry needs a number {key!r} and a non-empty 'source', got {raw!r}")
    if not math.isfinite(raw[key]):
        raise AdderconvError(f"{where}: {what} must be a finite number, got {raw[key]}")
    if raw[key] < 0:
        raise AdderconvError(f"{where}: negative {what.split()[-1]} {raw[key]}")
    return Entry(float(raw[key]), raw["source"], bool(raw.get("estimate", False)))


def _rows(raw: dict, section: str, path: Path, key: str) -> dict[str, dict[str, Entry]]:
    out: dict[str, dict[str, Entry]] = {}
    for precision, row in (raw.get(section) or {}).items():
        if not isinstance(row, dict):
            raise AdderconvError(f"{path}: [{section}.{precision}] must be a table")
        for kind, e in row.items():
            if kind not in KINDS:
                raise AdderconvError(f"{path}: unknown operation kind {kind!r} in [{section}.{precision}]; "
                                     f"known: {', '.join(KINDS)}")
            out.setdefault(precision, {})[kind] = _entry(e, f"{path} [{section}.{precision}] {kind}", key)
    return out


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
    for section in ("compute", "area", "aliases", "memory", "table"):
        if section in raw and not isinstance(raw[section], dict):
            raise AdderconvError(f"{path}: [{section}] must be a table, got {raw[section]!r}")
    compute = _rows(raw, "compute", path, "pj")
    areas = _rows(raw, "area", path, "um2")
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
                      memory, word_bits, areas=areas)
