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
>>> from adderconv.training.data import load_data
>>> res = finetune(get_model("lenet5_bn_adder"), load_data("digits", limit=64), epochs=1, batch_size=32)
>>> sorted(res.test)
['acc', 'loss', 'n']
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adaptive_lr import AdaptiveLR, adder_weights
from ..arch import ArchSpec
from ..errors import AdderconvError
from ..io import write_json
from . import checkpoint as ckpt
from .curves import EpochLog, require_tensorboard
from .data import DataSplit, augment_batch, load_data
from .distill import task_loss
from .distributed import DistInfo, all_reduce_sum, setup, shard, teardown
from .evaluate import autocast, energy_comparison, evaluate, loader
from .prepare import check_outputs

__all__ = ["finetune", "FinetuneResult", "TrainingDiverged", "pick_device", "amp_dtype", "check_settings"]

# Settings that shape the trajectory: resuming with any of them changed would not continue the same run.
_TRAJECTORY_KEYS = ("epochs", "optimizer", "lr", "momentum", "weight_decay", "batch_size", "eta", "eta_relative",
                    "kd_alpha", "kd_temperature", "warmup_epochs", "seed", "amp", "world_size", "adder_lr_scale",
                    "data", "teacher")
# What a checkpoint written before a trajectory key existed implicitly ran with (None: it did not record it,
# so it cannot be checked).
_LEGACY_SETTINGS = {"adder_lr_scale": 1.0, "data": None}


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


# Each setting's valid range: (lowest, lowest is allowed, highest). Checked before any work.
_RANGES = {"epochs": (1, True, None), "batch_size": (1, True, None), "lr": (0, False, None),
           "adder_lr_scale": (0, False, None), "eta": (0, False, None), "weight_decay": (0, True, None),
           "momentum": (0, True, 1), "kd_alpha": (0, True, 1), "kd_temperature": (0, False, None),
           "num_workers": (0, True, None), "calib_batches": (0, True, None), "warmup_epochs": (0, True, None)}


