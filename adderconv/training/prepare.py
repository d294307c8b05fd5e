"""From what the user typed (MODEL, --teacher, --data) to a student, a teacher and an input shape.

Data before model: the input shape is settled first (:func:`input_shape_for`), the data is loaded with it,
and the models are then built once, for the data's number of classes. Rules (``adderconv finetune`` follows them):
- MODEL with adder layers is fine-tuned as it is; a quantised one (int8 adder layers) is evaluated as it is
  (``epochs`` 0; it does not train).
- MODEL without adder layers (a CNN) is first converted by ``policy``: by default the converter's default policy,
  except that the copied weights are rescaled to unit std (:data:`DEFAULT_WEIGHT_INIT` ``"copy_rescaled"``,
  measured best with KD in benchmarks/accuracy.py); ``convert=False`` trains it as it is, e.g. to train the CNN
  baseline.
- The teacher is ``--teacher`` when given; otherwise the original CNN when MODEL was converted from a weights
  file. A zoo name has random weights, so a CNN from the zoo gives no teacher (distilling from a random
  network only hurts): pass ``--teacher`` with trained weights.
- The input shape is ``--input-shape`` (the model's input, batch first; the data's sample shape is its last
  three dimensions, :func:`adderconv.io.sample_shape`), else the zoo default of MODEL (or of the file's
  architecture), else the data source's natural shape. Models built from a name (zoo, ``torchvision:NAME``,
  ``module:factory``) are built with the data's number of classes, and the saved weights record it, so every
  command rebuilds them.

>>> p = prepare("lenet5_bn_adder", input_shape=(1, 32, 32), num_classes=2)
>>> (type(p.student).__name__, p.teacher, p.arch.describe())
('Sequential', None, 'lenet5_bn_adder(num_classes=2)')
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..adaptive_lr import adder_weights
from ..arch import ArchSpec
from ..errors import AdderconvError, first_line
from ..io import ModelKind, input_shape_of, model_kind, sample_shape
from ..loading import open_model
from ..quant.recipe import is_quantized
from ..data import default_shape

if TYPE_CHECKING:
    from adderconv.converters.policy import Policy

__all__ = ["Prepared", "prepare", "input_shape_for", "check_outputs", "default_policy", "DEFAULT_WEIGHT_INIT"]

DEFAULT_WEIGHT_INIT = "copy_rescaled"   # fine-tuning's one departure from the converter's default policy


@dataclass
class Prepared:
    student: nn.Module
    teacher: nn.Module | None
    input_shape: tuple[int, ...]        # (C, H, W)
    arch: ArchSpec | None               # the student's architecture, stored with the trained weights
    notes: list[str] = field(default_factory=list)


def _is_name(source: str) -> bool:
    return model_kind(source) in (ModelKind.ZOO, ModelKind.SPEC)


def default_policy() -> Policy:
    """How fine-tuning converts a CNN unless told otherwise: the converter's default policy with the copied
    weights rescaled to unit std."""
    from adderconv.converters import Policy

    return Policy(weight_init=DEFAULT_WEIGHT_INIT)


def input_shape_for(model: str, arch: str | None, input_shape: tuple[int, ...] | None, data: str) -> tuple[int, ...]:
    """(C, H, W): the sample shape of ``input_shape``, else of the zoo default of MODEL / ``arch`` / the file's
    architecture, else the data source's natural shape."""
    shape = input_shape or input_shape_of(model, arch)
    return sample_shape(shape) if shape else default_shape(data)


def _build(source: str, num_classes: int | None, arch: str | None, trust: bool):
    """(model, spec, notes): a name is built for ``num_classes``; a file is loaded as it is."""
    if _is_name(source):
        spec = ArchSpec.parse(source, {"num_classes": num_classes} if num_classes is not None else None)
        return spec.build(), spec, []
    loaded = open_model(source, arch=arch, trust=trust)
    return loaded.model, loaded.arch, loaded.notes


def prepare(model: str, *, teacher: str | None = None, arch: str | None = None, trust: bool = False,
            convert: bool = True, input_shape: tuple[int, ...], num_classes: int | None = None,
            policy: Policy | None = None) -> Prepared:
    """Load (and convert, by ``policy``; None: :func:`default_policy`) the student and load the teacher, for data
    of ``input_shape`` (C, H, W) and ``num_classes`` (None: not a classification task); see the module rules."""
    student, spec, notes = _build(model, num_classes, arch, trust)
    shape = tuple(input_shape)
    t = None
    if teacher is not None:
        t, _, t_notes = _build(teacher, num_classes, arch, trust)
        notes += t_notes
        if _is_name(teacher):
            notes.append(f"teacher {teacher!r} is built from its name: random weights, distillation will not help")
    if not adder_weights(student) and convert and not is_quantized(student):   # int8: converted already
        from adderconv.converters import convert as convert_model

        given = policy is not None and policy != default_policy()
        original = student
        example = (torch.zeros(1, *shape),)
        # Copied conv weights are ~10x smaller than the inputs they are subtracted from: |x - w| ~ |x| makes
        # every channel alike, and the adaptive LR (step lr*eta*sqrt(k)) overwrites them at once. Rescaled to
        # unit std they keep the conv's pattern at the scale of fresh N(0, 1) adder weights (README, Fine-tuning).
        student = convert_model(original, policy if given else default_policy(), example_inputs=example)
        n = len(adder_weights(student))
        which = "the given policy" if given else "the converter's default policy"
        if n == 0:
            raise AdderconvError(f"{model}: {which} converted no layer; nothing to fine-tune as an AdderNet (turn "
                                 f"`convert` off to train it as it is)")
        notes.append(f"{model}: no adder layers, converted with the given policy ({n} adder layers)" if given else
                     f"{model}: no adder layers, converted with the default policy and weights rescaled to unit "
                     f"std ({n} adder layers)")
        if t is None and not _is_name(model):
            t = original
            notes.append("teacher: the original CNN (pass --teacher to choose another)")
        elif t is None:
            notes.append("no teacher: a CNN built from its name has random weights (pass --teacher with trained "
                         "weights)")
    return Prepared(student, t, shape, spec, notes)


def check_outputs(model: nn.Module, input_shape: tuple[int, ...], task: str, num_classes: int | None) -> None:
    """Fail early, with one line, when the model does not fit the data (wrong classes or image size)."""
    was = model.training
    try:
        with torch.no_grad():
            y = model.eval()(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    except Exception as e:  # the user's model on the user's shape: any failure is a usage error
        raise AdderconvError(f"the model does not run on inputs of shape {input_shape}: {first_line(e)}") from None
    finally:
        model.train(was)
    if task == "classify" and (y.dim() != 2 or y.shape[1] != num_classes):
        raise AdderconvError(f"the model outputs shape {tuple(y.shape[1:])}, the data has {num_classes} classes")
    if task == "sr" and tuple(y.shape[1:]) != tuple(input_shape):
        raise AdderconvError(f"SR needs output shape == input shape {input_shape}, got {tuple(y.shape[1:])}")
