"""From what the user typed (MODEL, --teacher, --data) to a student, a teacher and an input shape.

Rules (the CLI's ``adderconv finetune`` follows them):
- MODEL with adder layers is fine-tuned as it is.
- MODEL without adder layers (a CNN) is first converted with the converter's default policy, except that
  the copied weights are rescaled to unit std (``weight_init="copy_rescaled"``, measured best with KD in
  benchmarks/accuracy.py); ``convert=False`` trains it as it is, e.g. to train the CNN baseline.
- The teacher is ``--teacher`` when given; otherwise the original CNN when MODEL was converted from a weights
  file. A zoo name has random weights, so a CNN from the zoo gives no teacher (distilling from a random
  network only hurts): pass ``--teacher`` with trained weights.
- The input shape is ``--input-shape``, else the zoo default of MODEL (or of the file's architecture), else
  the data source's natural shape. Zoo models are built with the data's number of classes.

>>> p = prepare("lenet5_bn_adder")
>>> (type(p.student).__name__, p.teacher, p.input_shape)
('Sequential', None, (1, 32, 32))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .. import zoo
from ..adaptive_lr import adder_weights
from ..errors import AdderconvError
from ..io import is_zoo_name, load_model
from .data import default_shape

__all__ = ["Prepared", "prepare", "check_outputs"]


@dataclass
class Prepared:
    student: nn.Module
    teacher: nn.Module | None
    input_shape: tuple[int, ...]        # (C, H, W)
    arch: str | None                    # architecture name to store with the trained weights
    notes: list[str] = field(default_factory=list)


def _zoo(name: str, num_classes: int | None) -> nn.Module:
    if num_classes is None or num_classes == 10:
        return zoo.get_model(name)
    try:   # zoo factories are lambdas forwarding **kw; the builders take num_classes
        return zoo.get_model(name, num_classes=num_classes)
    except TypeError:
        raise AdderconvError(f"zoo model {name!r} cannot be built for {num_classes} classes") from None


def prepare(model: str, *, teacher: str | None = None, arch: str | None = None, trust: bool = False,
            convert: bool = True, input_shape: tuple[int, ...] | None = None, data: str = "digits",
            num_classes: int | None = None) -> Prepared:
    """Load (and convert) the student, load the teacher, and settle the input shape; see the module rules."""
    from_zoo = is_zoo_name(model)
    student = _zoo(model, num_classes) if from_zoo else load_model(model, arch=arch, trust=trust)
    notes: list[str] = []
    arch_name = model if from_zoo else arch
    if not arch_name and not from_zoo and str(model).endswith(".safetensors"):
        from ..io import load_state_dict_file
        arch_name = load_state_dict_file(model)[1].get("adderconv.arch")
    shape = tuple(input_shape[-3:]) if input_shape else (
        tuple(zoo.default_input_shape(arch_name)[1:]) if arch_name in zoo.list_models() else default_shape(data))
    t = None
    if teacher is not None:
        t = _zoo(teacher, num_classes) if is_zoo_name(teacher) else load_model(teacher, arch=arch, trust=trust)
        if is_zoo_name(teacher):
            notes.append(f"teacher {teacher!r} is a zoo name: random weights, distillation will not help")
    if not adder_weights(student) and convert:
        from adderconv.converters import Policy, convert as convert_model

        original = student
        example = (torch.zeros(1, *shape),)
        # Copied conv weights are ~10x smaller than the inputs they are subtracted from: |x - w| ~ |x| makes
        # every channel alike, and the adaptive LR (step lr*eta*sqrt(k)) overwrites them at once. Rescaled to
        # unit std they keep the conv's pattern at the scale of fresh N(0, 1) adder weights (README, Fine-tuning).
        student = convert_model(original, Policy(weight_init="copy_rescaled"), example_inputs=example)
        n = len(adder_weights(student))
        if n == 0:
            raise AdderconvError(f"{model}: the converter's default policy converted no layer; nothing to fine-tune "
                                 f"as an AdderNet (use --no-convert to train it as it is)")
        notes.append(f"{model}: no adder layers, converted with the default policy and weights rescaled to unit "
                     f"std ({n} adder layers)")
        if t is None and not from_zoo:
            t = original
            notes.append("teacher: the original CNN (pass --teacher to choose another)")
        elif t is None:
            notes.append("no teacher: a zoo CNN has random weights (pass --teacher with trained weights)")
    return Prepared(student, t, shape, arch_name, notes)


def check_outputs(model: nn.Module, input_shape: tuple[int, ...], task: str, num_classes: int | None) -> None:
    """Fail early, with one line, when the model does not fit the data (wrong classes or image size)."""
    was = model.training
    try:
        with torch.no_grad():
            y = model.eval()(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    except Exception as e:  # the user's model on the user's shape: any failure is a usage error
        raise AdderconvError(f"the model does not run on inputs of shape {input_shape}: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    finally:
        model.train(was)
    if task == "classify" and (y.dim() != 2 or y.shape[1] != num_classes):
        raise AdderconvError(f"the model outputs shape {tuple(y.shape[1:])}, the data has {num_classes} classes")
    if task == "sr" and tuple(y.shape[1:]) != tuple(input_shape):
        raise AdderconvError(f"SR needs output shape == input shape {input_shape}, got {tuple(y.shape[1:])}")
