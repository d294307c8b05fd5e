"""One model against another in counts and energy at batch 1: fine-tuning's student vs its teacher,
quantisation's int8 model vs its float source.

>>> from adderconv import get_model
>>> res = compare_energy(get_model("lenet5_bn_adder"), get_model("lenet5_bn"), (1, 32, 32))
>>> res["a"]["mul"] < res["b"]["mul"], res["energy_ratio"] < 1
(True, True)
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .api import analyze

__all__ = ["compare_energy"]


def compare_energy(a: nn.Module, b: nn.Module | None, input_shape: tuple[int, ...], *,
                   precision: str | None = "fp32", names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Counts and energy of ``a`` and ``b`` (None: ``a`` alone) on one input of ``input_shape`` ((C, H, W) or
    (N, C, H, W); priced at batch 1), and ``energy_ratio`` = a / b.

    ``precision`` prices every layer that declares none (``energy_precision``, e.g. a quantised layer's
    ``"int8"``): a layer that declares one is priced at it. None means fp32 there, recorded as None (each
    layer's own precision). The models are analysed as copies, on the CPU, in eval mode. The result:
    ``{"available": True, "precision", "input_shape", names[0]: {"mul", "add", "energy_pj"}, names[1]: {...},
    "energy_ratio"}`` (``names[1]`` and the ratio only with ``b``; the ratio only when ``b`` costs anything).
    """
    shape = (1, *input_shape[-3:])
    res: dict[str, Any] = {"available": True, "precision": precision, "input_shape": list(shape)}
    for name, m in zip(names, (a, b)):
        if m is None:
            continue
        t = analyze(copy.deepcopy(m).cpu().eval(), shape, precision=precision or "fp32").totals
        res[name] = {"mul": int(t.mul), "add": int(t.add), "energy_pj": float(t.energy_pj)}
    if b is not None and res[names[1]]["energy_pj"] > 0:
        res["energy_ratio"] = res[names[0]]["energy_pj"] / res[names[1]]["energy_pj"]
    return res
