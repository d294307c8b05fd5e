"""ZigZag (KU Leuven's dataflow engine, ``pip install zigzag-dse``) behind a small interface: our layers in, per-layer
energy per memory level, latency and utilisation out.

This is the only module that imports ``zigzag``, and only inside functions: the package imports without it, and
:func:`require_zigzag` turns its absence into one line. The workload is built from the model's own layers
(:func:`layer_specs`: conv, linear and adder layers, shapes from forward hooks on fake tensors) and handed to
``zigzag.api.get_hardware_performance_zigzag`` as ZigZag's list-of-layers format, each layer a convolution with a
group dimension (``O[b][g][k][oy][ox] += W[g][k][c][fy][fx] * I[b][g][c][iy][ix]``, the form of ZigZag's own ONNX
conv parser; a linear layer is a 1x1 conv on a 1x1 map). Our builder, not ZigZag's ONNX front end: that one reads
kernel, stride and padding in (width, height) order and would swap them on non-square layers.

ZigZag prices compute as one ``unit_energy`` x MACs per accelerator; :func:`run_dataflow` keeps ZigZag's figure
(``engine_compute_pj``) and re-prices the term per layer with the energy of that layer's own unit (a MAC unit, or
a SAD unit for adder layers). The term is separable from the memory terms and the latency, so this is exact.

What :func:`run_dataflow` changes in its private copy of the accelerator, each said in the result's ``notes``:
- operand and partial-sum widths: a memory whose size or port cannot hold one word of an operand it stores (e.g.
  ``tpu_like``'s 16-bit output register under 32-bit accumulators, where ZigZag finds no mapping at all) is
  widened to one word, its access energies scaled by the port's widening (the energy per bit is kept);
- ``array_scale``: the operational array's dimensions are enlarged (and the accelerator's spatial mapping with
  them); memories stay as they are, so a bigger array may be held back by their bandwidth, as it would be.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adderconv.errors import AdderconvError

__all__ = ["ACCELERATORS", "OPS", "OBJECTIVES", "LayerSpec", "LayerDataflow", "DataflowResult", "require_zigzag",
           "resolve_accelerator", "layer_specs", "run_dataflow"]

# Bundled accelerators offered by name -> ZigZag's bundled mapping file for it (None: ZigZag generates the spatial
# mapping). Left out: the in-memory-computing arrays (aimc, dimc: another cost model), generic_array_cacti (runs
# CACTI) and the GEMM cores (no array for convolutions' loops).
_BUNDLED: dict[str, str | None] = {
    "tpu_like": "tpu_like", "eyeriss_like": None, "edge_tpu_like": "edge_tpu_like", "ascend_like": "ascend_like",
    "tesla_npu_like": "tesla_npu_like", "meta_prototype": "meta_prototype_like",
}
ACCELERATORS: tuple[str, ...] = tuple(_BUNDLED)
OPS: tuple[str, ...] = ("conv", "linear", "adder")
OBJECTIVES: tuple[str, ...] = ("latency", "energy", "EDP")

_INSTALL = "ZigZag is not installed: pip install 'adderconv[zigzag]'"
_EQUATION = "O[b][g][k][oy][ox]+=W[g][k][c][fy][fx]*I[b][g][c][iy][ix]"
_LINKS = {"O": "O", "W": "I2", "I": "I1"}       # layer operand -> memory operand, as in every bundled mapping


def require_zigzag() -> None:
    """Raise :class:`AdderconvError` with the install hint when ZigZag (or ``six``, which it imports without
    declaring it) cannot be imported."""
    try:
        import six  # noqa: F401
        import zigzag.api  # noqa: F401
    except ImportError:
        raise AdderconvError(_INSTALL) from None


def _zigzag_root() -> Path:
    import zigzag

    return Path(zigzag.__file__).parent / "inputs"


# --- accelerators ---------------------------------------------------------------------------------------------


def resolve_accelerator(name_or_path: str | Path) -> Path:
    """The YAML file of a bundled accelerator (one of :data:`ACCELERATORS`) or of the user's own, checked by
    parsing it with ZigZag's own parser. Unknown names, missing or malformed files raise :class:`AdderconvError`."""
    path = _locate(name_or_path)
    _parse_accelerator(path)
    return path


