"""Kernel benchmark: the adder op vs AdderNet's reference unfold formulation vs ``nn.Conv2d``, per layer shape.

Times forward and forward+backward of (a) ``adderconv.adder_conv2d`` (whatever backend serves the device),
(b) the reference unfold formulation, written out from its definition (AdderNet's reference code builds the
``C_out x C_in*k*k x N*L`` difference tensor), and (c) ``F.conv2d``, all interleaved round by round in one
process so that the ratios to convolution compare like with like on a noisy machine (each figure is the
minimum over the rounds). Peak memory of each call is measured in a child process (see :func:`peak_memory`).
Besides the minimum wall time, each row keeps the minimum CPU time of the process (all threads): on a
machine shared with other jobs the wall-time minimum can still include preemption, the CPU time does not
(it does include OpenMP threads spinning at barriers). Compute code here returns rows; :func:`render` only
formats them. ``adderconv bench`` and ``benchmarks/kernels.py`` are one function, :func:`bench` (options in,
tables printed per net as they finish, the JSON record out).

>>> rows = run(layers=[LayerShape("tiny", 8, 8, 8, 1)], batch=2, rounds=1, memory=False)  # doctest: +SKIP
>>> bench(BenchOptions(nets=("resnet20",), rounds=1, memory=False))                       # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..choices import BENCH_NETS
from ..errors import AdderconvError, check_choice

__all__ = ["LayerShape", "RESNET20_LAYERS", "RESNET50_LAYERS", "NETS", "reference_unfold", "run", "render", "machine",
           "suite", "BenchOptions", "bench", "run_bench"]

IMPLS = ("adder", "reference_unfold", "conv")
# The reference materialises O x J x N*L floats several times over (difference, abs, and in backward their
# gradients); above this many bytes for one such tensor it runs at a smaller batch and its time is scaled.
REFERENCE_CAP_BYTES = 1 << 29


@dataclass(frozen=True)
class LayerShape:
    name: str
    c_in: int
    c_out: int
    size: int           # input height = width
    stride: int
    kernel: int = 3

    @property
    def padding(self) -> int:
        return self.kernel // 2


# ResNet-20's distinct 3x3 layers on 32x32 CIFAR inputs.
RESNET20_LAYERS = [LayerShape("r20 16->16 @32", 16, 16, 32, 1), LayerShape("r20 16->32 @32/2", 16, 32, 32, 2),
                   LayerShape("r20 32->32 @16", 32, 32, 16, 1), LayerShape("r20 32->64 @16/2", 32, 64, 16, 2),
                   LayerShape("r20 64->64 @8", 64, 64, 8, 1)]
# ResNet-50's bottleneck layers at 224x224 (a representative 3x3 and 1x1 per stage).
RESNET50_LAYERS = [LayerShape("r50 64->64 3x3 @56", 64, 64, 56, 1),
                   LayerShape("r50 256->64 1x1 @56", 256, 64, 56, 1, 1),
                   LayerShape("r50 128->128 3x3 @28", 128, 128, 28, 1),
                   LayerShape("r50 256->256 3x3 @14", 256, 256, 14, 1),
                   LayerShape("r50 512->512 3x3 @7", 512, 512, 7, 1),
                   LayerShape("r50 512->2048 1x1 @7", 512, 2048, 7, 1, 1)]


NETS = dict(zip(BENCH_NETS, (RESNET20_LAYERS, RESNET50_LAYERS)))


@dataclass(kw_only=True)   # built by keyword: reordering fields can never mis-wire two flags
class BenchOptions:
    nets: tuple[str, ...] = BENCH_NETS   # layer sets (:data:`NETS`), in this order
    batch: int = 64                      # ResNet-20's batch
    batch50: int = 8                     # ResNet-50's (a smaller one keeps the run to minutes on 2 cores)
    threads: int = 2
    rounds: int = 5                      # interleaved timing rounds; the minimum is kept
    memory: bool = True                  # peak memory too (one child process per call)
    json_path: str | None = None

    def batches(self) -> dict[str, int]:
        """{net: batch} for the chosen nets, each checked against :data:`NETS`."""
        sizes = {"resnet20": self.batch, "resnet50": self.batch50}
        return {check_choice("nets", n, BENCH_NETS, "layer set"): sizes[n] for n in self.nets}


def reference_unfold(x: Tensor, w: Tensor, stride: int, padding: int) -> Tensor:
    """AdderNet's reference formulation: unfold, then the full (O, J, N*L) difference tensor, abs, sum."""
    n, o = x.shape[0], w.shape[0]
    cols = F.unfold(x, w.shape[-2:], padding=padding, stride=stride)            # (N, J, L)
    L = cols.shape[-1]
    cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)                       # (J, N*L)
    out = -(cols.unsqueeze(0) - w.reshape(o, -1, 1)).abs().sum(1)                # (O, N*L)
    hw = int(round(L ** 0.5))
    return out.view(o, n, hw, hw).transpose(0, 1)


