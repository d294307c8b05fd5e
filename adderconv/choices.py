"""Every closed set of choices an option takes, said once and torch-free.

The library validates with these tuples (:func:`adderconv.errors.check_choice`) and the CLI builds its options
from the same tuples, so the help text, the command line's check and the library's check cannot drift. Torch-free
on purpose: ``adderconv --help`` and a usage error must not import torch (tests/test_startup.py).
"""
from __future__ import annotations

__all__ = ["PRECISIONS", "PRICINGS", "ENGINES", "CAPTURES", "COUNT_OPTIMIZERS", "TRAIN_OPTIMIZERS", "AMP_MODES",
           "CALIBRATION_METHODS", "SAVE_FORMATS", "STRATEGIES", "WEIGHT_INITS", "BENCH_NETS", "KERNEL_BUILDS"]

#: int4..int7: what quantised adder layers below 8 bits declare (analysis.tables prices them by estimate)
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "int4", "int5", "int6", "int7", "int8", "int16",
                               "int32")                                              # analysis.tables
PRICINGS: tuple[str, ...] = ("hardware", "papers")                                  # analysis.energy
ENGINES: tuple[str, ...] = ("arithmetic", "zigzag")                                  # analysis.energy
CAPTURES: tuple[str, ...] = ("dispatch", "real", "jit")                              # analysis.capture
COUNT_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")          # an optimizer step counted (analysis.training)
TRAIN_OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")          # what fine-tuning trains with (training.settings)
AMP_MODES: tuple[str, ...] = ("auto", "bf16", "fp16", "off")                         # training.settings
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "mse")               # quant.scheme
SAVE_FORMATS: tuple[str, ...] = ("safetensors", "pickle", "pt2")                     # converters.save
STRATEGIES: tuple[str, ...] = ("swap", "aten")               # module swap, or a torch.export graph rewrite
WEIGHT_INITS: tuple[str, ...] = ("copy", "copy_rescaled", "normal")                  # converters.policy
BENCH_NETS: tuple[str, ...] = ("resnet20", "resnet50")                               # kernels.benchmark
KERNEL_BUILDS: tuple[str, ...] = ("cpu", "int8")                                  # kernels.build
