"""Safe model loading and atomic file writing.

Safe by default: zoo names, state dicts (``torch.load(weights_only=True)``) and safetensors files hold only
tensors. A pickled whole module, TorchScript or a ``.pt2`` archive can run code when loaded, so they load only
with ``trust=True`` (the CLI's ``--trust``), and the error says why otherwise.
"""
from __future__ import annotations

import collections
import contextlib
import importlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import zoo
from .errors import AdderconvError

__all__ = ["load_model", "build_arch", "load_state_dict_file", "atomic_write", "write_json", "is_zoo_name"]

_TRUST_HINT = ("it can execute arbitrary code when loaded. Pass --trust (trust=True) only if you trust "
               "the file, or save a state dict / safetensors file and pass --arch instead")


def is_zoo_name(source: str | os.PathLike) -> bool:
    return str(source) in zoo.list_models() and not Path(source).exists()


def build_arch(spec: str) -> nn.Module:
    """A fresh model from a zoo name or ``"package.module:factory"`` (called with no arguments)."""
    if spec in zoo.list_models():
        return zoo.get_model(spec)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AdderconvError(f"--arch must be a zoo name ({', '.join(zoo.list_models())}) or 'module:factory', "
                             f"got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise AdderconvError(f"cannot import architecture {spec!r}: {e}") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise AdderconvError(f"{spec!r} returned {type(model).__name__}, not an nn.Module")
    return model


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise AdderconvError(f"{path}: not a readable safetensors file ({e})") from None


def _read_torch_file(path: Path, trust: bool) -> object:
    """torch.load with weights_only=True; a full unpickle only when trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({str(e).splitlines()[0]})") from None
        if not trust:
            raise AdderconvError(f"{path}: this file is a pickled Python object, not a state dict: "
                                 f"{_TRUST_HINT}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({str(e).splitlines()[0]})") from None
    return torch.load(path, map_location="cpu", weights_only=False)


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) from a safetensors file or a tensors-only torch file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _as_state_dict(_read_torch_file(path, trust=False), path), {}


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AdderconvError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    return obj


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())


def load_model(source: str | os.PathLike, arch: str | None = None, trust: bool = False) -> nn.Module:
    """Load a model from a zoo name, a state dict / safetensors file (+ ``arch``), or, with ``trust``, a pickle.

    Files written by ``adderconv convert`` carry their recipe and need no ``arch`` beyond the original's.
    """
    if is_zoo_name(source):
        return zoo.get_model(str(source))
    path = Path(source)
    if not path.exists():
        raise AdderconvError(f"{source}: no such file, and not a zoo model ({', '.join(zoo.list_models())})")
    if path.is_dir():
        raise AdderconvError(f"{source}: is a directory, expected a model file")
    if path.suffix == ".onnx":
        raise AdderconvError(f"{source}: an ONNX file cannot be loaded as a PyTorch module")
    if path.suffix == ".pt2":
        if not trust:
            raise AdderconvError(f"{source}: refusing to load a .pt2 archive: {_TRUST_HINT}")
        return torch.export.load(path).module()
    if _is_torchscript(path):
        if not trust:
            raise AdderconvError(f"{source}: refusing to load TorchScript: {_TRUST_HINT}")
        return torch.jit.load(str(path), map_location="cpu")
    if path.suffix == ".safetensors":
        state, metadata = _read_safetensors(path)
    else:
        obj = _read_torch_file(path, trust)
        if isinstance(obj, nn.Module):
            return obj
        state, metadata = _as_state_dict(obj, path), {}
    arch = arch or metadata.get("adderconv.arch")
    if not arch:
        raise AdderconvError(f"{source}: a state dict holds no architecture; pass --arch <zoo name | module:factory>")
    model = build_arch(arch)
    recipe = metadata.get("adderconv.recipe")
    if recipe:
        from .converters import apply_recipe  # the converter owns the recipe format
        model = apply_recipe(model, recipe)
    if getattr(state, "_metadata", None) is None:
        # safetensors keeps no per-module state-dict versions (MNASNet refuses to load without them); the
        # architecture just built carries the current ones, which is what the weights were saved from.
        state = collections.OrderedDict(state)
        state._metadata = model.state_dict()._metadata  # type: ignore[attr-defined]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise AdderconvError(f"{source}: weights do not fit architecture {arch!r} "
                             f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (numbers that are not ``float`` already, e.g. numpy, as floats), atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, default=float) + "\n", encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
