"""The view of a fine-tuning run for people: split, test metric against the teacher, energy, files written.

>>> from rich.console import Console   # render_result(result, Console()) prints the run's summary table
"""
from __future__ import annotations

from typing import Any

from .trainer import FinetuneResult

__all__ = ["render_result"]


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def render_result(res: FinetuneResult, console: Any) -> None:
    """Print the run's summary: split, test metric vs teacher, energy vs teacher, output files."""
    from rich.table import Table

    metric = "psnr" if res.task == "sr" else "acc"
    show = (lambda v: f"{v:.2f} dB") if metric == "psnr" else (lambda v: f"{100 * v:.2f}%")
    t = Table(title="fine-tuning result", show_header=True)
    t.add_column("")
    t.add_column("student", justify="right")
    t.add_column("teacher", justify="right")
    t.add_row(f"test {metric}", show(res.test[metric]), show(res.teacher_test[metric]) if res.teacher_test else "-")
    if "bicubic_psnr" in res.test:
        t.add_row("bicubic psnr", show(res.test["bicubic_psnr"]), "")
    e = res.energy or {}
    if e.get("available"):
        rows = (("mul", "multiplications"), ("add", "additions"), ("energy_pj", f"energy pJ ({e['precision']}"
                + (f"; int{res.settings['bits']} adder layers)" if res.settings.get("bits") else ")")))
        for key, label in rows:
            t.add_row(label, _fmt(e["student"][key]), _fmt(e["teacher"][key]) if "teacher" in e else "-")
        if "energy_ratio" in e:
            t.add_row("energy student/teacher", f"{e['energy_ratio']:.3f}", "")
    console.print(f"split: {res.split}")
    console.print(t)
    for note in res.notes:
        console.print(f"note: {note}")
    if res.out is not None:
        console.print(f"wrote {res.out}/model.safetensors, checkpoint.pt, metrics.json, result.json"
                      + (", curves.html" if (res.out / "curves.html").exists() else ""))
