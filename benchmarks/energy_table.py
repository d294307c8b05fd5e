"""The README's tables: the papers' networks (zoo), CNN vs AdderNet: counts, energy at real widths, area, dataflow.

Counts come from ``adderconv.analysis.analyze`` at each model's default input (batch 1); energy from the
built-in Horowitz 45 nm table. "conv/fc layers" is the papers' convention (convolution, adder and linear layers
only); "whole net" adds BatchNorm, pooling, residual adds (ReLU/max-pool comparisons are priced as adds in the
energy, and listed apart here); "add" is the papers' #Add, accumulations included. Energy: fp32 (fp32
accumulators), int8 with int32 accumulators (the hardware convention, the default) and int8 priced the papers'
way (every operation at 8 bits). "PE area": the processing element doing most of the work (a MAC unit for the
CNN, a SAD unit for the adder net) at int8/int32. With ``--zigzag``: total energy (compute + data movement) at
int8/int32 under ZigZag's mapping search on its TPU-like and Eyeriss-like accelerators, and the adder net on an
array of the same area. "training step" is one SGD step (forward, backward from a gradient of ones, the
optimizer update, AdderNet's adaptive LR for adder weights) counted at batch 2 (BatchNorm cannot train on one
sample) and halved: per image, fp32.

    python benchmarks/energy_table.py                         # prints the tables, writes results/energy_table.json
    python benchmarks/energy_table.py --zigzag resnet20,resnet32   # ZigZag columns for these pairs
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from adderconv.analysis import Tally, analyze
from adderconv.analysis.counts import additions
from adderconv.analysis.render import fmt_count, fmt_energy
from adderconv.io import write_json

PAIRS = ("lenet5_bn", "resnet20", "resnet32", "resnet56", "vgg_small", "sr_vdsr")
ACCELERATORS = ("tpu_like", "eyeriss_like")


def row(name: str, zigzag: bool) -> dict:
    fp32, int8 = analyze(name, precision="fp32"), analyze(name, precision="int8")
    papers = analyze(name, precision="int8", pricing="papers")
    layers = Tally.sum(t for c, t in fp32.by_category.items() if c in ("conv", "adder", "linear"))
    train = analyze(name, (2, *fp32.input_shape[1:]), precision="fp32", training=True, optimizer="sgd")
    out = {"model": name, "input": list(fp32.input_shape), "layers_mul": layers["mul"],
           "layers_add": additions(layers), "mul": fp32.totals.mul, "add": fp32.totals.add,
           "acc": fp32.totals.counts["acc"], "cmp": fp32.totals.counts["cmp"],
           "energy_fp32_pj": round(fp32.totals.energy_pj, 3), "energy_int8_pj": round(int8.totals.energy_pj, 3),
           "energy_int8_papers_pj": round(papers.totals.energy_pj, 3),
           "pe": int8.main_unit.unit, "pe_int8_um2": int8.main_unit.um2, "pe_fp32_um2": fp32.main_unit.um2,
           "train_mul": train.totals.mul / 2, "train_add": train.totals.add / 2,
           "train_energy_fp32_pj": round(train.totals.energy_pj / 2, 3)}
    for acc in ACCELERATORS if zigzag else ():
        start = time.perf_counter()
        r = analyze(name, precision="int8", engine="zigzag", accelerator=acc, same_area=name.endswith("_adder"))
        flow = r.dataflow
        out[f"zigzag_{acc}"] = {
            "total_pj": round(r.dataflow_total_pj, 3), "compute_pj": round(r.totals.energy_pj, 3),
            "memory_pj": {lv: round(v, 3) for lv, v in flow.result.memory_pj.items()},
            "latency_cycles": flow.result.latency_cycles, "seconds": round(time.perf_counter() - start, 1),
            **({"same_area_scale": round(flow.array_scale, 3),
                "same_area_total_pj": round(r.total_with(flow.same_area), 3),
                "same_area_latency_cycles": flow.same_area.latency_cycles} if flow.same_area else {})}
    return out


def _ratio(a: float, b: float) -> str:
    return f"{b / a:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zigzag", default="", help="comma-separated CNN names (of PAIRS) to run ZigZag on")
    args = parser.parse_args()
    zig = {n for n in args.zigzag.split(",") if n}
    rows = [row(n, base in zig) for base in PAIRS for n in (base, f"{base}_adder")]
    print("| model | input | conv/fc mul | conv/fc add | whole-net mul | whole-net add | cmp | training step mul, add "
          "| training step fp32 | adder/CNN training |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cnn, add in zip(rows[::2], rows[1::2]):
        for r in (cnn, add):
            train = "" if r is cnn else _ratio(cnn["train_energy_fp32_pj"], add["train_energy_fp32_pj"])
            print(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {fmt_count(r['layers_mul'])} | "
                  f"{fmt_count(r['layers_add'])} | {fmt_count(r['mul'])} | {fmt_count(r['add'])} | "
                  f"{fmt_count(r['cmp'])} | {fmt_count(r['train_mul'])}, {fmt_count(r['train_add'])} | "
                  f"{fmt_energy(r['train_energy_fp32_pj'])} | {train} |")
    print()
    print("| CNN vs adder | energy fp32 | adder/CNN fp32 | energy int8/int32 | adder/CNN int8/int32 | adder/CNN int8 "
          "(papers) | PE area int8/int32 | PE area fp32 | " + " | ".join(f"total int8, {a} (ZigZag) | adder/CNN "
                                                                      f"{a} | same area" for a in ACCELERATORS) + " |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|---:|---:|" * len(ACCELERATORS))
    for cnn, add in zip(rows[::2], rows[1::2]):
        cells = [f"{cnn['model']} / {add['model']}",
                 f"{fmt_energy(cnn['energy_fp32_pj'])} / {fmt_energy(add['energy_fp32_pj'])}",
                 _ratio(cnn["energy_fp32_pj"], add["energy_fp32_pj"]),
                 f"{fmt_energy(cnn['energy_int8_pj'])} / {fmt_energy(add['energy_int8_pj'])}",
                 _ratio(cnn["energy_int8_pj"], add["energy_int8_pj"]),
                 _ratio(cnn["energy_int8_papers_pj"], add["energy_int8_papers_pj"]),
                 *(f"{cnn[k]:.0f} / {add[k]:.0f} um^2 ({_ratio(cnn[k], add[k])})"
                   for k in ("pe_int8_um2", "pe_fp32_um2"))]
        for acc in ACCELERATORS:
            a, b = cnn.get(f"zigzag_{acc}"), add.get(f"zigzag_{acc}")
            if a is None or b is None:
                cells += ["", "", ""]
                continue
            same = (f"{_ratio(a['total_pj'], b['same_area_total_pj'])} energy, "
                    f"{_ratio(a['latency_cycles'], b['same_area_latency_cycles'])} latency "
                    f"({b['same_area_scale']:.2f}x units)" if "same_area_total_pj" in b else "")
            cells += [f"{fmt_energy(a['total_pj'])} / {fmt_energy(b['total_pj'])}",
                      _ratio(a["total_pj"], b["total_pj"]), same]
        print("| " + " | ".join(cells) + " |")
    if zig:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("\nZigZag runs (seconds each): " + ", ".join(
            f"{r['model']} {a} {r[f'zigzag_{a}']['seconds']}" for r in rows for a in ACCELERATORS
            if f"zigzag_{a}" in r) + f"; peak RSS of the process {peak:.0f} MB")
    write_json(Path(__file__).parent / "results" / "energy_table.json", rows)


if __name__ == "__main__":
    main()
