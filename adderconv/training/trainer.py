"""``finetune``: train an adder network (or any network) with AdderNet's rules, resumably, on 1..N devices.

Per step: forward (under autocast on GPUs) -> task loss, mixed with logit KD when a teacher is given ->
backward (the op gives full-precision dW and HardTanh-clipped dX; DDP averages) -> AMP unscale -> adaptive
LR per adder layer -> SGD step -> cosine LR step. Each epoch ends with validation, the metrics JSON and an
atomic checkpoint; ``resume=True`` continues from it bit-for-bit (same data order, LR position, optimizer
and RNG state).

Adaptive LR and weight scale: the update of an adder layer is ``lr * eta * sqrt(k)`` in norm, whatever the
gradient. Fresh adder layers start N(0, 1) (``||W|| ~ sqrt(k)``) and move by ``lr * eta`` of their norm per
step; weights copied from a convolution are ~10x smaller, so the same rule rewrites them within a few steps.
That is what works: ``|x - w|`` with a conv's ``w`` computes nothing like ``x * w`` (a converted LeNet starts
near chance), so the copied weights are a starting point, not a function to preserve, and the trained stem,
BNs, classifier and the teacher carry the knowledge. ``eta_relative=True`` scales each layer's eta by the RMS
of its starting weights (every layer then moves the same fraction of its norm); measured on digits
(benchmarks/accuracy.py) it leaves converted layers stuck near their useless start, so the default is the
reference rule (``eta_relative=False``).

``adder_lr_scale`` multiplies the learning rate of the adder weights only (a second parameter group; the
cosine schedule and warmup apply to it as to the rest). It matters with Adam, which is blind to the
adaptive LR's gradient norm: Adam moves every weight by about ``lr`` per step, a small step for adder weights,
which live on the scale of their inputs (~0.1-1), next to a convolution's ``1/sqrt(fan_in)`` weights. On the
SR benchmark (benchmarks/accuracy.py --only sr, 10 epochs) scales of 20-100 bring the adder net level with
its CNN twin at the same lr (from 0.67 dB behind), while the CNN gets no better with its body convolutions'
LR scaled (x0.5, x5). The default, 1, is the reference rule.

>>> from adderconv import get_model
>>> from adderconv.data import load_data
>>> res = finetune(get_model("lenet5_bn_adder"), load_data("digits", limit=64), epochs=1, batch_size=32)
>>> sorted(res.test)
['acc', 'loss', 'n']
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adaptive_lr import AdaptiveLR, adder_weights
from ..arch import ArchSpec
from ..errors import AdderconvError
from ..io import lock_directory, write_json
from ..quant.recipe import is_quantized
from . import checkpoint as ckpt
from .curves import EpochLog, require_tensorboard
from ..data import DataSplit, DistInfo, all_reduce_sum, augment_batch, autocast, evaluate, load_data, loader, shard
from .distill import task_loss
from .distributed import setup, teardown
from .prepare import check_outputs
from .settings import TRAJECTORY, TrainSettings, amp_dtype, pick_device

__all__ = ["finetune", "FinetuneResult", "TrainingDiverged", "TrainSettings", "energy_comparison"]

# What a checkpoint written before a trajectory key existed implicitly ran with (None: it did not record it,
# so it cannot be checked).
_LEGACY_SETTINGS = {"adder_lr_scale": 1.0, "data": None, "bits": None, "groups": 1}


class TrainingDiverged(AdderconvError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class FinetuneResult:
    """What a run produced. ``test``/``teacher_test``: ``{"loss", "acc"|"psnr", ...}`` on the test split."""

    model: nn.Module
    history: list[dict[str, Any]]
    test: dict[str, float]
    teacher_test: dict[str, float] | None
    split: str
    task: str
    settings: dict[str, Any]
    energy: dict[str, Any] | None = None
    out: Path | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"schema": "adderconv.finetune/1", "split": self.split, "task": self.task,
                "settings": self.settings, "test": self.test, "teacher_test": self.teacher_test,
                "energy": self.energy, "epochs": self.history, "notes": self.notes}


def _cosine(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))
    return f


def _progress(enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=False)


def finetune(model: nn.Module, data: DataSplit | str = "digits", *, teacher: nn.Module | None = None,
             settings: TrainSettings | None = None, out: str | os.PathLike | None = None, resume: bool = False,
             progress: bool = False, log: Callable[[str], None] | None = None, energy: bool = True,
             arch: str | ArchSpec | None = None, tensorboard: str | os.PathLike | None = None,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` (a :class:`DataSplit` or a source string, see :func:`load_data`).

    The recipe is ``settings`` (a :class:`TrainSettings`, the reference CIFAR recipe by default) with any of its
    fields overridden by keyword (``finetune(model, data, epochs=3, lr=0.05)``).
    With ``out``, writes ``metrics.json``, ``curves.html`` and ``checkpoint.pt`` each epoch and
    ``model.safetensors`` and ``result.json`` at the end; ``resume=True`` continues from ``out/checkpoint.pt``.
    ``arch`` names the architecture stored with the weights; ``tensorboard`` is a directory for TensorBoard logs.
    Raises :class:`TrainingDiverged` on a NaN/inf loss.
    """
    s = replace(settings or TrainSettings(), **overrides)
    s.check()
    if is_quantized(model) and s.epochs:
        raise AdderconvError("a quantised model is for inference: evaluate it with `epochs` 0 (its int8 layers "
                             "do not train; fine-tune the float model and quantise again)")
    if resume and out is None:
        raise AdderconvError("`resume` needs the output directory of the run to continue")
    if tensorboard:
        require_tensorboard()
    dev = pick_device(s.device)
    info = setup(dev.type)
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)     # one GPU per rank (torchrun's LOCAL_RANK)
    try:
        # One run per output directory: a second process (or a `resume` while the first still trains) is
        # refused in one line instead of interleaving its checkpoints and metrics with the first's.
        with lock_directory(out, "finetune run") if out is not None and info.is_main else contextlib.nullcontext():
            data = load_data(data) if isinstance(data, str) else data
            if s.bits is not None:          # the optimizer must see the wrapped layers' parameters: wrap first
                model = _fake_quantised(model, data, s, info)
            run = _setup(model, data, teacher, s, dev, info, out, log)
            if s.epochs == 0:                     # evaluation only: the model is tested as it is
                return _finish(run, energy, arch, [])
            _resume(run) if resume else _start(run)
            notes = _train(run, progress, tensorboard, arch)
            return _finish(run, energy, arch, notes)
    finally:
        teardown(info)


