"""Knowledge distillation losses: the teacher is the original CNN, the student its adder version.

Classification uses logit KD (Hinton et al., 2015): ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(t/T || s/T)``.
Converted adder networks keep the CNN's layer structure but not its feature statistics (adder outputs are
all negative before BN), so matching intermediate features would fight the BN that re-normalises them;
logits are the one place where both networks speak the same language. For SR the "logits" are the output
image: ``(1 - alpha) * L1(s, hr) + alpha * L1(s, teacher)``.

>>> import torch
>>> s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([1, 2, 3, 4])
>>> float(kd_loss(s, t, y, alpha=0.0)) == float(F.cross_entropy(s, y))
True
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["kd_loss", "sr_kd_loss", "task_loss"]


def kd_loss(student: Tensor, teacher: Tensor | None, target: Tensor, alpha: float = 0.5,
            temperature: float = 4.0) -> Tensor:
    """Cross-entropy mixed with the temperature-softened KL divergence to the teacher's logits."""
    ce = F.cross_entropy(student.float(), target)
    if teacher is None or alpha == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher.float() / t, 1),
                  log_target=True, reduction="batchmean") * (t * t)
    return (1 - alpha) * ce + alpha * kl


def sr_kd_loss(student: Tensor, teacher: Tensor | None, target: Tensor, alpha: float = 0.5) -> Tensor:
    """L1 to the high-resolution target, mixed with L1 to the teacher's output."""
    l1 = F.l1_loss(student.float(), target.float())
    if teacher is None or alpha == 0:
        return l1
    return (1 - alpha) * l1 + alpha * F.l1_loss(student.float(), teacher.float())


def task_loss(task: str, student: Tensor, teacher: Tensor | None, target: Tensor, alpha: float,
              temperature: float) -> Tensor:
    """The training loss of ``task`` ("classify" or "sr")."""
    if task == "sr":
        return sr_kd_loss(student, teacher, target, alpha)
    return kd_loss(student, teacher, target, alpha, temperature)
