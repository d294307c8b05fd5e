"""Counting speed and memory: the dispatch capture (fake tensors, the default) against fvcore's
FlopCountAnalysis on the same model, and a 7B-parameter decoder-only transformer built on ``meta``.

1. ResNet-152 at 224x224 (by default): fvcore traces and runs the model with real tensors; the dispatch
   capture runs it on fake tensors. Runs alternate (fvcore, ours, fvcore, ours, ...) in one process so
   machine noise hits both alike; the table reports the median of each and their ratio (target <= 0.5).
2. A Llama-style decoder (32 layers, d_model 4096, SwiGLU MLP 11008, 32 heads, vocab 32000; 6.7e9
   parameters) at sequence 2048, built on the meta device, counted in a fresh subprocess: wall time, the
   subprocess's peak RSS (targets: < 30 s, < 2 GB), and its matrix-product multiplications against the
   hand formula (every projection ``T * d_in * d_out``; attention ``Q K^T`` and ``P V`` ``2 T^2 d`` per
   layer, the full square: a causal mask does not change what the kernel is counted as).

3. ``--small``: the bookkeeping on small CNNs (ResNet-18, MobileNetV3-S, EfficientNet-B0 at 224), each round in a
   fresh process: the first count in a process (a torchvision-free CNN: import, the fake-tensor mode's first use,
   and whether that imported ``torch._dynamo``), then per model its first count, the median of later counts,
   and FlopCounterMode on real tensors. ``--baseline DIR`` (a checkout of an earlier commit) runs the same rounds
   on it, alternating with this checkout, so that both see the same machine load.

Prints tables, writes JSON; asserts nothing.

    python benchmarks/counting.py --model resnet152 --size 224 --repeats 3
    python benchmarks/counting.py --small --rounds 5 --baseline /tmp/before
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from adderconv.analysis import count_ops
from adderconv.io import write_json

LLAMA = {"layers": 32, "d_model": 4096, "heads": 32, "ffn": 11008, "vocab": 32000, "seq": 2048}


def _fvcore(model, x) -> int:
    from fvcore.nn import FlopCountAnalysis

    fa = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return fa.total()


def _ours(model, x) -> int:
    return count_ops(model, x).total["mul"]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- the 7B decoder ----------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = RMSNorm(d), RMSNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = nn.Linear(d, ffn, bias=False), nn.Linear(d, ffn, bias=False)
        self.down = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.o(a)
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Decoder(nn.Module):
    def __init__(self, layers: int, d_model: int, heads: int, ffn: int, vocab: int, **_) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def hand_formula(layers: int, d_model: int, heads: int, ffn: int, vocab: int, seq: int) -> dict[str, int]:
    t = seq                                                        # batch 1
    projections = layers * t * (4 * d_model * d_model + 3 * d_model * ffn) + t * d_model * vocab
    attention = layers * 2 * t * t * d_model                       # Q K^T and P V over all heads
    return {"projection_mul": projections, "attention_mac": attention}


def run_7b() -> dict:
    """In this (fresh) process: build on meta, count, report time, peak RSS and the formula check."""
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = Decoder(**LLAMA).eval()
    params = sum(p.numel() for p in model.parameters())
    tokens = torch.zeros(1, LLAMA["seq"], dtype=torch.long, device="meta")
    t1 = time.perf_counter()
    counts = count_ops(model, tokens)
    t2 = time.perf_counter()
    cats = counts.by_category()
    expected = hand_formula(**LLAMA)
    scores = LLAMA["layers"] * LLAMA["heads"] * LLAMA["seq"] ** 2
    return {"params": params, "build_s": t1 - t0, "count_s": t2 - t1,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "projection_mul": cats["linear"]["mul"], "attention_mac": cats["attention"]["mul"] - scores,
            "expected": expected, "unsupported": counts.unsupported, "total_mul": counts.total["mul"]}


SMALL = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


def run_small(repeats: int) -> dict:
    """In this (fresh) process: the first count ever, then per small model first/steady counts and FlopCounterMode."""
    t0 = time.perf_counter()
    from adderconv.analysis import count_ops as count
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(16, 10)).eval()
    count(cnn, torch.randn(1, 3, 32, 32))
    first = {"first_count_s": time.perf_counter() - t0, "dynamo_imported": "torch._dynamo" in sys.modules,
             "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    import torchvision   # after the first count: its import alone pulls in torch._dynamo
    from torch.utils.flop_counter import FlopCounterMode

    models = {}
    for name in SMALL:
        model, x = torchvision.models.get_model(name).eval(), torch.randn(1, 3, 224, 224)
        t = time.perf_counter()
        count(model, x)
        cold = time.perf_counter() - t
        ours, flop = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            count(model, x)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.no_grad(), FlopCounterMode(display=False):
                model(x)
            flop.append(time.perf_counter() - t)
        models[name] = {"first_s": cold, "again_s": statistics.median(ours), "flop_counter_s": statistics.median(flop)}
    return {"first_use": first, "models": models}


def small(args) -> dict:
    trees = {"this": str(Path(__file__).resolve().parent.parent)}
    if args.baseline:
        trees = {"baseline": str(Path(args.baseline).resolve()), **trees}
    runs: dict[str, list] = {k: [] for k in trees}
    for _ in range(args.rounds):
        for label, tree in trees.items():          # alternate, so machine load hits every tree alike
            env = {**os.environ, "PYTHONPATH": tree}
            proc = subprocess.run([sys.executable, __file__, "--only-small", "--repeats", str(args.repeats)],
                                  capture_output=True, text=True, check=True, cwd=tree, env=env)
            runs[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    med = {label: {
        "first_use": {k: statistics.median(r["first_use"][k] for r in rs) for k in ("first_count_s", "rss_mb")}
        | {"dynamo_imported": all(r["first_use"]["dynamo_imported"] for r in rs)},
        "models": {m: {k: statistics.median(r["models"][m][k] for r in rs) for k in rs[0]["models"][m]}
                   for m in SMALL}} for label, rs in runs.items()}
    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; medians of "
          f"{args.rounds} fresh processes, {args.repeats} repeats each\n")
    print("| tree | first count in a process (s) | imports torch._dynamo | peak RSS (MB) |\n|---|---:|---|---:|")
    for label, m in med.items():
        f = m["first_use"]
        print(f"| {label} | {f['first_count_s']:.2f} | {f['dynamo_imported']} | {f['rss_mb']:.0f} |")
    print("\n| tree | model | first count (s) | count again (s) | FlopCounterMode, real (s) | again / FCM |\n"
          "|---|---|---:|---:|---:|---:|")
    for label, m in med.items():
        for name, r in m["models"].items():
            print(f"| {label} | {name} | {r['first_s']:.3f} | {r['again_s']:.3f} | {r['flop_counter_s']:.3f} | "
                  f"{r['again_s'] / r['flop_counter_s']:.2f} |")
    return {"trees": trees, "rounds": args.rounds, "repeats": args.repeats, "runs": runs, "median": med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet152", help="torchvision model name")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-7b", action="store_true")
    ap.add_argument("--only-7b", action="store_true", help=argparse.SUPPRESS)   # the subprocess
    ap.add_argument("--small", action="store_true", help="the small-CNN bookkeeping benchmark (see above)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per tree (--small)")
    ap.add_argument("--baseline", help="an earlier checkout to measure alongside this one (--small)")
    ap.add_argument("--only-small", action="store_true", help=argparse.SUPPRESS)   # the subprocess
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "counting.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.only_7b:
        print(json.dumps(run_7b()))
        return
    if args.only_small:
        print(json.dumps(run_small(args.repeats)))
        return
    if args.small:
        write_json(Path(args.out).with_name("counting_small.json"), small(args))
        return
    import torchvision

    model = torchvision.models.get_model(args.model).eval()
    x = torch.randn(1, 3, args.size, args.size)
    times: dict[str, list[float]] = {"fvcore": [], "adderconv": []}
    with torch.no_grad():
        warm = {"fvcore_total": _fvcore(model, x), "adderconv_mul": _ours(model, x)}   # warm-up: imports, caches
        for _ in range(args.repeats):
            for name, fn in (("fvcore", _fvcore), ("adderconv", _ours)):
                t0 = time.perf_counter()
                fn(model, x)
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["adderconv"] / med["fvcore"]
    cpu = cpu_model()
    print(f"CPU: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print(f"| model | input | fvcore (s) | adderconv dispatch (s) | ratio |\n|---|---|---:|---:|---:|\n"
          f"| {args.model} | {args.size}x{args.size} | {med['fvcore']:.3f} | {med['adderconv']:.3f} | {ratio:.2f} |")
    result = {"model": args.model, "size": args.size, "repeats": args.repeats, "times_s": times, "median_s": med,
              "ratio": ratio, **warm, "torch": torch.__version__, "cpu": cpu, "machine": platform.machine(),
              "threads": torch.get_num_threads()}
    if not args.skip_7b:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--only-7b"], capture_output=True, text=True, check=True)
        big = json.loads(proc.stdout.strip().splitlines()[-1])
        big["subprocess_s"] = time.perf_counter() - t0
        ok = {k: big[k] == big["expected"][k] for k in ("projection_mul", "attention_mac")}
        print(f"\n| decoder (meta) | params | build (s) | count (s) | peak RSS (MB) | projection mul | "
              f"= formula | attention MAC | = formula |\n|---|---:|---:|---:|---:|---:|---|---:|---|\n"
              f"| 32 x 4096, seq 2048 | {big['params'] / 1e9:.2f}e9 | {big['build_s']:.2f} | {big['count_s']:.2f} | "
              f"{big['peak_rss_mb']:.0f} | {big['projection_mul']:.4e} | {ok['projection_mul']} | "
              f"{big['attention_mac']:.4e} | {ok['attention_mac']} |")
        result["decoder_7b"] = {**big, "equal_to_formula": ok}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
