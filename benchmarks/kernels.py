"""Speed and peak memory of the adder op vs the reference unfold formulation vs nn.Conv2d, per layer.

ResNet-20 layer shapes (CIFAR, batch 64 by default) and ResNet-50 bottleneck shapes (ImageNet 224, a smaller
batch by default to keep the run to a few minutes on 2 cores). Prints a Markdown table per net and writes
JSON. Times are the minimum over interleaved rounds in one process, so the ratios to convolution are side by
side. It never asserts anything: the numbers are the result. Same as ``adderconv bench``.

    python benchmarks/kernels.py --threads 2 --json benchmarks/results/kernels.json
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adderconv.io import write_json
from adderconv.kernels import backend_for
from adderconv.kernels.benchmark import machine, render, suite


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="resnet20,resnet50")
    ap.add_argument("--batch", type=int, default=64, help="ResNet-20 batch")
    ap.add_argument("--batch50", type=int, default=8, help="ResNet-50 batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    batches = {"resnet20": args.batch, "resnet50": args.batch50}
    nets = {n: batches.get(n, args.batch) for n in args.nets.split(",") if n}
    result = {"benchmark": "kernels", "machine": None, "tables": {}}
    for net, rows in suite(nets, rounds=args.rounds, memory=not args.no_memory, threads=args.threads):
        result["machine"] = machine() | {"backend": backend_for(torch.empty(1)).__name__}
        result["tables"][net] = rows
        print(f"\n{net} (backend {result['machine']['backend']})\n" + render(rows, result["machine"]), flush=True)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