def _locate(name_or_path: str | Path) -> Path:
    require_zigzag()
    text = str(name_or_path)
    if isinstance(name_or_path, str) and text in _BUNDLED:
        return _zigzag_root() / "hardware" / f"{text}.yaml"
    path = Path(text).expanduser()
    if not path.is_file():
        if isinstance(name_or_path, Path) or path.suffix in (".yaml", ".yml") or os.sep in text:
            raise AdderconvError(f"accelerator file {text} does not exist")
        raise AdderconvError(f"unknown accelerator {text!r}; choose one of {', '.join(ACCELERATORS)} "
                             f"or give a ZigZag accelerator YAML file")
    return path


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _parse_accelerator(path: Path) -> dict[str, Any]:
    """The accelerator's YAML data, once ZigZag's parser (its validator, then its factory: what
    ``AcceleratorParserStage.parse_accelerator`` runs, without its demand for a .yaml suffix) has accepted it."""
    import yaml
    from zigzag.hardware.architecture.imc_array import ImcArray
    from zigzag.parser.accelerator_factory import AcceleratorFactory
    from zigzag.parser.accelerator_validator import AcceleratorValidator

    # the validator gives its reasons as log records, not in its result: collect them for the one-line error
    collect, log = _Collect(), logging.getLogger(AcceleratorValidator.__module__)
    level, propagate = log.level, log.propagate
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if not isinstance(data, dict):
            raise ValueError("expected a mapping with 'memories' and 'operational_array'")
        with _quiet():
            log.addHandler(collect)
            log.setLevel(logging.CRITICAL)
            log.propagate = False
            validator = AcceleratorValidator(copy.deepcopy(data))
            if not validator.validate():
                raise ValueError(str(validator.validator.errors or "; ".join(collect.messages)))
            accelerator = AcceleratorFactory(validator.normalized_data).create()
    except Exception as e:   # noqa: BLE001  (yaml, validator and factory errors alike: one line)
        raise AdderconvError(f"accelerator file {path} is not a valid ZigZag accelerator ({_first_line(e)})") from None
    finally:
        log.removeHandler(collect)
        log.setLevel(level)
        log.propagate = propagate
    if isinstance(accelerator.operational_array, ImcArray):
        raise AdderconvError(f"accelerator file {path}: in-memory-computing arrays are not supported (their cost "
                             f"model has no per-operation unit energy to re-price)")
    return data