@dataclass
class _Run:
    """One run's moving parts: built by :func:`_setup`, started or resumed, then advanced epoch by epoch."""

    model: nn.Module
    data: DataSplit
    teacher: nn.Module | None
    s: TrainSettings
    dev: torch.device
    dtype: torch.dtype | None
    info: DistInfo
    out: Path | None
    say: Callable[[str], None]
    per_rank: int
    steps: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler | None
    recorded: dict[str, Any]                       # the settings the checkpoint and result.json record
    etas: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    start: int = 0

    @property
    def metric(self) -> str:
        return "psnr" if self.data.task == "sr" else "acc"

    def evaluate(self, model: nn.Module, split, **kw) -> dict[str, float]:
        return evaluate(model, split, self.data.task, self.per_rank, self.dev, self.dtype, self.info,
                        self.s.num_workers, **kw)


def _optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    params: list = [p for p in model.parameters() if p.requires_grad]
    if s.adder_lr_scale != 1.0:     # adder weights in their own group (one group otherwise: old checkpoints load)
        ids = {id(p) for p in adder_weights(model)}
        params = [g for g in ({"params": [p for p in params if id(p) not in ids]},
                              {"params": [p for p in params if id(p) in ids], "lr": s.lr * s.adder_lr_scale})
                  if g["params"]]
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    # Adam (SR nets' usual optimizer; the adaptive LR still sets each adder layer's gradient norm)
    return torch.optim.Adam(params, lr=s.lr, betas=(s.momentum, 0.999), weight_decay=s.weight_decay)


