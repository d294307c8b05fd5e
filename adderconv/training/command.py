"""The ``adderconv finetune`` command's body: options in, a run, a readable summary out.

>>> opts = FinetuneOptions("lenet5_bn_adder", epochs=1, limit=64)       # doctest: +SKIP
>>> run_finetune(opts, Console())                                        # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .data import load_data
from .prepare import input_shape_for, prepare
from .trainer import FinetuneResult, amp_dtype, check_settings, finetune, pick_device

__all__ = ["FinetuneOptions", "run_finetune", "render_result"]


@dataclass
class FinetuneOptions:
    model: str
    data: str = "digits"
    teacher: str | None = None
    out: str = "finetune-out"
    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.1
    batch_size: int = 256
    weight_decay: float = 5e-4
    eta: float = 0.2
    adder_lr_scale: float = 1.0
    kd_alpha: float = 0.5
    kd_temperature: float = 4.0
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    convert: bool = True
    resume: bool = False
    seed: int = 0
    split_seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    limit: int | None = None
    workers: int = 0
    quiet: bool = False
    tensorboard: str | None = None       # TensorBoard log directory
    overwrite: bool = False


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
        rows = (("mul", "multiplications"), ("add", "additions"), ("energy_pj", f"energy pJ ({e['precision']})"))
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


def _check(opts: FinetuneOptions) -> None:
    """Before any work: every setting is in range, the output folder is writable, and a finished run there is not overwritten by accident."""
    from pathlib import Path

    from ..errors import AdderconvError
    from ..io import ensure_writable

    check_settings(epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, adder_lr_scale=opts.adder_lr_scale,
                   eta=opts.eta, weight_decay=opts.weight_decay, kd_alpha=opts.kd_alpha,
                   kd_temperature=opts.kd_temperature, num_workers=opts.workers)
    amp_dtype(opts.amp, pick_device(opts.device))
    if opts.tensorboard:
        from .curves import require_tensorboard
        require_tensorboard()
    ensure_writable(opts.out, directory=True)
    if not opts.resume and not opts.overwrite and (Path(opts.out) / "result.json").exists():
        raise AdderconvError(f"{opts.out} holds a finished run (result.json): choose another output directory, "
                             f"or overwrite it explicitly (`overwrite`)")


def run_finetune(opts: FinetuneOptions, console: Any) -> int:
    """Data first, then the models (once, for the data's classes), fine-tune, print the summary (rank 0 only
    under torchrun); return the exit code."""
    import os

    import torch

    main = int(os.environ.get("RANK", "0")) == 0
    _check(opts)
    shape = input_shape_for(opts.model, opts.arch, opts.input_shape, opts.data)
    data = load_data(opts.data, shape, limit=opts.limit, split_seed=opts.split_seed)
    torch.manual_seed(opts.seed)       # a model built from a name starts from weights fixed by --seed
    prep = prepare(opts.model, teacher=opts.teacher, arch=opts.arch, trust=opts.trust, convert=opts.convert,
                   input_shape=data.input_shape, num_classes=data.num_classes)
    for note in prep.notes if main else ():
        console.print(f"note: {note}")
    res = finetune(prep.student, data, teacher=prep.teacher, epochs=opts.epochs, optimizer=opts.optimizer, lr=opts.lr,
                   batch_size=opts.batch_size, weight_decay=opts.weight_decay, eta=opts.eta,
                   adder_lr_scale=opts.adder_lr_scale, kd_alpha=opts.kd_alpha,
                   kd_temperature=opts.kd_temperature, device=opts.device, amp=opts.amp, seed=opts.seed,
                   out=opts.out, resume=opts.resume, progress=not opts.quiet and main,
                   log=None if opts.quiet else console.print, num_workers=opts.workers, arch=prep.arch,
                   tensorboard=opts.tensorboard)
    res.notes[:0] = prep.notes
    if main:
        render_result(res, console)
    return 0
