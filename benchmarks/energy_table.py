"""The README's table: the papers' networks (zoo), CNN vs AdderNet, multiplications, additions, energy.

Counts come from ``adderconv.analysis.analyze`` at each model's default input (batch 1); energy from the
built-in Horowitz 45 nm table at fp32 and int8. "conv/fc layers" is the papers' convention (convolution,
adder and linear layers only); "whole net" adds BatchNorm, pooling, residual adds (ReLU/max-pool
comparisons are priced as adds in the energy, and listed apart here). "training step" is one SGD step
(forward, backward from a gradient of ones, the optimizer update, AdderNet's adaptive LR for adder
weights) counted at batch 2 (BatchNorm cannot train on one sample) and halved: per image, fp32.

    python benchmarks/energy_table.py            # prints the Markdown table, writes results/energy_table.json
"""
from __future__ import annotations

from pathlib import Path

from adderconv.analysis import Tally, analyze
from adderconv.analysis.render import fmt_count, fmt_energy
from adderconv.io import write_json

PAIRS = ("lenet5_bn", "resnet20", "resnet32", "resnet56", "vgg_small", "sr_vdsr")


def row(name: str) -> dict:
    fp32, int8 = analyze(name, precision="fp32"), analyze(name, precision="int8")
    layers = Tally.sum(t for c, t in fp32.by_category.items() if c in ("conv", "adder", "linear"))
    train = analyze(name, (2, *fp32.input_shape[1:]), precision="fp32", training=True, optimizer="sgd")
    return {"model": name, "input": list(fp32.input_shape), "layers_mul": layers["mul"], "layers_add": layers["add"],
            "mul": fp32.totals.mul, "add": fp32.totals.add, "cmp": fp32.totals.counts["cmp"],
            "energy_fp32_pj": round(fp32.totals.energy_pj, 3), "energy_int8_pj": round(int8.totals.energy_pj, 3),
            "train_mul": train.totals.mul / 2, "train_add": train.totals.add / 2,
            "train_energy_fp32_pj": round(train.totals.energy_pj / 2, 3)}


def main() -> None:
    rows = [row(n) for base in PAIRS for n in (base, f"{base}_adder")]
    print("| model | input | conv/fc mul | conv/fc add | whole-net mul | whole-net add | cmp | energy fp32 "
          "| energy int8 | adder/CNN energy fp32, int8 | training step mul, add | training step fp32 | "
          "adder/CNN training |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for cnn, add in zip(rows[::2], rows[1::2]):
        for r in (cnn, add):
            ratio = "" if r is cnn else (f"{add['energy_fp32_pj'] / cnn['energy_fp32_pj']:.3f}, "
                                         f"{add['energy_int8_pj'] / cnn['energy_int8_pj']:.3f}")
            train = "" if r is cnn else f"{add['train_energy_fp32_pj'] / cnn['train_energy_fp32_pj']:.3f}"
            print(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {fmt_count(r['layers_mul'])} | "
                  f"{fmt_count(r['layers_add'])} | {fmt_count(r['mul'])} | {fmt_count(r['add'])} | "
                  f"{fmt_count(r['cmp'])} | {fmt_energy(r['energy_fp32_pj'])} | {fmt_energy(r['energy_int8_pj'])} "
                  f"| {ratio} | {fmt_count(r['train_mul'])}, {fmt_count(r['train_add'])} | "
                  f"{fmt_energy(r['train_energy_fp32_pj'])} | {train} |")
    write_json(Path(__file__).parent / "results" / "energy_table.json", rows)


if __name__ == "__main__":
    main()
