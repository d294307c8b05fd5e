"""Peak memory of one adder layer vs nn.Conv2d vs the reference unfold formulation, at ResNet-20 shapes.

Each measurement runs in a fresh child process on CPU (:func:`adderconv.kernels.benchmark.peak_memory`): the
peak RSS during the call minus the RSS just before it, i.e. the temporaries and outputs the call needed on
top of its inputs, with glibc pinned to return freed blocks to the OS. Prints a table and writes JSON
(``--json``). It never asserts anything: the numbers are the result. ``benchmarks/kernels.py`` measures the
same alongside the times; this script is the memory-only view.

    python benchmarks/memory.py --batch 64 --json benchmarks/results/memory.json
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from adderconv.io import write_json
from adderconv.kernels.benchmark import RESNET20_LAYERS, machine, peak_memory

IMPLS = ("conv", "adder", "reference_unfold")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ["ADDERCONV_BENCH_THREADS"] = str(args.threads)
    info = machine() | {"threads": args.threads}
    rows = []
    print(f"peak extra memory (MiB), batch {args.batch}, CPU {info['cpu']}, {args.threads} threads")
    print(f"{'layer':22s} {'pass':9s} " + " ".join(f"{i:>17s}" for i in IMPLS) + "  adder/conv  ref/conv")
    for s in RESNET20_LAYERS:
        for backward in (False, True):
            mib = {i: peak_memory(i, s, args.batch, backward) for i in IMPLS}
            row = {"layer": s.name, "pass": "fwd+bwd" if backward else "fwd",
                   **{f"{i}_mib": round(v, 1) for i, v in mib.items()}}
            row["adder_over_conv"] = round(mib["adder"] / max(mib["conv"], 1e-9), 2)
            row["reference_over_conv"] = round(mib["reference_unfold"] / max(mib["conv"], 1e-9), 2)
            rows.append(row)
            print(f"{s.name:22s} {row['pass']:9s} " + " ".join(f"{mib[i]:17.1f}" for i in IMPLS)
                  + f"  {row['adder_over_conv']:10.2f} {row['reference_over_conv']:9.2f}", flush=True)
    if args.json:
        write_json(args.json, {"benchmark": "memory", "batch": args.batch, "machine": info, "rows": rows})


if __name__ == "__main__":
    main()