def _reference_batch(s: LayerShape, batch: int) -> int:
    out = (s.size + 2 * s.padding - s.kernel) // s.stride + 1
    per_sample = s.c_out * s.c_in * s.kernel ** 2 * out * out * 4
    return max(1, min(batch, REFERENCE_CAP_BYTES // per_sample))


def _calls(impl: str, s: LayerShape, batch: int) -> tuple[Callable[[], None], Callable[[], None]]:
    from adderconv import adder_conv2d

    x = torch.randn(batch, s.c_in, s.size, s.size)
    w = torch.randn(s.c_out, s.c_in, s.kernel, s.kernel) * 0.1
    f = {"adder": lambda a, b: adder_conv2d(a, b, s.stride, s.padding),
         "conv": lambda a, b: F.conv2d(a, b, stride=s.stride, padding=s.padding),
         "reference_unfold": lambda a, b: reference_unfold(a, b, s.stride, s.padding)}[impl]
    xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    grad = torch.randn_like(f(x, w))

    def fwd() -> None:
        with torch.no_grad():
            f(x, w)

    def fwd_bwd() -> None:
        xg.grad = wg.grad = None
        f(xg, wg).backward(grad)

    return fwd, fwd_bwd


def _time(fn: Callable[[], None]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def peak_memory(impl: str, s: LayerShape, batch: int, backward: bool) -> float:
    """Peak extra RSS (MiB) of one call, in a fresh child process (peak during the call minus RSS before).

    The call runs once first (one-time costs such as oneDNN's JIT-compiled kernels are not per call), then
    the peak of the second call is measured, as a training step would see it.

    glibc's malloc is pinned to mmap large blocks (``MALLOC_MMAP_THRESHOLD_``), so freed temporaries go back
    to the OS and the figure is the call's own footprint, not what earlier work left cached.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    spec = json.dumps({"impl": impl, "shape": asdict(s), "batch": batch, "backward": backward})
    out = subprocess.run([sys.executable, "-m", "adderconv.kernels.benchmark", "--child", spec], env=env,
                         capture_output=True, text=True)
    if out.returncode:
        return float("nan")   # e.g. killed for memory: shown as nan, never hidden
    return float(out.stdout.strip().splitlines()[-1])


def _child(spec: str) -> None:
    torch.set_num_threads(int(os.environ.get("ADDERCONV_BENCH_THREADS", "2")))
    d = json.loads(spec)
    s = LayerShape(**d["shape"])
    fwd, fwd_bwd = _calls(d["impl"], s, d["batch"])
    call = fwd_bwd if d["backward"] else fwd
    call()   # warm-up at the same shape: one-time costs (oneDNN's JIT kernels, lazy init) are not per call
    status = lambda key: int(next(ln.split()[1] for ln in open("/proc/self/status") if ln.startswith(key)))  # noqa: E731
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:   # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
        f.write("5")
    call()
    peak = status("VmHWM:")
    print((peak - before) / 1024)


def machine() -> dict:
    """CPU model and thread count, from lscpu's source (/proc/cpuinfo)."""
    model = "unknown"
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        import platform
        model = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": model, "logical_cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "load_average": round(load, 1) if load is not None else None}


def run(layers: list[LayerShape], batch: int, rounds: int = 5, memory: bool = True,
        impls: tuple[str, ...] = IMPLS) -> list[dict]:
    """One row per (layer, pass): ms per call of each impl (min over interleaved rounds), ratios, MiB."""
    rows = []
    for s in layers:
        ref_batch = _reference_batch(s, batch)
        calls = {i: _calls(i, s, ref_batch if i == "reference_unfold" else batch) for i in impls}
        for k, name in enumerate(("fwd", "fwd+bwd")):
            wall = {i: float("inf") for i in impls}
            cpu = dict(wall)
            for i in impls:
                calls[i][k]()   # warm-up (first call builds the C++ kernels, allocator pools, ...)
            for _ in range(rounds):
                for i in impls:
                    w, c = _time(calls[i][k])
                    wall[i], cpu[i] = min(wall[i], w), min(cpu[i], c)
            scale = {i: 1e3 * (batch / ref_batch if i == "reference_unfold" else 1) for i in impls}
            row = {"layer": s.name, "pass": name, "batch": batch,
                   "reference_batch": ref_batch if "reference_unfold" in impls else None,
                   **{f"{i}_ms": round(wall[i] * scale[i], 3) for i in impls},
                   **{f"{i}_cpu_ms": round(cpu[i] * scale[i], 3) for i in impls}}
            for i in impls:
                if i != "conv" and "conv" in impls:
                    row[f"{i}_over_conv"] = round(wall[i] * scale[i] / (wall["conv"] * scale["conv"]), 2)
                    row[f"{i}_over_conv_cpu"] = round(cpu[i] * scale[i] / (cpu["conv"] * scale["conv"]), 2)
            if memory:
                for i in impls:
                    row[f"{i}_mib"] = round(peak_memory(i, s, ref_batch if i == "reference_unfold" else batch,
                                                        k == 1), 1)
            rows.append(row)
    return rows


def suite(nets: dict[str, int], rounds: int = 5, memory: bool = True, threads: int = 2):
    """Yield ``(net, rows)`` for each ``{net name: batch}``; the caller renders and saves (see ``adderconv bench``)."""
    bad = [f"{k} {v}" for k, v in (("threads", threads), ("rounds", rounds), *nets.items()) if v < 1]
    if bad:
        raise AdderconvError(f"thread count, rounds and batch sizes must be at least 1, got {', '.join(bad)}")
    torch.set_num_threads(threads)
    os.environ["ADDERCONV_BENCH_THREADS"] = str(threads)   # the memory children use the same thread count
    for net, batch in nets.items():
        yield net, run(NETS[check_choice("nets", net, BENCH_NETS, "layer set")], batch, rounds=rounds, memory=memory)


def bench(opts: BenchOptions, out: Any = None) -> dict:
    """Run :func:`suite` for ``opts``, print each net's table as it finishes (to ``out``, an
    :class:`adderconv.output.Output`; None: stdout), write ``json_path``; return the JSON record."""
    from ..kernels import backend_for
    from ..output import Output

    out = Output.of(out)
    nets = opts.batches()   # every option checked before the first timing
    result: dict = {"benchmark": "kernels", "machine": None, "tables": {}}
    for net, rows in suite(nets, rounds=opts.rounds, memory=opts.memory, threads=opts.threads):
        result["machine"] = machine() | {"backend": backend_for(torch.empty(1)).__name__}
        result["tables"][net] = rows
        out.line(f"\n{net} (backend {result['machine']['backend']})\n" + render(rows, result["machine"]))
    if opts.json_path:
        from ..io import write_json

        write_json(opts.json_path, result)
    return result


def run_bench(opts: BenchOptions, out: Any = None) -> int:
    """``adderconv bench``: :func:`bench`; the exit code (a benchmark never fails on its numbers)."""
    bench(opts, out)
    return 0


def render(rows: list[dict], info: dict) -> str:
    """A Markdown table of :func:`run`'s rows."""
    impls = [i for i in IMPLS if rows and f"{i}_ms" in rows[0]]
    mem = bool(rows) and f"{impls[0]}_mib" in rows[0]
    head = (["layer", "pass"] + [f"{i} ms" for i in impls] + [f"{i}/conv" for i in impls if i != "conv"]
            + [f"{i}/conv cpu-time" for i in impls if i != "conv"])
    if mem:
        head += [f"{i} MiB" for i in impls] + ["adder/conv mem"]
    lines = [f"CPU: {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['threads']} threads, "
             f"torch {info['torch']}, batch {rows[0]['batch'] if rows else '-'}, "
             f"load average {info.get('load_average', '?')}; ms = minimum wall time over the rounds",
             "| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for r in rows:
        ref_note = "*" if r.get("reference_batch") not in (None, r["batch"]) else ""
        cells = [r["layer"], r["pass"]] + [f"{r[f'{i}_ms']:.2f}" + (ref_note if i == "reference_unfold" else "")
                                           for i in impls]
        cells += [f"{r[f'{i}_over_conv']:.2f}" for i in impls if i != "conv" and f"{i}_over_conv" in r]
        cells += [f"{r[f'{i}_over_conv_cpu']:.2f}" for i in impls if i != "conv" and f"{i}_over_conv_cpu" in r]
        if mem:
            cells += [f"{r[f'{i}_mib']:.1f}" + (ref_note if i == "reference_unfold" else "") for i in impls]
            conv_mib = r.get("conv_mib") or float("nan")
            cells.append(f"{r['adder_mib'] / conv_mib:.2f}" if conv_mib == conv_mib and conv_mib > 0 else "-")
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("reference_batch") not in (None, r["batch"]) for r in rows):
        lines.append("\n\\* reference unfold run at a smaller batch to stay under "
                     f"{REFERENCE_CAP_BYTES >> 20} MiB per difference tensor (see `reference_batch` in the JSON); "
                     "its time is scaled linearly to the full batch, its memory is at that smaller batch.")
    return "\n".join(lines)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(sys.argv[2])
