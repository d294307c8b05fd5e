"""onnxruntime time of exported models vs PyTorch's time for the same model, side by side (CPU, inference).

Each model is exported with ``adderconv.converters.onnx_export`` (the adder layers become
``ai.adderconv::AdderConv2d`` nodes whose functions onnxruntime inlines into Slice/Sub/ReduceL1/Sum), then
PyTorch (eval, no_grad) and onnxruntime run the same inputs alternately, so load on the machine hits both
alike. Reported: median milliseconds per forward, and the ratio onnxruntime / PyTorch. One thread each by
default: on a loaded machine two OpenMP threads wait on each other at every barrier and PyTorch's figures
swing by 10-100x; pass ``--threads 2`` on a quiet one. The CNN ResNet-20 is
timed beside the adder one for scale (its Conv runs in both runtimes' tuned kernels). Never asserts.

    python benchmarks/onnx_runtime.py --threads 1 --batches 1,32 --json benchmarks/results/onnx_runtime.json
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

import adderconv
from adderconv.converters.onnx_export import export_onnx
from adderconv.io import write_json


def _median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_model(name: str, batches: list[int], threads: int, reps: int, workdir: Path) -> list[dict]:
    torch.manual_seed(0)
    model = adderconv.get_model(name).eval()
    shape = adderconv.default_input_shape(name)
    path = workdir / f"{name}.onnx"
    export_onnx(model, path, shape)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    # onnxruntime's idle workers spin by default and would steal the cores PyTorch runs on next
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t = time.perf_counter()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t) * 1e3
    input_name = session.get_inputs()[0].name
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape[1:])
        xn = x.numpy()

        def run_torch(x=x):
            with torch.no_grad():
                model(x)

        def run_ort(xn=xn):
            session.run(None, {input_name: xn})

        run_torch(), run_ort()                                   # warm-up (lazy init, allocations)
        torch_ms, ort_ms = [], []
        for _ in range(3):                                       # alternate, so noise hits both
            torch_ms.append(_median_ms(run_torch, reps))
            ort_ms.append(_median_ms(run_ort, reps))
        row = {"model": name, "batch": batch, "pytorch_ms": min(torch_ms), "onnxruntime_ms": min(ort_ms),
               "onnxruntime_session_ms": load_ms}
        row["ratio_ort_over_torch"] = row["onnxruntime_ms"] / row["pytorch_ms"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20_adder,resnet20")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            rows += bench_model(name, batches, args.threads, args.reps, Path(tmp))
    result = {"benchmark": "onnx_runtime", "threads": args.threads, "machine": platform.machine(),
              "processor": platform.processor(), "python": sys.version.split()[0], "torch": torch.__version__,
              "onnxruntime": ort.__version__, "kernel": adderconv.kernels.backend_for(torch.empty(1)).__name__,
              "rows": rows}
    print(f"{'model':16s} {'batch':>5s} {'PyTorch ms':>11s} {'onnxruntime ms':>15s} {'ort/torch':>10s}")
    for r in rows:
        print(f"{r['model']:16s} {r['batch']:5d} {r['pytorch_ms']:11.2f} {r['onnxruntime_ms']:15.2f} "
              f"{r['ratio_ort_over_torch']:10.2f}")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