def _setup(model, data, teacher, s, dev, info, out, log) -> _Run:
    """Seed, place the models, check they fit the data, and build the optimizer, schedule and AMP scaler."""
    torch.manual_seed(s.seed)
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()      # run under no_grad below; the caller's requires_grad flags are left alone
    check_outputs(model, data.input_shape, data.task, data.num_classes)
    per_rank = max(s.batch_size // info.world_size, 1)
    n_rank = len(shard(torch.arange(len(data.train)), info))
    steps = n_rank // per_rank + (1 if n_rank % per_rank >= 2 else 0)   # a 1-sample tail would break BN
    if steps == 0:
        raise AdderconvError(f"the training split has {len(data.train)} samples: too few for batch {s.batch_size}")
    dtype = amp_dtype(s.amp, dev)
    opt = _optimizer(model, s)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(s.epochs * steps, s.warmup_epochs * steps))
    recorded = {**s.trajectory(), "world_size": info.world_size, "device": str(dev), "teacher": teacher is not None,
                "data": data.description}    # the source, split seed and sizes: resuming on other data is refused
    return _Run(model=model, data=data, teacher=teacher, s=s, dev=dev, dtype=dtype, info=info,
                out=Path(out) if out is not None else None,
                say=(log or (lambda m: None)) if info.is_main else (lambda m: None), per_rank=per_rank, steps=steps,
                opt=opt, sched=sched, scaler=torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None,
                recorded=recorded)


def _resume(run: _Run) -> None:
    """Continue from the checkpoint in ``out``: same settings and data required, every state restored."""
    state = ckpt.load_checkpoint(run.out / "checkpoint.pt")
    was = {k: state["settings"].get(k, _LEGACY_SETTINGS.get(k)) for k in TRAJECTORY}
    changed = {k: (was[k], run.recorded[k]) for k in TRAJECTORY
               if was[k] != run.recorded[k] and not (k in _LEGACY_SETTINGS and was[k] is None)}
    if changed:
        raise AdderconvError(f"`resume`: settings differ from the checkpoint's (was, now): {changed}")
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.etas, run.history, run.start = list(state["etas"]), list(state["history"]), int(state["epoch"])
    ckpt.set_rng_state(state["rng"])
    run.say(f"resumed from {run.out / 'checkpoint.pt'} after epoch {run.start}/{run.s.epochs}")


def _start(run: _Run) -> None:
    """A fresh run: BatchNorm statistics re-estimated for the adder outputs, and each adder layer's eta."""
    s = run.s
    if s.recalibrate:
        first = shard(torch.arange(len(run.data.train)), run.info)[:s.calib_batches * run.per_rank]
        calib = loader(run.data.train, first, run.per_rank, s.num_workers, drop_tail=2)
        from adderconv.converters import recalibrate_bn

        with autocast(run.dev, run.dtype):
            recalibrate_bn(run.model, calib)
    # Relative eta (opt-in): each adder layer moves lr * eta of its starting RMS (see the module docstring).
    run.etas = [s.eta * (p.detach().float().pow(2).mean().sqrt().item() if s.eta_relative else 1.0)
                for p in adder_weights(run.model)]


