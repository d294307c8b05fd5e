"""Architectures by name: what a MODEL or ``--arch`` spec may be, and what a file may ask us to build.

A spec is one of
- a zoo name (``resnet20_adder``; ``adderconv zoo`` lists them);
- ``torchvision:NAME``: a registered torchvision builder (``torchvision:resnet18``, ``torchvision:r3d_18``);
- ``timm:NAME``: a timm model, when timm is installed;
- ``package.module:factory``: any importable callable that returns an ``nn.Module`` (``torchvision.models:resnet18``,
  or ``mypkg.models:build`` for ``mypkg/`` in the working directory: a spec the user typed also finds modules there,
  as ``python -m adderconv`` would; the console script's own path does not hold it).
Each builds with random initialisation (no weights are downloaded) and with keyword arguments of plain types
(the class count a model was fine-tuned for, say), which saved files record beside the name.

A spec the *user* typed is the user's choice and builds as asked. A spec read from a *file* is data: it is
built only when it names our own zoo or an allow-listed builder (torchvision's and timm's registries), with
allow-listed keyword arguments; anything else needs the user's own ``arch`` or ``trust``, because
importing a module and calling a function named by a file runs code the file chose. For the same reason the
working directory is searched only for a spec the user typed, never for one a file recorded (even with ``trust``:
trusting a file is not trusting whatever code lies beside it).

>>> spec = ArchSpec.parse("lenet5_bn", {"num_classes": 2})
>>> spec.build()[-1].out_features
2
>>> ArchSpec.from_metadata({"adderconv.arch": "os:abort"}).build(trusted=False)
Traceback (most recent call last):
...
adderconv.errors.AdderconvError: the file names architecture 'os:abort', which is neither a zoo model nor ...
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from . import zoo
from .errors import AdderconvError, first_line
from .untrusted import json_loads, plain

__all__ = ["ArchSpec", "Budget", "FileKwargs", "looks_like_spec", "default_input_shape"]

ARCH_KEY = "adderconv.arch"
KWARGS_KEY = "adderconv.arch_kwargs"

# Keyword arguments a file may pass to a torchvision/timm builder: shape-defining plain values only. Anything
# that can fetch or read weights (weights, pretrained, checkpoint_path, pretrained_cfg, ...) is not here.
_FILE_KWARGS = frozenset({"num_classes", "in_chans", "in_channels", "aux_logits", "init_weights", "transform_input",
                          "dropout", "drop_rate", "drop_path_rate", "global_pool"})
_PLAIN = (bool, int, float, str, type(None))


class FileKwargs(dict):
    """Architecture arguments a file asked for (they travel with the spec, whoever names the architecture):
    such a spec is built within a :class:`Budget`, because a few bytes can ask for ``blocks=10**8``."""


@dataclass(frozen=True)
class Budget:
    """How much a spec may build: parameter and buffer elements, and modules. Checked on the meta device
    (nothing allocated) before the real build; the default bounds what a file alone may ask for (1 G elements,
    4 GiB in float32; 10,000 modules, several times the largest torchvision or timm model)."""

    elements: int = 2**30
    modules: int = 10_000

    @classmethod
    def for_weights(cls, numel: int, tensors: int) -> "Budget":
        """The budget of an architecture whose weights a file holds: not much beyond what the file holds
        (quantised and official layouts differ a little from the architecture built first)."""
        return cls(elements=2 * numel + 2**20, modules=16 * tensors + 1_000)


class _OverBudget(Exception):
    pass


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN) and not (isinstance(value, float) and not math.isfinite(value))


def looks_like_spec(text: str) -> bool:
    """Whether ``text`` reads as an architecture spec rather than a file name (``module:factory``, short forms)."""
    module, sep, attr = text.partition(":")
    return bool(sep and module and attr.isidentifier() and all(p.isidentifier() for p in module.split(".")))


@dataclass(frozen=True)
class ArchSpec:
    """An architecture name and the plain keyword arguments it is built with."""

    name: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    from_file: bool = field(default=False, compare=False)     # read from a file's metadata: never a cwd import

    @classmethod
    def parse(cls, name: str, kwargs: Mapping[str, Any] | None = None) -> ArchSpec:
        kwargs = dict(kwargs or {})
        if not isinstance(name, str) or not (name in zoo.list_models() or looks_like_spec(name)):
            raise AdderconvError(f"an architecture must be a zoo name ({', '.join(zoo.list_models())}), "
                                 f"'torchvision:NAME', 'timm:NAME' or 'module:factory', got {name!r}")
        bad = {k: v for k, v in kwargs.items() if not isinstance(k, str) or not _plain(v)}
        if bad:
            raise AdderconvError(f"architecture arguments must be plain values (numbers, strings, booleans), got {bad}")
        return cls(name, kwargs)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str]) -> ArchSpec | None:
        """The spec a saved file records (``adderconv.arch`` and ``adderconv.arch_kwargs``), or None."""
        name = metadata.get(ARCH_KEY)
        if not name:
            return None
        kwargs = json_loads(metadata.get(KWARGS_KEY) or "{}", "architecture arguments in the file's metadata")
        if not isinstance(kwargs, dict):
            raise AdderconvError(f"architecture arguments in the file's metadata must be a JSON object, got "
                                 f"{plain(repr(kwargs))[:80]}")
        spec = cls.parse(name, kwargs)
        return cls(spec.name, FileKwargs(spec.kwargs), from_file=True)

    def to_metadata(self) -> dict[str, str]:
        md = {ARCH_KEY: self.name}
        if self.kwargs:
            md[KWARGS_KEY] = json.dumps(dict(self.kwargs), sort_keys=True)
        return md

    @property
    def is_zoo(self) -> bool:
        return self.name in zoo.list_models()

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in sorted(self.kwargs.items()))
        return f"{self.name}({args})" if args else self.name

    def build(self, *, trusted: bool = True, budget: Budget | None = None) -> nn.Module:
        """A freshly initialised model. ``trusted=False`` (a spec read from a file) builds only the zoo and
        allow-listed builders with allow-listed arguments; the error says what to do otherwise. With a
        ``budget`` (by default, when a file chose the arguments: :class:`FileKwargs`) the model is first built
        on the meta device, and refused in one line if it would exceed it."""
        if budget is None and isinstance(self.kwargs, FileKwargs) and self.kwargs:
            budget = Budget()
        if self.is_zoo:
            factory = lambda **kw: zoo.get_model(self.name, **kw)  # noqa: E731
            if budget is not None:
                self._check_budget(factory, budget)
            return self._call(factory)
        module_name, _, attr = self.name.partition(":")
        if not trusted:
            if _allow_listed(module_name, attr) is None:
                raise AdderconvError(
                    f"the file names architecture {self.name!r}, which is neither a zoo model nor an allow-listed "
                    f"builder: building it would run code the file chose; pass `arch` with the architecture you "
                    f"expect (or `trust` if you trust the file)")
            if extra := sorted(set(self.kwargs) - _FILE_KWARGS):
                raise AdderconvError(f"the file asks for architecture arguments {extra} beyond the allowed "
                                     f"{sorted(_FILE_KWARGS)}; pass `arch` (or `trust` if you trust the file)")
        factory = _factory(module_name, attr, search_cwd=not self.from_file)
        if budget is not None:
            self._check_budget(factory, budget)
        return self._call(factory)

    def _check_budget(self, factory, budget: Budget) -> None:
        """Build on the meta device, counting parameter and buffer elements and modules as they are registered;
        stop at the first one beyond ``budget`` (so 10**8 blocks stop within the budget's time, not after)."""
        import torch
        from torch.nn.modules import module as nn_module

        seen = {"elements": 0, "modules": 0}

        def count(kind: str, n: int) -> None:
            seen[kind] += n
            if seen[kind] > getattr(budget, kind):
                raise _OverBudget(kind)

        hooks = [nn_module.register_module_parameter_registration_hook(
                     lambda m, name, t: count("elements", t.numel()) if t is not None else None),
                 nn_module.register_module_buffer_registration_hook(
                     lambda m, name, t: count("elements", t.numel()) if t is not None else None),
                 nn_module.register_module_module_registration_hook(lambda m, name, sub: count("modules", 1))]
        try:
            with torch.device("meta"):
                factory(**self.kwargs)
        except _OverBudget as e:
            limit = getattr(budget, str(e))
            raise AdderconvError(f"architecture {plain(self.describe())[:200]} would hold more than {limit:,} "
                                 f"{'parameter elements' if str(e) == 'elements' else 'modules'}, more than the "
                                 f"file may ask for: refusing to build it (pass `arch` with the arguments "
                                 f"you expect)") from None
        except Exception:  # noqa: S110  the real build says what is wrong with the arguments
            pass
        finally:
            for h in hooks:
                h.remove()

    def _call(self, factory) -> nn.Module:
        try:
            model = factory(**self.kwargs)
        except AdderconvError:
            raise
        except Exception as e:  # the factory is user or third-party code: any failure is a bad spec
            raise AdderconvError(f"architecture {self.describe()} could not be built: {first_line(e)}") from None
        if not isinstance(model, nn.Module):
            raise AdderconvError(f"architecture {self.describe()} returned {type(model).__name__}, not an nn.Module")
        return model


def _allow_listed(module_name: str, attr: str):
    """The registered builder ``module:attr`` names, if it is torchvision's or timm's, else None."""
    if module_name == "timm" or module_name.startswith("timm."):
        try:
            import timm
        except ImportError:
            return None
        return (lambda **kw: timm.create_model(attr, pretrained=False, **kw)) if attr in timm.list_models() else None
    if module_name in ("torchvision", "torchvision.models") or module_name.startswith("torchvision.models."):
        from torchvision import models
        if attr not in models.list_models():
            return None
        builder = models.get_model_builder(attr)
        if module_name != "torchvision" and getattr(importlib.import_module(module_name), attr, None) is not builder:
            return None
        return builder
    return None


def _factory(module_name: str, attr: str, *, search_cwd: bool = False):
    if (builder := _allow_listed(module_name, attr)) is not None:
        return builder
    if module_name in ("torchvision", "timm"):
        raise AdderconvError(f"{module_name}:{attr}: no such {module_name} model"
                             + ("" if module_name == "torchvision" or _has_timm() else " (timm is not installed)"))
    if search_cwd:
        _search_cwd()
    try:
        return getattr(importlib.import_module(module_name), attr)
    except Exception as e:  # ImportError, AttributeError, or whatever the module raises while importing
        raise AdderconvError(f"cannot import architecture {module_name}:{attr}: {first_line(e)}") from None


def _search_cwd() -> None:
    """Let a user's ``module:factory`` find modules in the working directory, as ``python -m`` does (the console
    script's ``sys.path`` starts at its own folder instead). Appended, not prepended: a folder named like an
    installed package does not shadow it. It stays for the process, so the user's package can import its own
    modules lazily when the factory runs."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.append(cwd)
        importlib.invalidate_caches()


def _has_timm() -> bool:
    return importlib.util.find_spec("timm") is not None


def default_input_shape(*names: str | ArchSpec | None) -> tuple[int, ...] | None:
    """The first known default input shape among ``names`` (zoo models know theirs), else None.

    >>> default_input_shape(None, "resnet20")
    (1, 3, 32, 32)
    """
    for n in names:
        name = n.name if isinstance(n, ArchSpec) else n
        if isinstance(name, str) and name in zoo.list_models():
            return zoo.default_input_shape(name)
    return None
