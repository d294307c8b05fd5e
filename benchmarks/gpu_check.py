"""One prepared GPU run: check the Triton adder kernels against the float64 reference, then time them.

Checks (forward, clipped dX, full-precision dW; float32, float16, bfloat16; groups, stride, dilation,
padding) the Triton kernels directly and through the op (which must select them for CUDA tensors), then times
forward and forward+backward at ResNet-20 (and, unless --quick, ResNet-50) layer shapes for:
ours float32, ours bfloat16, cuDNN float32 with TF32 off, cuDNN with TF32, cuDNN bfloat16, and the reference
unfold formulation (float32; its batch is capped to fit, time scaled). Prints a table and writes JSON (to
--json, or $OUT/gpu_check.json when $OUT is set). Exits 1 if a correctness check fails; times are never
asserted. Then training: ResNet-20 CNN vs AdderNet training steps under AMP (bf16), interleaved (images/s and
adder/CNN), and one real ``finetune`` epoch of the AdderNet on synthetic CIFAR-shaped data with ``amp="auto"``;
the two-process DDP run is only said to be possible when the machine has two GPUs. Meant to fit in a few
minutes of a shared GPU session:

    python benchmarks/gpu_check.py --json benchmarks/results/gpu_check.json
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from adderconv import adder_conv2d, kernels
from adderconv.io import write_json
from adderconv.kernels import triton_kernels as tk
from adderconv.kernels.benchmark import RESNET20_LAYERS, RESNET50_LAYERS, LayerShape, reference_unfold
from adderconv.reference import adder_conv2d_reference, adder_conv2d_reference_grads

# (N, C, H, W, O, k, stride, padding, dilation, groups)
CHECKS = [(2, 16, 12, 12, 8, 3, 1, 1, 1, 1), (3, 6, 20, 17, 10, 3, 2, 1, 1, 2), (2, 8, 9, 9, 8, 3, 1, 1, 1, 8),
          (2, 7, 6, 6, 5, 1, 1, 0, 1, 1), (1, 4, 13, 11, 6, 3, 1, 2, 2, 1), (4, 64, 16, 16, 64, 3, 1, 1, 1, 1)]
TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}   # max error / max |reference|
REFERENCE_CAP_BYTES = 4 << 30
# GPU_CHECK_DEVICE=cpu with TRITON_INTERPRET=1 dry-runs the whole script on CPU (checks the script, not speed).
DEVICE = os.environ.get("GPU_CHECK_DEVICE", "cuda")


def check() -> list[dict]:
    rows = []
    for n, c, h, w, o, k, s, p, d, g in CHECKS if DEVICE == "cuda" else CHECKS[:2]:   # the interpreter is slow
        for dtype in TOL:
            x = torch.randn(n, c, h, w, device=DEVICE).to(dtype)
            wt = (torch.randn(o, c // g, k, k, device=DEVICE) * 0.5).to(dtype)
            conf = ([s, s], [p, p], [d, d], g)
            ref = adder_conv2d_reference(x, wt, *conf)
            gr = torch.randn(ref.shape, device=DEVICE).to(dtype)
            rx, rw = adder_conv2d_reference_grads(gr, x, wt, *conf)
            xg, wg = x.clone().requires_grad_(True), wt.clone().requires_grad_(True)
            y_op = adder_conv2d(xg, wg, s, p, d, g)
            y_op.backward(gr)
            if DEVICE == "cpu":   # dry run: the op serves CPU tensors with the C++ kernels, not Triton
                y_op = tk.forward(x, wt, *conf)
                xg.grad, wg.grad = tk.grad_input(gr, x, wt, *conf), tk.grad_weight(gr, x, wt, *conf)
            got = {"fwd": tk.forward(x, wt, *conf), "dx": tk.grad_input(gr, x, wt, *conf),
                   "dw": tk.grad_weight(gr, x, wt, *conf), "op_fwd": y_op, "op_dx": xg.grad, "op_dw": wg.grad}
            want = {"fwd": ref, "dx": rx, "dw": rw, "op_fwd": ref, "op_dx": rx, "op_dw": rw}
            err = {key: ((got[key].double() - want[key]).abs().max() / want[key].abs().max()).item() for key in got}
            rows.append({"case": [n, c, h, w, o, k, s, p, d, g], "dtype": str(dtype).split(".")[-1],
                         "max_rel_err": err, "ok": all(v < TOL[dtype] for v in err.values())})
    return rows


def _timed(fn, repeat: int) -> float:
    for _ in range(2):
        fn()
    if DEVICE != "cuda":
        return min(_wall(fn) for _ in range(repeat))
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def _wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def _impls(s: LayerShape, batch: int):
    conv = lambda a, b: F.conv2d(a, b, stride=s.stride, padding=s.padding)  # noqa: E731
    ours = lambda a, b: adder_conv2d(a, b, s.stride, s.padding)  # noqa: E731
    ref = lambda a, b: reference_unfold(a, b, s.stride, s.padding)  # noqa: E731
    out = (s.size + 2 * s.padding - s.kernel) // s.stride + 1
    ref_batch = max(1, min(batch, REFERENCE_CAP_BYTES // (s.c_out * s.c_in * s.kernel ** 2 * out * out * 4)))
    # name: (function, dtype, tf32, batch)
    return {"ours_fp32": (ours, torch.float32, False, batch), "ours_bf16": (ours, torch.bfloat16, False, batch),
            "conv_fp32": (conv, torch.float32, False, batch), "conv_tf32": (conv, torch.float32, True, batch),
            "conv_bf16": (conv, torch.bfloat16, False, batch),
            "reference_unfold": (ref, torch.float32, False, ref_batch)}


def time_layers(layers: list[LayerShape], batch: int, repeat: int) -> list[dict]:
    rows = []
    for s in layers:
        row: dict = {"layer": s.name, "batch": batch}
        for name, (fn, dtype, tf32, b) in _impls(s, batch).items():
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
            x = torch.randn(b, s.c_in, s.size, s.size, device=DEVICE, dtype=dtype)
            w = (torch.randn(s.c_out, s.c_in, s.kernel, s.kernel, device=DEVICE) * 0.1).to(dtype)
            xg, wg = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
            g = torch.randn_like(fn(x, w))

            def fwd(fn=fn, x=x, w=w):
                with torch.no_grad():
                    fn(x, w)

            def fwd_bwd(fn=fn, xg=xg, wg=wg, g=g):
                xg.grad = wg.grad = None
                fn(xg, wg).backward(g)

            scale = batch / b
            try:
                row[f"{name}_fwd_ms"] = round(_timed(fwd, repeat) * scale, 4)
                row[f"{name}_fwdbwd_ms"] = round(_timed(fwd_bwd, repeat) * scale, 4)
            except torch.OutOfMemoryError:
                row[f"{name}_fwd_ms"] = row[f"{name}_fwdbwd_ms"] = None
            if b != batch:
                row[f"{name}_batch"] = b
            del x, w, xg, wg, g
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        for name in _impls(s, batch):
            for p in ("fwd", "fwdbwd"):
                v, b0 = row.get(f"{name}_{p}_ms"), row[f"conv_fp32_{p}_ms"]
                row[f"{name}_{p}_over_conv_fp32"] = round(v / b0, 2) if v and b0 else None
        ours, ref = row["ours_fp32_fwdbwd_ms"], row["reference_unfold_fwdbwd_ms"]
        row["reference_over_ours_fwdbwd"] = round(ref / ours, 1) if ours and ref else None
        rows.append(row)
        print(f"{s.name:24s} fwd+bwd ms: " + "  ".join(f"{n}={row[f'{n}_fwdbwd_ms']}" for n in _impls(s, batch))
              + f"  ours/conv_fp32={row['ours_fp32_fwdbwd_over_conv_fp32']}"
              + f"  ref/ours={row['reference_over_ours_fwdbwd']}", flush=True)
    return rows


def train_throughput(batch: int, steps: int) -> dict:
    """Training steps (forward, backward, adaptive LR, SGD) of ResNet-20 CNN and AdderNet under ``--amp auto``
    (bf16 autocast on GPUs that have it), interleaved; images/s of each and adder/CNN."""
    from adderconv import AdaptiveLR, get_model
    from adderconv.data import autocast
    from adderconv.training.settings import amp_dtype

    dev = torch.device(DEVICE)
    dtype = amp_dtype("auto", dev)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    nets = {}
    for name in ("resnet20", "resnet20_adder"):
        model = get_model(name).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        nets[name] = (model, opt, AdaptiveLR(model, eta=0.2))

    def step(name: str) -> None:
        model, opt, alr = nets[name]
        with autocast(dev, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        alr.step(opt)

    times: dict[str, list[float]] = {n: [] for n in nets}
    for name in nets:
        step(name)                                     # warm-up: Triton compiles, cuDNN picks its algorithms
    for _ in range(3):                                 # interleaved rounds: both see the same machine state
        for name in nets:
            times[name].append(_timed(lambda name=name: [step(name) for _ in range(steps)], 1) / steps)
    rate = {n: round(batch / (min(t) / 1e3), 1) for n, t in times.items()}
    out = {"batch": batch, "amp": str(dtype), "images_per_s": rate,
           "adder_over_cnn": round(rate["resnet20_adder"] / rate["resnet20"], 3)}
    print(f"training throughput (batch {batch}, amp {dtype}): {rate}, adder/CNN {out['adder_over_cnn']}", flush=True)
    return out


def finetune_smoke(n: int, batch: int) -> dict:
    """A real ``finetune`` epoch of the adder ResNet-20 on synthetic CIFAR-shaped data with ``amp="auto"``."""
    from adderconv import get_model
    from adderconv.data import DataSplit, TensorPairs
    from adderconv.training import finetune

    g = torch.Generator().manual_seed(0)
    parts = [TensorPairs(torch.randn(k, 3, 32, 32, generator=g), torch.randint(0, 10, (k,), generator=g))
             for k in (n, batch, batch)]
    data = DataSplit(*parts, "classify", 10, (3, 32, 32), f"synthetic CIFAR-shaped, {n} train", augment="crop_flip")
    res = finetune(get_model("resnet20_adder"), data, epochs=1, batch_size=batch, device=DEVICE, amp="auto",
                   energy=False)
    rec = res.history[-1]
    out = {"train_loss": rec["train_loss"], "images_per_s": round(rec["images_per_s"], 1), "amp": res.settings["amp"],
           "finite": bool(torch.isfinite(torch.tensor(rec["train_loss"])))}
    print(f"finetune smoke: {out}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="ResNet-20 batch")
    ap.add_argument("--batch50", type=int, default=32, help="ResNet-50 batch")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="ResNet-20 shapes only")
    ap.add_argument("--train-batch", type=int, default=256, help="training-throughput batch")
    ap.add_argument("--train-steps", type=int, default=10, help="training steps per timed round")
    ap.add_argument("--smoke-samples", type=int, default=4096, help="finetune smoke: synthetic training samples")
    ap.add_argument("--json", type=Path,
                    default=Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None)
    args = ap.parse_args()
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device", file=sys.stderr)
        return 2
    import triton

    t0 = time.time()
    info = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else f"dry run on {DEVICE}",
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "backend_for_fp32": kernels.backend_for(torch.empty(1, device=DEVICE)).__name__}
    print(info, flush=True)
    checks = check()
    bad = [r for r in checks if not r["ok"]]
    print(f"correctness: {len(checks) - len(bad)}/{len(checks)} ok ({time.time() - t0:.0f} s)", flush=True)
    for r in bad:
        print("FAILED", r, flush=True)
    result = {"benchmark": "gpu_check", "machine": info, "checks": checks, "tables": {}}
    try:
        result["tables"]["resnet20"] = time_layers(RESNET20_LAYERS, args.batch, args.repeat)
        if not args.quick:
            result["tables"]["resnet50"] = time_layers(RESNET50_LAYERS, args.batch50, args.repeat)
        result["training"] = train_throughput(args.train_batch, args.train_steps)
        result["finetune"] = finetune_smoke(args.smoke_samples, args.train_batch)
        gpus = torch.cuda.device_count() if DEVICE == "cuda" else 0
        result["ddp"] = ("not run: one GPU (the two-process run needs two)" if gpus < 2 else
                         "two GPUs present: run torchrun --nproc-per-node 2 -m adderconv finetune resnet20_adder ...")
        print(f"DDP: {result['ddp']}", flush=True)
    finally:
        result["seconds"] = round(time.time() - t0, 1)
        if args.json:
            write_json(args.json, result)
    wrong_backend = DEVICE == "cuda" and info["backend_for_fp32"] != tk.__name__
    if wrong_backend:
        print(f"FAILED: the op uses {info['backend_for_fp32']} for CUDA float32, not the Triton kernels")
    return 1 if bad or wrong_backend else 0


if __name__ == "__main__":
    sys.exit(main())
