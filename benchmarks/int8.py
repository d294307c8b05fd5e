"""int8 adder inference: whole nets and layers against fp32 (oneDNN) and torch.ao int8 convolution; accuracy.

Parts (``--only``):
- ``nets``: ResNet-20 forward time of the fp32 CNN (oneDNN), the int8 CNN from torch.ao (x86 backend, FX graph
  mode, calibrated), the fp32 adder net and the int8 adder net (``adderconv.quantize``); batch 1 and 64, each
  thread count of ``--threads``. Min over interleaved rounds in one process; ratios are to the fp32 CNN.
- ``layers``: one layer at every ResNet-20 shape and at ResNet-50 shapes: the int8 adder op (uint8 codes in,
  requantised uint8 out) vs torch.ao's quantized conv (quint8 channels-last in and out) vs fp32 conv.
  ``--onednn-caps`` repeats it in child processes with oneDNN capped at AVX512_CORE_VNNI (no AMX) and at AVX2
  (no VNNI; the adder kernel forced to its AVX2 path too), to show the ratios on CPUs without those units.
- ``accuracy``: digits (LeNet-5-BN CNN trained, converted with KD, as benchmarks/accuracy.py) and the SR
  benchmark net (SRNet 16 ch, 3 blocks, 30 epochs, as benchmarks/accuracy.py), float vs int8 on the test split,
  calibrated on the training split.

Prints tables, writes JSON (adderconv.io.write_json); asserts nothing.

    OMP_NUM_THREADS=1 python benchmarks/int8.py --json benchmarks/results/int8.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from adderconv import get_model, quantize
from adderconv.io import write_json
from adderconv.kernels import int8
from adderconv.kernels.benchmark import RESNET20_LAYERS, RESNET50_LAYERS, LayerShape, machine
from adderconv.quant.op import adder_conv2d_int8

_FLAGS = ("sse2", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimd")
_ALLOCATOR = "default"
R20_ALL = RESNET20_LAYERS + [LayerShape("r20 16->32 1x1 @32/2", 16, 32, 32, 2, 1),
                             LayerShape("r20 32->64 1x1 @16/2", 32, 64, 16, 2, 1)]


def pin_allocator() -> str:
    """Fix glibc malloc's mmap and trim thresholds (256 MB / 1 GB) so every model meets the same allocator.

    glibc moves its mmap threshold up each time a large mmapped block is freed; until it has, every block over
    128 kB (a batch-64 activation is 4 MB) is a fresh mmap that page-faults on first touch. Which models ran
    before decides it, so the fp32 CNN measured 57 ms or 80 ms in one session depending on the other models in
    the process. Returns what it did (recorded with the machine)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(-3, 256 << 20) and libc.mallopt(-1, 1 << 30)   # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    except (OSError, AttributeError, TypeError):
        ok = 0
    return "glibc mmap threshold 256 MB, trim threshold 1 GB" if ok else "not pinned (no glibc mallopt)"


def cpu_info() -> dict:
    info = machine()
    try:
        flags = next(ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo")
                     if ln.startswith(("flags", "Features")))
    except (OSError, StopIteration):
        flags = []
    info["vector_extensions"] = [f for f in _FLAGS if f in flags]
    info["int8_adder_path"] = int8.isa_name()
    info["onednn_max_cpu_isa"] = os.environ.get("ONEDNN_MAX_CPU_ISA", "(not capped)")
    info["quantized_engine"] = torch.backends.quantized.engine
    info["allocator"] = _ALLOCATOR
    return info


def timed(fns: dict[str, Callable[[], object]], rounds: int, budget: float = 0.25) -> dict[str, float]:
    """ms per call of each function: warm up, then ``rounds`` interleaved rounds, minimum kept."""
    reps = {}
    for name, f in fns.items():
        f()
        t = time.perf_counter()
        f()
        reps[name] = max(1, int(budget / max(time.perf_counter() - t, 1e-6)))
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t = time.perf_counter()
            for _ in range(reps[name]):
                f()
            best[name] = min(best[name], (time.perf_counter() - t) / reps[name] * 1e3)
    return best