def _train(run: _Run, progress: bool, tensorboard, arch) -> list[str]:
    """Every remaining epoch: train, validate, record, checkpoint, redraw the curves; the curves' notes."""
    alrs = [AdaptiveLR(run.model, eta=e, params=[p]) for p, e in zip(adder_weights(run.model), run.etas)]
    dev, info = run.dev, run.info
    net = nn.parallel.DistributedDataParallel(run.model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if info.enabled else run.model
    run.say(f"data: {run.data.description}")
    run.say(f"training on {dev}{f' x{info.world_size} ranks' if info.enabled else ''}, amp {run.dtype or 'off'}, "
            f"{run.steps} steps/epoch of {run.per_rank * info.world_size}, {len(alrs)} adder layers, "
            f"teacher {'yes' if run.teacher is not None else 'no'}")
    teacher_val = None
    if run.teacher is not None and (run.out is not None or tensorboard):
        with torch.random.fork_rng(devices=[]):     # the curves' reference line leaves the run's RNG as it was
            teacher_val = run.evaluate(run.teacher, run.data.val)[run.metric]
    curves = EpochLog(run.out if info.is_main else None, metric=run.metric, teacher=teacher_val,
                      tensorboard=tensorboard if info.is_main else None,
                      title=getattr(arch, "name", arch) or type(run.model).__name__)
    with _progress(progress and info.is_main) as bar:
        for epoch in range(run.start, run.s.epochs):
            rec = _epoch(run, net, alrs, epoch, bar)
            run.history.append(rec)
            run.say(f"epoch {epoch + 1}/{run.s.epochs}: train loss {rec['train_loss']:.4f}, val {run.metric} "
                    f"{rec[f'val_{run.metric}']:.4f}, {rec['images_per_s']:.0f} img/s")
            if run.out is not None and info.is_main:
                _save_epoch(run, epoch)
            curves.epoch(run.history)               # curves.html beside metrics.json; TensorBoard scalars
    curves.close()
    return list(curves.notes)


def _epoch(run: _Run, net: nn.Module, alrs: list[AdaptiveLR], epoch: int, bar) -> dict[str, Any]:
    """One epoch of AdderNet training steps, then validation; the epoch's record."""
    s, data, info, dev = run.s, run.data, run.info, run.dev
    gen = torch.Generator().manual_seed(s.seed * 100_003 + epoch)   # data order: a function of (seed, epoch)
    order = shard(torch.randperm(len(data.train), generator=gen), info)
    aug = torch.Generator().manual_seed(s.seed * 100_003 + epoch + 7919 * (info.rank + 1))
    net.train()
    task = bar.add_task(f"epoch {epoch + 1}/{s.epochs}", total=run.steps, stats="") if bar else None
    sums = torch.zeros(3, dtype=torch.float64)          # loss * n, correct, n
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader(data.train, order, run.per_rank, s.num_workers, drop_tail=2)):
        x, y = augment_batch(data.augment, x, y, aug)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast(dev, run.dtype):
            with torch.no_grad():
                t_out = run.teacher(x) if run.teacher is not None and s.kd_alpha > 0 else None
            s_out = net(x)
            loss = task_loss(data.task, s_out, t_out, y, s.kd_alpha, s.kd_temperature)
        bad = all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0]), info)
        if bad.item():
            last = f"{run.out / 'checkpoint.pt'} (after epoch {run.history[-1]['epoch']})" \
                if run.out is not None and run.history else "none (no epoch had finished)"
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: training "
                                   f"stopped. Last good checkpoint: {last}. Try a lower `lr` or `eta`.")
        _step(run, loss, alrs)
        n = len(y)
        sums[0] += loss.item() * n
        sums[1] += (s_out.argmax(1) == y).sum().item() if data.task == "classify" else 0
        sums[2] += n
        if bar is not None:
            rate = sums[2].item() * info.world_size / (time.perf_counter() - t0)
            acc = f" acc {sums[1].item() / sums[2].item():.3f}" if data.task == "classify" else ""
            bar.update(task, advance=1, stats=f"loss {sums[0].item() / sums[2].item():.4f}{acc} {rate:.0f} img/s")
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    all_reduce_sum(sums, info)
    val = run.evaluate(run.model, data.val)
    rec = {"epoch": epoch + 1, "lr": run.opt.param_groups[0]["lr"], "train_loss": sums[0].item() / sums[2].item(),
           "val_loss": val["loss"], f"val_{run.metric}": val[run.metric], "seconds": seconds,
           "images_per_s": sums[2].item() / seconds}
    if data.task == "classify":
        rec["train_acc"] = sums[1].item() / sums[2].item()
    return rec


