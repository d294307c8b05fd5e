"""Peak memory of one adder layer vs nn.Conv2d vs the reference unfold formulation, at ResNet-20 shapes.

Each measurement runs in a fresh subprocess on CPU: peak RSS during the call (``ru_maxrss``) minus the RSS
just before it, i.e. the temporaries and outputs the call needed on top of its inputs. Prints a table and
writes JSON (``--json``). It never asserts anything: the numbers are the result.

    python benchmarks/memory.py --batch 64 --json benchmarks/results/memory.json
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

# (name, C_in, C_out, H, stride) for ResNet-20's distinct 3x3 layers on 32x32 CIFAR inputs
RESNET20_LAYERS = [("stage1 16->16 @32", 16, 16, 32, 1), ("stage2 16->32 @32/2", 16, 32, 32, 2),
                   ("stage2 32->32 @16", 32, 32, 16, 1), ("stage3 32->64 @16/2", 32, 64, 16, 2),
                   ("stage3 64->64 @8", 64, 64, 8, 1)]
IMPLS = ("conv", "adder", "reference_unfold")

_CHILD = r"""
import resource, sys, torch
torch.set_num_threads(1)
impl, n, c, o, h, stride, backward = sys.argv[1], *map(int, sys.argv[2:8])
import torch.nn.functional as F
from adderconv import adder_conv2d

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()

def reference_unfold(x, w):
    # AdderNet's reference code: materialises the (C_out, C_in*k*k, N*L) difference tensor.
    cols = F.unfold(x, 3, padding=1, stride=stride).transpose(0, 1).reshape(c * 9, -1)
    wc = w.view(o, -1)
    out = -(cols.unsqueeze(0) - wc.unsqueeze(2)).abs().sum(1)
    return out.view(o, n, -1).transpose(0, 1)

x = torch.randn(n, c, h, h, requires_grad=bool(backward))
w = torch.randn(o, c, 3, 3, requires_grad=bool(backward))
fn = {"conv": lambda: F.conv2d(x, w, padding=1, stride=stride),
      "adder": lambda: adder_conv2d(x, w, stride, 1),
      "reference_unfold": lambda: reference_unfold(x, w)}[impl]
# warm up at a tiny size so lazy initialisation does not count
fn_small = adder_conv2d(torch.randn(1, c, 4, 4), torch.randn(o, c, 3, 3), 1, 1)
F.conv2d(torch.randn(1, c, 4, 4), torch.randn(o, c, 3, 3), padding=1)
before = rss()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
y = fn()
if backward:
    y.backward(torch.ones_like(y))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(max(0, peak - max(before, min(peak_before, peak))) if peak > peak_before else 0)
"""


def measure(impl: str, batch: int, c: int, o: int, h: int, stride: int, backward: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, impl, str(batch), str(c), str(o), str(h), str(stride),
                          str(int(backward))], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    print(f"peak extra memory (MiB), batch {args.batch}, CPU, {platform.processor() or platform.machine()}")
    print(f"{'layer':22s} {'pass':9s} " + " ".join(f"{i:>17s}" for i in IMPLS) + "  adder/conv  ref/conv")
    for name, c, o, h, stride in RESNET20_LAYERS:
        for backward in (False, True):
            mib = {i: measure(i, args.batch, c, o, h, stride, backward) / 2**20 for i in IMPLS}
            row = {"layer": name, "pass": "fwd+bwd" if backward else "fwd", **{f"{i}_mib": round(v, 1) for i, v in mib.items()}}
            row["adder_over_conv"] = round(mib["adder"] / max(mib["conv"], 1e-9), 2)
            row["reference_over_conv"] = round(mib["reference_unfold"] / max(mib["conv"], 1e-9), 2)
            rows.append(row)
            print(f"{name:22s} {row['pass']:9s} " + " ".join(f"{mib[i]:17.1f}" for i in IMPLS)
                  + f"  {row['adder_over_conv']:10.2f} {row['reference_over_conv']:9.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"benchmark": "memory", "batch": args.batch, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