def check_settings(**values: float) -> None:
    """One line naming every setting out of its range (NaN and infinities are never in range)."""
    bad = []
    for name, v in values.items():
        low, closed, high = _RANGES[name]
        ok = math.isfinite(v) and (v >= low if closed else v > low) and (high is None or v <= high)
        if not ok:
            bad.append(f"`{name}` {'>=' if closed else '>'} {low}{f' and <= {high}' if high else ''} (got {v})")
    if bad:
        raise AdderconvError("invalid training settings, need " + "; ".join(bad))


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise AdderconvError(f"`device` must be auto, cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AdderconvError(f"`device` {device}: CUDA is not available on this machine")
    return dev


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """'auto' -> bf16 on GPUs that have it, fp16 on older GPUs, none on CPU; or 'bf16' | 'fp16' | 'off'."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise AdderconvError(f"`amp` must be auto, bf16, fp16 or off, got {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise AdderconvError(f"`amp` {amp} needs a CUDA device (training runs on {device})")
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


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
             epochs: int = 10, optimizer: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
             weight_decay: float = 5e-4, batch_size: int = 256, eta: float = 0.2, eta_relative: bool = False,
             kd_alpha: float = 0.5, kd_temperature: float = 4.0, warmup_epochs: int = 0, recalibrate: bool = True,
             calib_batches: int = 20, device: str = "auto", amp: str = "auto", seed: int = 0,
             out: str | os.PathLike | None = None, resume: bool = False, progress: bool = False,
             log: Callable[[str], None] | None = None, num_workers: int = 0, energy: bool = True,
             arch: str | ArchSpec | None = None, adder_lr_scale: float = 1.0,
             tensorboard: str | os.PathLike | None = None) -> FinetuneResult:
    """Fine-tune ``model`` on ``data`` (a :class:`DataSplit` or a source string, see :func:`load_data`).

    Defaults are the reference CIFAR recipe (SGD lr 0.1, momentum 0.9, wd 5e-4, batch 256, cosine, eta 0.2);
    ``optimizer="adam"`` (``momentum`` is then beta1) suits SR nets.
    With ``out``, writes ``metrics.json`` and ``checkpoint.pt`` each epoch and ``model.safetensors`` and
    ``result.json`` at the end; ``resume=True`` continues from ``out/checkpoint.pt``. ``batch_size`` is global
    (split over DDP ranks). ``arch`` names the architecture stored with the weights. ``adder_lr_scale``
    multiplies the adder weights' learning rate (see the module docstring; 50 for SR nets under Adam).
    With ``out`` each epoch also redraws ``curves.html``; ``tensorboard`` is a directory for TensorBoard logs.
    Raises :class:`TrainingDiverged` on a NaN/inf loss.
    """
    if optimizer not in ("sgd", "adam"):
        raise AdderconvError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    check_settings(epochs=epochs, batch_size=batch_size, lr=lr, adder_lr_scale=adder_lr_scale, eta=eta,
                    weight_decay=weight_decay, momentum=momentum, kd_alpha=kd_alpha, kd_temperature=kd_temperature,
                    num_workers=num_workers, calib_batches=calib_batches, warmup_epochs=warmup_epochs)
    if resume and out is None:
        raise AdderconvError("`resume` needs the output directory (`out`) of the run to continue")
    if tensorboard:
        require_tensorboard()
    dev = pick_device(device)
    info = setup(dev.type)
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)     # one GPU per rank (torchrun's LOCAL_RANK)
    try:
        return _run(**locals())
    finally:
        teardown(info)


def _run(model, data, teacher, epochs, optimizer, lr, momentum, weight_decay, batch_size, eta, eta_relative, kd_alpha,
         kd_temperature, warmup_epochs, recalibrate, calib_batches, device, amp, seed, out, resume, progress, log,
         num_workers, energy, arch, adder_lr_scale, tensorboard, dev, info: DistInfo) -> FinetuneResult:
    say = (log or (lambda s: None)) if info.is_main else (lambda s: None)
    if isinstance(data, str):
        data = load_data(data)
    settings = {k: v for k, v in locals().items() if k in _TRAJECTORY_KEYS}
    settings.update(world_size=info.world_size, amp=amp, device=str(dev), teacher=teacher is not None,
                    data=data.description)   # the source, split seed and sizes: resuming on other data is refused
    dtype = amp_dtype(amp, dev)
    out = Path(out) if out is not None else None
    torch.manual_seed(seed)
    model.to(dev)
    if teacher is not None:
        teacher.to(dev).eval()      # run under no_grad below; the caller's requires_grad flags are left alone
    check_outputs(model, data.input_shape, data.task, data.num_classes)
    per_rank = max(batch_size // info.world_size, 1)
    n_rank = len(shard(torch.arange(len(data.train)), info))
    steps = n_rank // per_rank + (1 if n_rank % per_rank >= 2 else 0)   # a 1-sample tail would break BN
    if steps == 0:
        raise AdderconvError(f"the training split has {len(data.train)} samples: too few for batch {batch_size}")
    params: list = [p for p in model.parameters() if p.requires_grad]
    if adder_lr_scale != 1.0:       # adder weights in their own group (one group otherwise: old checkpoints load)
        ids = {id(p) for p in adder_weights(model)}
        params = [g for g in ({"params": [p for p in params if id(p) not in ids]},
                              {"params": [p for p in params if id(p) in ids], "lr": lr * adder_lr_scale})
                  if g["params"]]
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:   # Adam (SR nets' usual optimizer; the adaptive LR still sets each adder layer's gradient norm)
        opt = torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _cosine(epochs * steps, warmup_epochs * steps))
    scaler = torch.amp.GradScaler(dev.type) if dtype == torch.float16 else None
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        state = ckpt.load_checkpoint(out / "checkpoint.pt")
        was = {k: state["settings"].get(k, _LEGACY_SETTINGS.get(k)) for k in _TRAJECTORY_KEYS}
        changed = {k: (was[k], settings[k]) for k in _TRAJECTORY_KEYS
                   if was[k] != settings[k] and not (k in _LEGACY_SETTINGS and was[k] is None)}
        if changed:
            raise AdderconvError(f"`resume`: settings differ from the checkpoint's (was, now): {changed}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        etas, history, start = list(state["etas"]), list(state["history"]), int(state["epoch"])
        ckpt.set_rng_state(state["rng"])
        say(f"resumed from {out / 'checkpoint.pt'} after epoch {start}/{epochs}")
    else:
        if recalibrate:
            calib = loader(data.train, shard(torch.arange(len(data.train)), info)[:calib_batches * per_rank],
                           per_rank, num_workers, drop_tail=2)
            from adderconv.converters import recalibrate_bn

            with autocast(dev, dtype):
                recalibrate_bn(model, calib)
        # Relative eta (opt-in): each adder layer moves lr * eta of its starting RMS (see the module docstring).
        etas = [eta * (p.detach().float().pow(2).mean().sqrt().item() if eta_relative else 1.0)
                for p in adder_weights(model)]
    alrs = [AdaptiveLR(model, eta=e, params=[p]) for p, e in zip(adder_weights(model), etas)]
    net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if info.enabled else model
    say(f"data: {data.description}")
    say(f"training on {dev}{f' x{info.world_size} ranks' if info.enabled else ''}, amp {dtype or 'off'}, "
        f"{steps} steps/epoch of {per_rank * info.world_size}, {len(alrs)} adder layers, "
        f"teacher {'yes' if teacher is not None else 'no'}")
    metric = "psnr" if data.task == "sr" else "acc"
    teacher_val = None
    if teacher is not None and (out is not None or tensorboard):
        with torch.random.fork_rng(devices=[]):     # the curves' reference line leaves the run's RNG as it was
            teacher_val = evaluate(teacher, data.val, data.task, per_rank, dev, dtype, info, num_workers)[metric]
    curves = EpochLog(out if info.is_main else None, metric=metric, teacher=teacher_val,
                      tensorboard=tensorboard if info.is_main else None,
                      title=getattr(arch, "name", arch) or type(model).__name__)
    with _progress(progress and info.is_main) as bar:
        for epoch in range(start, epochs):
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)   # data order: a function of (seed, epoch)
            order = shard(torch.randperm(len(data.train), generator=gen), info)
            aug = torch.Generator().manual_seed(seed * 100_003 + epoch + 7919 * (info.rank + 1))
            net.train()
            task = bar.add_task(f"epoch {epoch + 1}/{epochs}", total=steps, stats="") if bar else None
            sums = torch.zeros(3, dtype=torch.float64)          # loss * n, correct, n
            t0 = time.perf_counter()
            for i, (x, y) in enumerate(loader(data.train, order, per_rank, num_workers, drop_tail=2)):
                x, y = augment_batch(data.augment, x, y, aug)
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                with autocast(dev, dtype):
                    with torch.no_grad():
                        t_out = teacher(x) if teacher is not None and kd_alpha > 0 else None
                    s_out = net(x)
                    loss = task_loss(data.task, s_out, t_out, y, kd_alpha, kd_temperature)
                bad = all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0]), info)
                if bad.item():
                    last = f"{out / 'checkpoint.pt'} (after epoch {history[-1]['epoch']})" \
                        if out is not None and history else "none (no epoch had finished)"
                    raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}: training "
                                           f"stopped. Last good checkpoint: {last}. Try a lower `lr` or `eta`.")
                opt.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if scaler is not None:
                    scaler.unscale_(opt)          # adaptive LR needs true gradients (it is scale-invariant)
                for a in alrs:
                    a.apply()
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                sched.step()
                n = len(y)
                sums[0] += loss.item() * n
                sums[1] += (s_out.argmax(1) == y).sum().item() if data.task == "classify" else 0
                sums[2] += n
                if bar is not None:
                    rate = sums[2].item() * info.world_size / (time.perf_counter() - t0)
                    acc = f" acc {sums[1].item() / sums[2].item():.3f}" if data.task == "classify" else ""
                    bar.update(task, advance=1, stats=f"loss {sums[0].item() / sums[2].item():.4f}{acc} "
                                                      f"{rate:.0f} img/s")
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            all_reduce_sum(sums, info)
            val = evaluate(model, data.val, data.task, per_rank, dev, dtype, info, num_workers)
            rec = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": sums[0].item() / sums[2].item(),
                   "val_loss": val["loss"], f"val_{metric}": val[metric], "seconds": seconds,
                   "images_per_s": sums[2].item() / seconds}
            if data.task == "classify":
                rec["train_acc"] = sums[1].item() / sums[2].item()
            history.append(rec)
            say(f"epoch {epoch + 1}/{epochs}: train loss {rec['train_loss']:.4f}, val {metric} "
                f"{val[metric]:.4f}, {rec['images_per_s']:.0f} img/s")
            if out is not None and info.is_main:
                write_json(out / "metrics.json", {"schema": "adderconv.finetune-metrics/1", "split": data.description,
                                                  "settings": settings, "epochs": history})
                ckpt.save_checkpoint(out / "checkpoint.pt", {
                    "epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler else {},
                    "etas": etas, "history": history, "rng": ckpt.rng_state(), "settings": settings})
            curves.epoch(history)                   # curves.html beside metrics.json; TensorBoard scalars
    curves.close()
    test = evaluate(model, data.test, data.task, per_rank, dev, dtype, info, num_workers, bicubic=data.task == "sr")
    teacher_test = evaluate(teacher, data.test, data.task, per_rank, dev, dtype, info, num_workers) \
        if teacher is not None else None
    result = FinetuneResult(model, history, test, teacher_test, data.description, data.task, settings, out=out,
                            notes=list(curves.notes))
    if info.is_main:
        if energy:
            result.energy = energy_comparison(model, teacher, data.input_shape)
            if not result.energy.get("available"):
                result.notes.append(f"energy comparison skipped: {result.energy['reason']}")
        if out is not None:
            from adderconv.converters import save_converted   # writes the conversion recipe and arch with the weights

            save_converted(model, out / "model.safetensors", arch=arch)
            write_json(out / "result.json", result.to_json())
    return result