def _step(run: _Run, loss: torch.Tensor, alrs: list[AdaptiveLR]) -> None:
    """Backward (DDP averages), AMP unscale, the adaptive LR per adder layer, the optimizer and schedule step."""
    run.opt.zero_grad(set_to_none=True)
    (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
    if run.scaler is not None:
        run.scaler.unscale_(run.opt)          # adaptive LR needs true gradients (it is scale-invariant)
    for a in alrs:
        a.apply()
    if run.scaler is not None:
        run.scaler.step(run.opt)
        run.scaler.update()
    else:
        run.opt.step()
    run.sched.step()


def _save_epoch(run: _Run, epoch: int) -> None:
    """The checkpoint first, then the metrics: metrics.json never names an epoch whose checkpoint is missing
    (a full disk stops the run at the checkpoint, each file whole or as it was)."""
    settings = run.recorded
    ckpt.save_checkpoint(run.out / "checkpoint.pt", {
        "epoch": epoch + 1, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(), "scaler": run.scaler.state_dict() if run.scaler else {},
        "etas": run.etas, "history": run.history, "rng": ckpt.rng_state(), "settings": settings})
    write_json(run.out / "metrics.json", {"schema": "adderconv.finetune-metrics/1", "split": run.data.description,
                                          "settings": settings, "epochs": run.history})


def _fake_quantised(model: nn.Module, data: DataSplit, s: TrainSettings, info: DistInfo) -> nn.Module:
    """``model`` with its adder layers training through int<bits> fake quantisation, on the grids quantize
    chooses from the first ``calib_batches`` training batches (the same on every rank, and on a resume)."""
    from adderconv.quant import prepare_qat

    per_rank = max(s.batch_size // info.world_size, 1)
    first = torch.arange(min(len(data.train), max(s.calib_batches, 1) * per_rank))
    return prepare_qat(model.cpu(), loader(data.train, first, per_rank, 0), bits=s.bits, groups=s.groups)


def _finish(run: _Run, energy: bool, arch, notes: list[str]) -> FinetuneResult:
    """Test metrics (and the teacher's), the energy comparison, and the saved model and result."""
    data = run.data
    if run.s.bits is not None:      # the trained grids become codes, without another calibration
        from adderconv.quant import quantize

        run.model = quantize(run.model.cpu(), None, bits=run.s.bits, groups=run.s.groups).to(run.dev)
        notes = [*notes, f"trained through int{run.s.bits} fake quantisation ({run.s.groups} grid(s) per layer); "
                         f"the model tested and written holds the int{run.s.bits} codes"]
    test = run.evaluate(run.model, data.test, bicubic=data.task == "sr")
    teacher_test = run.evaluate(run.teacher, data.test) if run.teacher is not None else None
    result = FinetuneResult(model=run.model, history=run.history, test=test, teacher_test=teacher_test,
                            split=data.description, task=data.task, settings=run.recorded, out=run.out, notes=notes)
    if run.info.is_main:
        if energy:
            result.energy = energy_comparison(run.model, run.teacher, data.input_shape)
        if run.out is not None:
            from adderconv.converters import save_converted   # writes the conversion recipe and arch with the weights

            save_converted(run.model, run.out / "model.safetensors", arch=arch)
            write_json(run.out / "result.json", result.to_json())
    return result


def energy_comparison(student: nn.Module, teacher: nn.Module | None, input_shape: tuple[int, ...],
                      precision: str = "fp32") -> dict[str, Any]:
    """Counts and energy of the student and the teacher at batch 1: :func:`adderconv.analysis.compare.compare_energy`
    under fine-tuning's names (``student``, ``teacher``)."""
    from adderconv.analysis.compare import compare_energy

    return compare_energy(student, teacher, input_shape, precision=precision, names=("student", "teacher"))
