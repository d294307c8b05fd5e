"""Speed and peak memory of the adder op vs the reference unfold formulation vs nn.Conv2d, per layer.

ResNet-20 layer shapes (CIFAR, batch 64 by default) and ResNet-50 bottleneck shapes (ImageNet 224, a smaller
batch by default to keep the run to a few minutes on 2 cores). Prints a Markdown table per net and writes
JSON. Times are the minimum over interleaved rounds in one process, so the ratios to convolution are side by
side. It never asserts anything: the numbers are the result. The same function as ``adderconv bench``
(:func:`adderconv.kernels.benchmark.bench`); only the flag spelling of the memory switch differs.

    python benchmarks/kernels.py --threads 2 --json benchmarks/results/kernels.json
"""
from __future__ import annotations

import argparse
import dataclasses

from adderconv.choices import BENCH_NETS
from adderconv.kernels.benchmark import BenchOptions, bench


def main(argv: list[str] | None = None) -> dict:
    defaults = BenchOptions()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(defaults.nets), help=f"comma-separated: {', '.join(BENCH_NETS)}")
    ap.add_argument("--batch", type=int, default=defaults.batch, help="ResNet-20 batch")
    ap.add_argument("--batch50", type=int, default=defaults.batch50, help="ResNet-50 batch")
    ap.add_argument("--threads", type=int, default=defaults.threads)
    ap.add_argument("--rounds", type=int, default=defaults.rounds)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    opts = dataclasses.replace(defaults, nets=tuple(n for n in args.nets.split(",") if n), batch=args.batch,
                               batch50=args.batch50, threads=args.threads, rounds=args.rounds,
                               memory=not args.no_memory, json_path=args.json)
    return bench(opts)


if __name__ == "__main__":
    main()