def with_bn_stats(net: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Real BatchNorm statistics for a random net (random ones zero every ReLU: a meaningless timing input)."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(32, *shape))
    return net.eval()


def ao_int8(cnn: nn.Module, calib: list[torch.Tensor]) -> nn.Module:
    """torch.ao's int8 CNN: FX graph mode, x86 backend qconfig, calibrated on ``calib``."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    prepared = prepare_fx(copy.deepcopy(cnn).eval(), get_default_qconfig_mapping("x86"), (calib[0],))
    with torch.no_grad():
        for x in calib:
            prepared(x)
    return convert_fx(prepared)


def nets(threads: list[int], batches: list[int], rounds: int) -> list[dict]:
    torch.manual_seed(0)
    calib = [torch.randn(32, 3, 32, 32) for _ in range(2)]
    cnn = with_bn_stats(get_model("resnet20"), (3, 32, 32))
    adder = with_bn_stats(get_model("resnet20_adder"), (3, 32, 32))
    models = {"fp32 CNN (oneDNN)": cnn, "int8 CNN (torch.ao x86, FX)": ao_int8(cnn, calib),
              "fp32 adder": adder, "int8 adder": quantize(adder, calib)}
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for b in batches:
            x = torch.randn(b, 3, 32, 32)
            with torch.no_grad():
                ms = timed({k: (lambda m=m, x=x: m(x)) for k, m in models.items()}, rounds)
            base = ms["fp32 CNN (oneDNN)"]
            rows.append({"threads": t, "batch": b, "ms": ms, "vs_fp32_cnn": {k: v / base for k, v in ms.items()},
                         "int8_adder_vs_int8_cnn": ms["int8 adder"] / ms["int8 CNN (torch.ao x86, FX)"]})
    return rows


def layer_calls(s: LayerShape, batch: int) -> dict[str, Callable[[], object]]:
    import torch.ao.nn.quantized as nnq

    gen = torch.Generator().manual_seed(0)
    pad = s.kernel // 2
    ho = (s.size + 2 * pad - s.kernel) // s.stride + 1
    xq = torch.randint(0, 256, (batch, s.size, s.size, s.c_in), dtype=torch.uint8, generator=gen)
    wq = torch.randint(0, 256, (s.c_out, s.c_in, s.kernel, s.kernel), dtype=torch.uint8, generator=gen)
    a = torch.full((s.c_out,), 255.0 / (s.c_in * s.kernel ** 2 * 128))
    b = torch.full((s.c_out,), 10.0)
    conv = nn.Conv2d(s.c_in, s.c_out, s.kernel, s.stride, pad, bias=False).eval()
    xf = torch.randn(batch, s.c_in, s.size, s.size)
    with torch.no_grad():
        conv(xf)
    qconv = nnq.Conv2d(s.c_in, s.c_out, s.kernel, s.stride, pad, bias=False)
    qconv.set_weight_bias(torch.quantize_per_tensor(torch.randn(s.c_out, s.c_in, s.kernel, s.kernel), 0.05, 0,
                                                    torch.qint8), None)
    qconv.scale, qconv.zero_point = 0.1, 64
    qx = torch.quantize_per_tensor(torch.rand(batch, s.c_in, s.size, s.size), 1 / 255, 0, torch.quint8)
    qx = qx.contiguous(memory_format=torch.channels_last)
    assert ho > 0
    return {"int8 adder": lambda: adder_conv2d_int8(xq, wq, 128, s.stride, pad, 1, 1, a, b, "uint8"),
            "int8 conv (torch.ao)": lambda: qconv(qx),
            "fp32 conv (oneDNN)": lambda: conv(xf)}


def layers(batch20: int, batch50: int, rounds: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    torch.backends.quantized.engine = "x86"
    rows = []
    for net, shapes, batch in (("resnet20", R20_ALL, batch20), ("resnet50", RESNET50_LAYERS, batch50)):
        for s in shapes:
            with torch.no_grad():
                ms = timed(layer_calls(s, batch), rounds, budget=0.15)
            rows.append({"net": net, "layer": s.name, "batch": batch, "threads": threads, "ms": ms,
                         "adder_vs_ao_int8": ms["int8 adder"] / ms["int8 conv (torch.ao)"],
                         "adder_vs_fp32": ms["int8 adder"] / ms["fp32 conv (oneDNN)"]})
    return rows


def capped_layers(args) -> dict:
    """The layer table in child processes with oneDNN capped (no AMX; no VNNI), each side by side in itself."""
    out = {}
    for cap, adder_isa in (("AVX512_CORE_VNNI", None), ("AVX2", "avx2")):
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA=cap)
        if adder_isa:
            env["ADDERCONV_INT8_ISA"] = adder_isa
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "child.json"
            cmd = [sys.executable, __file__, "--only", "layers", "--layer-threads", str(args.layer_threads),
                   "--rounds", str(args.rounds), "--batch50", str(args.batch50), "--json", str(path), "--child"]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            out[cap] = json.loads(path.read_text())
    return out


def accuracy(digits_epochs: int, sr_epochs: int, sr_limit: int, calib_batches: int) -> dict:
    """Float vs int8 on the test split; calibration: ``calib_batches`` training batches, 99.99th percentile."""
    from adderconv.converters import Policy, convert
    from adderconv.data import evaluate, load_data, loader
    from adderconv.training import finetune
    from adderconv.zoo.sr_net import SRNet

    torch.set_num_threads(1)
    rows = []
    cpu = torch.device("cpu")

    def compare(name: str, model: nn.Module, data, metric: str, batch: int, train_s: float) -> None:
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        calib = loader(data.train, order[:calib_batches * batch], batch)
        row = {"model": name, "metric": metric, "train_seconds": train_s}
        for method in ("minmax", "percentile", "mse"):
            q = quantize(model, calib, method=method)
            row[method] = evaluate(q, data.test, data.task, 64, cpu)[metric]
            row["calibration_" + method] = q.adderconv_quant.describe_calibration()
            row["int8_layers"] = len(q.adderconv_quant.layers)
        row["float"] = evaluate(model, data.test, data.task, 64, cpu)[metric]
        rows.append(row)

    data = load_data("digits", (1, 32, 32), split_seed=0)
    common = dict(batch_size=64, seed=0, energy=False, log=None)
    torch.manual_seed(0)
    t = time.perf_counter()
    cnn = finetune(get_model("lenet5_bn"), data, epochs=digits_epochs, lr=0.1, **common).model.eval()
    student = convert(cnn, Policy(convert_linear=True, weight_init="copy_rescaled"),
                      example_inputs=(torch.zeros(1, 1, 32, 32),))
    student = finetune(student, data, teacher=cnn, epochs=digits_epochs, lr=0.1, **common).model.eval()
    compare("digits: LeNet-5-BN converted + KD (conv2, fc1, fc2 adder)", student, data, "acc", 64,
            time.perf_counter() - t)

    data = load_data("sr:skimage", (1, 32, 32), split_seed=0, limit=sr_limit)
    torch.manual_seed(0)
    net = SRNet(channels=16, blocks=3, adder=True)
    nn.init.zeros_(net.tail.weight)
    nn.init.zeros_(net.tail.bias)
    t = time.perf_counter()
    net = finetune(net, data, epochs=sr_epochs, optimizer="adam", lr=2e-3, adder_lr_scale=50.0, weight_decay=0.0,
                   batch_size=32, seed=0, energy=False, log=None).model.eval()
    compare("SR x2: SRNet 16 ch, 3 AdderSR blocks (30 epochs)", net, data, "psnr", 32, time.perf_counter() - t)
    return {"rows": rows, "settings": {"calibration": f"{calib_batches} training batches",
                                       "digits_epochs": digits_epochs, "sr_epochs": sr_epochs, "sr_limit": sr_limit}}


def _fmt_ms(ms: dict[str, float]) -> str:
    return " | ".join(f"{v:.2f}" for v in ms.values())


def render(result: dict) -> str:
    lines = [f"CPU: {result['machine']['cpu']}; extensions: {', '.join(result['machine']['vector_extensions'])}; "
             f"int8 adder path: {result['machine']['int8_adder_path']}; torch {result['machine']['torch']}; "
             f"load average {result['machine'].get('load_average')}; allocator: {result['machine']['allocator']}"]
    if "nets" in result:
        names = list(result["nets"][0]["ms"])
        lines += ["", "| threads | batch | " + " | ".join(f"{n} ms" for n in names) + " | int8 adder / fp32 CNN | "
                  "int8 adder / int8 CNN |", "|---:|---:|" + "---:|" * (len(names) + 2)]
        for r in result["nets"]:
            lines.append(f"| {r['threads']} | {r['batch']} | {_fmt_ms(r['ms'])} | "
                         f"{r['vs_fp32_cnn']['int8 adder']:.2f} | {r['int8_adder_vs_int8_cnn']:.2f} |")
    tables = [("this CPU", result.get("layers"))] + [(f"oneDNN capped at {k}", v.get("layers"))
                                                       for k, v in result.get("capped", {}).items()]
    for title, rows in tables:
        if not rows:
            continue
        names = list(rows[0]["ms"])
        lines += ["", f"layers, {title} ({rows[0]['threads']} thread(s))", "",
                  "| layer | batch | " + " | ".join(f"{n} ms" for n in names) + " | adder / torch.ao int8 | "
                  "adder / fp32 conv |", "|---|---:|" + "---:|" * (len(names) + 2)]
        for r in rows:
            lines.append(f"| {r['layer']} | {r['batch']} | {_fmt_ms(r['ms'])} | {r['adder_vs_ao_int8']:.2f} | "
                         f"{r['adder_vs_fp32']:.2f} |")
    if "accuracy" in result:
        lines += ["", "| model | float | int8 minmax | int8 percentile | int8 mse |", "|---|---:|---:|---:|---:|"]
        for r in result["accuracy"]["rows"]:
            f = (lambda v: f"{v:.2f} dB") if r["metric"] == "psnr" else (lambda v: f"{100 * v:.2f}%")
            lines.append(f"| {r['model']} | {f(r['float'])} | {f(r['minmax'])} | {f(r['percentile'])} | "
                         f"{f(r['mse'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=["nets", "layers", "accuracy"],
                    choices=["nets", "layers", "accuracy"])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="thread counts for the nets part")
    ap.add_argument("--layer-threads", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    ap.add_argument("--batch50", type=int, default=8, help="ResNet-50 layer batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--onednn-caps", action="store_true", help="also the layer table with oneDNN capped")
    ap.add_argument("--digits-epochs", type=int, default=15)
    ap.add_argument("--sr-epochs", type=int, default=30)
    ap.add_argument("--sr-limit", type=int, default=4096)
    ap.add_argument("--calib-batches", type=int, default=8)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--default-allocator", action="store_true",
                    help="leave glibc malloc's thresholds as they are (see pin_allocator)")
    args = ap.parse_args(argv)
    global _ALLOCATOR
    _ALLOCATOR = "default (not pinned)" if args.default_allocator else pin_allocator()
    result: dict = {"benchmark": "int8", "machine": cpu_info()}
    if "nets" in args.only:
        result["nets"] = nets(args.threads, args.batches, args.rounds)
    if "layers" in args.only:
        result["layers"] = layers(64, args.batch50, args.rounds, args.layer_threads)
        if args.onednn_caps:
            result["capped"] = capped_layers(args)
    if "accuracy" in args.only:
        result["accuracy"] = accuracy(args.digits_epochs, args.sr_epochs, args.sr_limit, args.calib_batches)
    result["machine"] = cpu_info()
    if not args.child:
        print(render(result))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