# --- workload -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer's workload as a convolution (a linear layer is a 1x1 conv on a 1x1 map; ``n`` then counts its
    rows: batch x tokens). ``k``/``c``: output/input channels of the whole layer; ``groups`` splits both (ZigZag's
    G dimension; depthwise: groups = c). ``py``/``px``: padding before the first row/column. ``iy``/``ix``: the
    input's height and width (None: the smallest input that gives ``oy``/``ox``)."""

    name: str
    op: str
    n: int
    k: int
    c: int
    oy: int
    ox: int
    fy: int
    fx: int
    sy: int = 1
    sx: int = 1
    py: int = 0
    px: int = 0
    dy: int = 1
    dx: int = 1
    groups: int = 1
    iy: int | None = None
    ix: int | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise AdderconvError(f"layer {self.name!r}: op must be one of {', '.join(OPS)}, got {self.op!r}")
        sizes = {f: getattr(self, f) for f in ("n", "k", "c", "oy", "ox", "fy", "fx", "sy", "sx", "dy", "dx", "groups")}
        bad = [f"{f}={v!r}" for f, v in sizes.items() if not isinstance(v, int) or v < 1]
        if bad or self.py < 0 or self.px < 0:
            raise AdderconvError(f"layer {self.name!r}: sizes must be positive integers (padding >= 0), got "
                                 f"{', '.join(bad) or f'py={self.py}, px={self.px}'}")
        if self.k % self.groups or self.c % self.groups:
            raise AdderconvError(f"layer {self.name!r}: channels {self.c} -> {self.k} are not divisible by "
                                 f"groups={self.groups}")

    @property
    def macs(self) -> int:
        """Multiply-accumulates (for an adder layer: |x - w| + accumulate), padding taps included (as ZigZag)."""
        return self.n * self.k * (self.c // self.groups) * self.oy * self.ox * self.fy * self.fx

    @property
    def input_hw(self) -> tuple[int, int]:
        iy = self.iy if self.iy is not None else (self.oy - 1) * self.sy + self.dy * (self.fy - 1) + 1 - 2 * self.py
        ix = self.ix if self.ix is not None else (self.ox - 1) * self.sx + self.dx * (self.fx - 1) + 1 - 2 * self.px
        return max(iy, 1), max(ix, 1)

    def geometry(self) -> tuple:
        """Everything ZigZag sees of the layer (not its name or op): equal geometries map identically."""
        return (self.n, self.k, self.c, self.oy, self.ox, self.fy, self.fx, self.sy, self.sx, self.py, self.px,
                self.dy, self.dx, self.groups, self.input_hw)


def _adder_types() -> tuple[type, ...]:
    from adderconv.layers import AdderConv1d, AdderConv2d, AdderLinear
    from adderconv.quant.layers import QuantAdderConv2d

    return AdderConv1d, AdderConv2d, AdderLinear, QuantAdderConv2d     # QuantAdderLinear is a subclass


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[-1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _padding(module: nn.Module, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """(top, left) zero padding; 'same' pads d(k-1) in all, the smaller half first (as torch)."""
    padding = module.padding
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))  # type: ignore[return-value]
    return _pair(padding)


def _spec(name: str, module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> LayerSpec:
    """The spec of one call of ``module`` (input ``x``, output ``y``)."""
    from adderconv.layers import AdderConv1d, AdderLinear
    from adderconv.quant.layers import QuantAdderLinear

    if isinstance(module, (nn.Linear, AdderLinear, QuantAdderLinear)):
        features = module.in_channels if isinstance(module, QuantAdderLinear) else module.in_features
        out = module.out_channels if isinstance(module, QuantAdderLinear) else module.out_features
        op = "linear" if isinstance(module, nn.Linear) else "adder"
        return LayerSpec(name, op, max(x.numel() // features, 1), out, features, 1, 1, 1, 1)
    op = "conv" if isinstance(module, (nn.Conv1d, nn.Conv2d)) else "adder"
    one_d = isinstance(module, (nn.Conv1d, AdderConv1d))
    if one_d:   # (N, C, L) or (C, L): a height-1 image
        fy, fx = 1, _pair(module.kernel_size)[-1]
        (sy, sx), (dy, dx) = (1, _pair(module.stride)[-1]), (1, _pair(module.dilation)[-1])
        py, px = _padding(module, (fy, fx), (dy, dx)) if isinstance(module.padding, str) \
            else (0, _pair(module.padding)[-1])
        n = x.shape[0] if x.dim() == 3 else 1
        (iy, ix), (oy, ox) = (1, x.shape[-1]), (1, y.shape[-1])
    else:
        (fy, fx), (sy, sx), (dy, dx) = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        py, px = _padding(module, (fy, fx), (dy, dx))
        n = x.shape[0] if x.dim() == 4 else 1
        # uint8 codes of the quantised adder layers are channels-last (N, H, W, C); floats are NCHW
        iy, ix = (x.shape[1], x.shape[2]) if x.dtype == torch.uint8 else (x.shape[-2], x.shape[-1])
        oy, ox = (y.shape[1], y.shape[2]) if y.dtype == torch.uint8 else (y.shape[-2], y.shape[-1])
    return LayerSpec(name, op, int(n), int(module.out_channels), int(module.in_channels), int(oy), int(ox), fy, fx,
                     sy, sx, py, px, dy, dx, int(module.groups), int(iy), int(ix))


def layer_specs(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerSpec]:
    """The conv, linear and adder layers of ``model`` in execution order (a layer called twice appears twice),
    named by module path (the root is ""), with shapes from forward hooks on a fake input of ``input_shape``
    (``FakeTensorMode``: nothing is allocated or computed, so the shape may be huge).

    Mapped: ``nn.Conv1d``/``nn.Conv2d``, ``nn.Linear`` (on every leading dim: batch x tokens rows), adderconv's
    ``AdderConv1d``/``AdderConv2d``/``AdderLinear`` and the quantised ``QuantAdderConv2d``/``QuantAdderLinear``.
    3-d and transposed convolutions raise :class:`AdderconvError` naming the layer. Matrix products outside these
    modules (attention's) are not mapped. Use batch 1 for ZigZag (as ZigZag's ONNX path must: its symbolic batch
    divides by zero); a larger batch is mapped as given. The model runs in eval mode (inference shapes, as the
    counts; a zoo model comes in train mode), its modules' flags restored.
    """
    from adderconv.layers import AdderConv3d
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .capture import in_mode

    if not input_shape or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise AdderconvError(f"an input shape of positive sizes is needed, got {tuple(input_shape)!r}")
    mapped = (nn.Conv1d, nn.Conv2d, nn.Linear, *_adder_types())
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv3d, AdderConv3d, nn.modules.conv._ConvTransposeNd)):
            raise AdderconvError(f"layer {name!r} ({type(module).__name__}): ZigZag's workload here is a 2-d "
                                 f"convolution; 3-d and transposed convolutions are not mapped")
    specs: list[LayerSpec] = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None or not isinstance(output, torch.Tensor):
            raise AdderconvError(f"layer {names[module]!r}: expected a tensor input and output")
        specs.append(_spec(names[module], module, x, output))

    first = next(iter([*model.parameters(), *model.buffers()]), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, mapped)]
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)      # it logs the model's own errors, which we raise
    try:
        with FakeTensorMode(allow_non_fake_inputs=True), torch.no_grad(), in_mode(model, False):
            model(torch.empty(input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        log.setLevel(level)
    return specs


# --- results --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerDataflow:
    """One layer on the accelerator. Energies in pJ. ``memory_pj``: per memory level of the accelerator (its
    names, innermost first; reads and writes of every operand the level holds). ``utilization``: ZigZag's overall
    MAC-array utilisation, ideal cycles / ``latency_cycles`` (spatial under-use, stalls, loading and off-loading
    included; its ``mac_utilization2``); ``spatial_utilization``: the spatial mapping's share alone."""

    name: str
    op: str
    macs: int
    compute_pj: float
    engine_compute_pj: float
    memory_pj: dict[str, float]
    latency_cycles: float
    utilization: float
    spatial_utilization: float = 1.0
    spatial_mapping: str = ""

    @property
    def memory_total_pj(self) -> float:
        return sum(self.memory_pj.values())

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_total_pj


@dataclass(frozen=True)
class DataflowResult:
    """ZigZag's mapping of a list of layers onto one accelerator (see :func:`run_dataflow`). ``array_scale``: the
    actual factor of units (``array_sizes`` / the accelerator's own); ``engine_unit_pj``: ZigZag's unit energy;
    ``seconds``: the wall time of the call; ``notes``: what was changed in the accelerator, in words."""

    accelerator: str
    layers: list[LayerDataflow]
    seconds: float
    operand_bits: int = 8
    accumulator_bits: int = 32
    array_scale: float = 1.0
    array_sizes: tuple[int, ...] = ()
    engine_unit_pj: float = 0.0
    lpf_limit: int = 4
    notes: tuple[str, ...] = field(default=())

    @property
    def compute_pj(self) -> float:
        return sum(layer.compute_pj for layer in self.layers)

    @property
    def engine_compute_pj(self) -> float:
        return sum(layer.engine_compute_pj for layer in self.layers)

    @property
    def memory_pj(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for layer in self.layers:
            for level, pj in layer.memory_pj.items():
                total[level] = total.get(level, 0.0) + pj
        return total

    @property
    def memory_total_pj(self) -> float:
        return sum(self.memory_pj.values())

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.memory_total_pj

    @property
    def latency_cycles(self) -> float:
        return sum(layer.latency_cycles for layer in self.layers)


# --- the accelerator's copy -----------------------------------------------------------------------------------


def _scaled_sizes(sizes: Sequence[int], factor: float) -> tuple[int, ...]:
    """Integer array sizes with about ``factor`` times the units: every dimension by factor^(1/d), each rounded to
    the neighbour that brings the product closest to the target (ties: closest to the same aspect ratio)."""
    r = factor ** (1 / len(sizes))
    target = math.prod(sizes) * factor

    def cost(choice: tuple[int, ...]) -> tuple[float, float]:
        return (abs(math.log(math.prod(choice) / target)),
                sum(abs(math.log(c / (s * r))) for c, s in zip(choice, sizes)))

    options = [range(max(1, math.floor(s * r) - 1), math.ceil(s * r) + 2) for s in sizes]
    return min(itertools.product(*options), key=cost)


def _widen_memories(hw: dict[str, Any], operand_bits: int, accumulator_bits: int) -> list[str]:
    """Widen (in place) each memory whose size or port cannot hold one word of an operand it stores: outputs
    (partial sums) at ``accumulator_bits``, inputs and weights at ``operand_bits``. Access energies scale with
    the port (energy per bit kept)."""
    notes = []
    for name, mem in hw["memories"].items():
        operands = [str(o) for o in mem.get("operands", [])]
        word = max(accumulator_bits if o == "O" else operand_bits for o in operands) if operands else 0
        ports = [p for p in mem.get("ports", []) if any(str(a).split(",")[0].strip() in operands
                                                         for a in p.get("allocation", []))]
        narrow = [p for p in ports if int(p.get("bandwidth_max", word)) < word]
        if int(mem["size"]) >= word and not narrow:
            continue
        old_bw = min((int(p["bandwidth_max"]) for p in narrow), default=word)
        scale = word / old_bw
        for p in narrow:
            p["bandwidth_min"] = p["bandwidth_max"] = word
        old_size = int(mem["size"])
        mem["size"] = max(old_size, word)
        if scale != 1:
            mem["r_cost"] = float(mem["r_cost"]) * scale
            mem["w_cost"] = float(mem["w_cost"]) * scale
        ports_note = f", ports {old_bw} -> {word} bits, access energy x{scale:.3g} (the same per bit)" if narrow else ""
        notes.append(f"{name} widened to hold one {word}-bit word (size {old_size} -> {mem['size']} bits{ports_note})")
    return notes


def _mapping_entry(hw_path: Path, mapping: str | Path | None) -> dict[str, Any] | None:
    """The mapping entry ZigZag would use for a Conv layer (by name "Conv", else "default"), or None to let ZigZag
    generate the spatial mapping."""
    import yaml

    if mapping is None:
        bundled = hw_path.parent == _zigzag_root() / "hardware" and _BUNDLED.get(hw_path.stem)
        if not bundled:
            return None
        mapping = _zigzag_root() / "mapping" / f"{bundled}.yaml"
    path = Path(mapping)
    try:
        with path.open(encoding="utf-8") as f:
            entries = yaml.safe_load(f)
        entry = next(e for name in ("Conv", "default") for e in entries if e.get("name") == name)
    except Exception as e:   # noqa: BLE001
        raise AdderconvError(f"mapping file {path} has no usable 'default' entry ({_first_line(e)})") from None
    return copy.deepcopy(entry)


def _scale_mapping(entry: dict[str, Any], old: Sequence[int], new: Sequence[int], dims: Sequence[str]) -> None:
    """Enlarge (in place) a fixed spatial mapping with the array: the first unrolling of each array dimension
    grows by the dimension's factor (rounded down, so the dimension is never over-filled)."""
    spatial = entry.get("spatial_mapping") or {}
    for dim, o, n in zip(dims, old, new):
        unrolls = spatial.get(dim)
        if unrolls:
            layer_dim, size = (s.strip() for s in str(unrolls[0]).split(","))
            unrolls[0] = f"{layer_dim}, {max(1, int(size) * n // o)}"


# --- running ZigZag -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ZigZag calls ``logging.basicConfig(level=INFO)`` and logs through the ``zigzag`` loggers: for the duration,
    give the root logger a handler if it has none (so basicConfig does nothing) and mute ``zigzag``."""
    root, zz = logging.getLogger(), logging.getLogger("zigzag")
    handlers, root_level, zz_level = list(root.handlers), root.level, zz.level
    null = logging.NullHandler()
    if not handlers:
        root.addHandler(null)
    zz.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
        root.setLevel(root_level)
        zz.setLevel(zz_level)


def _workload(specs: Sequence[LayerSpec], operand_bits: int, accumulator_bits: int) -> list[dict[str, Any]]:
    """ZigZag's list-of-layers workload; layers are named by index (a module named "default" or "Conv" would
    otherwise pick its own mapping entry)."""
    layers = []
    for i, s in enumerate(specs):
        iy, ix = s.input_hw
        layers.append({
            "id": i, "name": f"adderconv_layer_{i}", "operator_type": "Conv", "equation": _EQUATION,
            "dimension_relations": [f"ix={s.sx}*ox+{s.dx}*fx", f"iy={s.sy}*oy+{s.dy}*fy"],
            "loop_dims": ["B", "K", "G", "OX", "OY", "C", "FX", "FY"],
            "loop_sizes": [s.n, s.k // s.groups, s.groups, s.ox, s.oy, s.c // s.groups, s.fx, s.fy],
            # O: partial sums at the accumulator's width; O_final: the finished output, at the operands'
            "operand_precision": {"W": operand_bits, "I": operand_bits, "O": accumulator_bits,
                                  "O_final": operand_bits},
            "operand_source": {"W": i, "I": i},     # no edges: each layer stands alone (no inter-layer reuse)
            "pr_loop_dims": ["IX", "IY"], "pr_loop_sizes": [ix, iy],
            "padding": [[s.px, s.px], [s.py, s.py]],
        })
    return layers


@dataclass(frozen=True)
class _Mapped:
    """What ZigZag's search found for one layer geometry: everything but the compute price, which is ours."""

    macs: int
    memory_pj: dict[str, float]
    engine_compute_pj: float
    latency_cycles: float
    utilization: float
    spatial_utilization: float
    spatial_mapping: str


# setup (accelerator as run, mapping, search settings, widths) -> layer geometry -> its mapping. A search depends
# on neither the layer's name nor its unit's price, so a CNN and its adder net (the same geometries) share one
# search per accelerator, as do repeated layers and repeated calls in one process.
_SEARCHED: dict[tuple, dict[tuple, _Mapped]] = {}


def _memory_levels(cme: Any) -> dict[str, float]:
    energies: dict[str, float] = {}
    hierarchy = cme.accelerator.memory_hierarchy
    for layer_op, breakdown in cme.mem_energy_breakdown.items():
        mem_op = cme.memory_operand_links.layer_to_mem_op(layer_op)
        for level, pj in zip(hierarchy.get_memory_levels(mem_op=mem_op), breakdown):
            energies[level.name] = energies.get(level.name, 0.0) + float(pj)
    return energies


def _search(workload: list[dict[str, Any]], hw_file: Path, mapping_file: Path, objective: str, lpf_limit: int,
            spatial_mappings: int) -> list[Any]:
    """Each layer's chosen ``CostModelEvaluation``: the stages of ``zigzag.api.get_hardware_performance_zigzag`` (its
    defaults: LOMA, uneven temporal mappings, no inter-layer locality) without the three that only write files,
    one of which (``VisualizationStage``) fails on a layer with no temporal loop (all of it unrolled spatially)."""
    from zigzag.mapping.temporal_mapping import TemporalMappingType
    from zigzag.stages.evaluation.cost_model_evaluation import CostModelStage
    from zigzag.stages.main import MainStage
    from zigzag.stages.mapping.spatial_mapping_generation import SpatialMappingGeneratorStage
    from zigzag.stages.mapping.temporal_mapping_generator_stage import TemporalMappingGeneratorStage
    from zigzag.stages.parser.accelerator_parser import AcceleratorParserStage
    from zigzag.stages.parser.workload_parser import WorkloadParserStage
    from zigzag.stages.results.reduce_stages import MinimalEDPStage, MinimalEnergyStage, MinimalLatencyStage, SumStage
    from zigzag.stages.workload_iterator import WorkloadStage

    best = {"latency": MinimalLatencyStage, "energy": MinimalEnergyStage, "EDP": MinimalEDPStage}[objective]
    stages = [WorkloadParserStage, AcceleratorParserStage, SumStage, WorkloadStage, best,
              SpatialMappingGeneratorStage, best, TemporalMappingGeneratorStage, CostModelStage]
    main = MainStage(stages, accelerator=str(hw_file), workload=workload, mapping=str(mapping_file),
                     loma_lpf_limit=lpf_limit, loma_show_progress_bar=False, nb_mappings_generated=spatial_mappings,
                     enable_mix_spatial_mapping_generation=False, access_same_data_considered_as_no_access=True,
                     temporal_mapping_type=TemporalMappingType("uneven"))
    ((_, layers),) = main.run()      # SumStage yields one (total, [(cme, extra), ...])
    return [cme for cme, _ in layers]


def run_dataflow(specs: Sequence[LayerSpec], accelerator: str | Path, *, unit_pj: Mapping[str, float],
                 operand_bits: int = 8, accumulator_bits: int = 32, array_scale: float = 1.0, lpf_limit: int = 4,
                 spatial_mappings: int = 1, objective: str = "latency",
                 mapping: str | Path | None = None) -> DataflowResult:
    """Map ``specs`` onto ``accelerator`` with ZigZag's search and return each layer's energy per memory level,
    compute energy, latency and utilisation.

    ``unit_pj``: layer name -> the energy of one MAC-like operation of that layer (a MAC unit's for conv/linear,
    a SAD unit's for adder layers); the compute term is re-priced with it exactly (ZigZag's own is kept as
    ``engine_compute_pj``). ``operand_bits``: inputs, weights and finished outputs; ``accumulator_bits``: partial
    sums (ZigZag's ONNX path assumes 2 x the operands'). ``array_scale``: multiply the operational array's units by
    about this factor (same-area comparisons), spread evenly over its dimensions and rounded; the result says the
    actual factor. ``lpf_limit``: ZigZag's LOMA search depth (4 found the same ResNet-20 mappings as its default 6
    with far less work; below the number of temporal loops it has no effect). ``spatial_mappings``: how many
    spatial mappings ZigZag generates and searches where the mapping file leaves them open (its default is 3; 1
    takes its best-utilising candidate and about a third of the time: ResNet-20 on ``eyeriss_like`` in 31 instead
    of 67 CPU-seconds). ``objective``: what the search minimises per layer, ``latency`` (ZigZag's default),
    ``energy`` or ``EDP``; the unit energy is the same for every mapping of a layer, so re-pricing never changes
    the choice. ``mapping``: a ZigZag mapping YAML (default: the bundled one of a bundled accelerator, else ZigZag
    generates the spatial mapping). Layers of equal geometry are mapped once per process and setup (the search is
    the same; a CNN and its adder net share it), so ``seconds`` is the time of the searches this call ran.
    ZigZag writes no files (its inputs go to a temporary directory); its logging and progress bar are muted.
    """
    require_zigzag()
    import yaml

    if not specs:
        raise AdderconvError("no conv, linear or adder layer to map")
    missing = [s.name for s in specs if s.name not in unit_pj]
    if missing:
        raise AdderconvError(f"no unit energy for layer {missing[0]!r} (unit_pj maps layer names to pJ)")
    for label, bits in (("operand_bits", operand_bits), ("accumulator_bits", accumulator_bits)):
        if not isinstance(bits, int) or bits < 1:
            raise AdderconvError(f"`{label}` must be a positive number of bits, got {bits!r}")
    if not (isinstance(array_scale, (int, float)) and math.isfinite(array_scale) and array_scale > 0):
        raise AdderconvError(f"`array_scale` must be a positive factor, got {array_scale!r}")
    for label, value in (("lpf_limit", lpf_limit), ("spatial_mappings", spatial_mappings)):
        if not isinstance(value, int) or value < 1:
            raise AdderconvError(f"`{label}` must be a positive integer, got {value!r}")
    if objective not in OBJECTIVES:
        raise AdderconvError(f"`objective` must be one of {', '.join(OBJECTIVES)}, got {objective!r}")

    path = _locate(accelerator)
    hw = _parse_accelerator(path)
    array = hw["operational_array"]
    engine_unit = float(array["unit_energy"])
    dims, sizes = [str(d) for d in array["dimensions"]], [int(s) for s in array["sizes"]]
    notes = _widen_memories(hw, operand_bits, accumulator_bits)
    new_sizes = _scaled_sizes(sizes, array_scale) if array_scale != 1 else tuple(sizes)
    entry = _mapping_entry(path, mapping)
    if entry is None:
        entry = {"memory_operand_links": dict(_LINKS)}
    if tuple(new_sizes) != tuple(sizes):
        array["sizes"] = list(new_sizes)
        _scale_mapping(entry, sizes, new_sizes, dims)
        notes.append(f"operational array {'x'.join(map(str, sizes))} -> {'x'.join(map(str, new_sizes))} "
                     f"({math.prod(new_sizes) / math.prod(sizes):.3g}x the units; asked {array_scale:.3g}x)")
    entry["name"] = "default"   # the one entry: our layers' names never select another

    hw_text = yaml.safe_dump(hw, sort_keys=False)      # key order = memory order
    mapping_text = yaml.safe_dump([entry], sort_keys=False)
    known = _SEARCHED.setdefault((hw_text, mapping_text, objective, lpf_limit, spatial_mappings, operand_bits,
                                  accumulator_bits), {})
    todo = list({s.geometry(): s for s in specs if s.geometry() not in known}.values())   # each geometry once

    levels = list(hw["memories"])
    start = time.perf_counter()
    if todo:
        with tempfile.TemporaryDirectory(prefix="adderconv-zigzag-") as tmp, _quiet():
            hw_file, mapping_file = Path(tmp) / "accelerator.yaml", Path(tmp) / "mapping.yaml"
            hw_file.write_text(hw_text, encoding="utf-8")
            mapping_file.write_text(mapping_text, encoding="utf-8")
            try:
                cmes = _search(_workload(todo, operand_bits, accumulator_bits), hw_file, mapping_file, objective,
                               lpf_limit, spatial_mappings)
            except Exception as e:   # noqa: BLE001  (ZigZag's failures name its own terms: one line, ours)
                raise AdderconvError(f"ZigZag found no mapping on {path.stem} ({_first_line(e)})") from None
        for cme in cmes:
            memory = {level: 0.0 for level in levels}
            memory.update(_memory_levels(cme))
            known[todo[cme.layer.id].geometry()] = _Mapped(
                int(cme.layer.total_mac_count), memory, float(cme.mac_energy), float(cme.latency_total2),
                float(cme.mac_utilization2), float(cme.mac_spatial_utilization), str(cme.layer.spatial_mapping))
    seconds = time.perf_counter() - start

    layers = []
    for s in specs:
        m = known[s.geometry()]
        if m.macs != s.macs:    # our count and ZigZag's loops must describe one layer
            raise RuntimeError(f"ZigZag counts {m.macs} MACs for {s.name!r}, we count {s.macs}")
        layers.append(LayerDataflow(
            name=s.name, op=s.op, macs=s.macs, compute_pj=s.macs * float(unit_pj[s.name]),
            engine_compute_pj=m.engine_compute_pj, memory_pj=dict(m.memory_pj), latency_cycles=m.latency_cycles,
            utilization=m.utilization, spatial_utilization=m.spatial_utilization, spatial_mapping=m.spatial_mapping))
    return DataflowResult(accelerator=str(accelerator), layers=layers, seconds=seconds, operand_bits=operand_bits,
                          accumulator_bits=accumulator_bits, array_scale=math.prod(new_sizes) / math.prod(sizes),
                          array_sizes=tuple(new_sizes), engine_unit_pj=engine_unit, lpf_limit=lpf_limit,
                          notes=tuple(notes))
