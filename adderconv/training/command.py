"""The ``adderconv finetune`` command's body: options in, a run, a readable summary out.

>>> opts = FinetuneOptions(model="lenet5_bn_adder", limit=64, train=TrainSettings(epochs=1))  # doctest: +SKIP
>>> run_finetune(opts, Output())                                         # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..output import Output
from ..data import load_data
from .prepare import input_shape_for, prepare
from .settings import TrainSettings
from .summary import render_result
from .trainer import finetune

if TYPE_CHECKING:
    from adderconv.converters.policy import Policy

__all__ = ["FinetuneOptions", "run_finetune"]


@dataclass(kw_only=True)   # built by keyword: reordering fields can never mis-wire two flags
class FinetuneOptions:
    """What ``adderconv finetune`` was asked: the model and data, where to write, and the recipe (``train``)."""

    model: str
    data: str = "digits"
    teacher: str | None = None
    output: str = "finetune-out"         # the run's directory (checkpoint, metrics, model)
    input_shape: tuple[int, ...] | None = None
    arch: str | None = None
    trust: bool = False
    convert: bool = True
    policy: Policy | None = None         # how a CNN MODEL is converted (None: prepare's default)
    resume: bool = False
    split_seed: int = 0
    limit: int | None = None
    quiet: bool = False
    tensorboard: str | None = None       # TensorBoard log directory
    overwrite: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)


def _check(opts: FinetuneOptions) -> None:
    """Before any work: every setting is in range, the output folder is writable, and a finished run there is
    not overwritten by accident."""
    from pathlib import Path

    from ..errors import AdderconvError
    from ..io import ensure_writable

    opts.train.check()
    if opts.limit is not None and opts.limit < 1:
        raise AdderconvError(f"`limit` must be at least 1, got {opts.limit}")
    ensure_writable(opts.output, directory=True)
    if not opts.resume and not opts.overwrite and (Path(opts.output) / "result.json").exists():
        raise AdderconvError(f"{opts.output} holds a finished run (result.json): choose another output directory, "
                             f"or overwrite it explicitly (`overwrite`)")


def run_finetune(opts: FinetuneOptions, out: Output | Any) -> int:
    """Data first, then the models (once, for the data's classes), fine-tune, print the summary (rank 0 only
    under torchrun); return the exit code."""
    import os

    import torch

    from ..io import refuse_onnx

    out = Output.of(out)
    main = int(os.environ.get("RANK", "0")) == 0
    refuse_onnx(opts.model, "fine-tuning")
    if opts.teacher is not None:
        refuse_onnx(opts.teacher, "a teacher")
    _check(opts)
    shape = input_shape_for(opts.model, opts.arch, opts.input_shape, opts.data)
    data = load_data(opts.data, shape, limit=opts.limit, split_seed=opts.split_seed)
    torch.manual_seed(opts.train.seed)   # a model built from a name starts from weights fixed by the seed
    prep = prepare(opts.model, teacher=opts.teacher, arch=opts.arch, trust=opts.trust, convert=opts.convert,
                   input_shape=data.input_shape, num_classes=data.num_classes, policy=opts.policy)
    for note in prep.notes if main else ():
        out.note(note)
    res = finetune(prep.student, data, teacher=prep.teacher, settings=opts.train, out=opts.output,
                   resume=opts.resume, progress=not opts.quiet and main, log=None if opts.quiet else out.print,
                   arch=prep.arch, tensorboard=opts.tensorboard)
    res.notes[:0] = prep.notes
    if main:
        render_result(res, out.console)
    return 0
