"""Safe model loading and atomic file writing.

Safe by default: zoo names, state dicts (``torch.load(weights_only=True)``) and safetensors files hold only
tensors. A pickled whole module, TorchScript or a ``.pt2`` archive can run code when loaded, so they load only
with ``trust=True`` (the CLI's ``--trust``), and the error says why otherwise. What a file *says* is data too:
the architecture its metadata names is built only if it is a zoo model or an allow-listed builder
(:mod:`adderconv.arch`); anything else needs the caller's own ``arch`` or ``trust``.
"""
from __future__ import annotations

import collections
import contextlib
import json
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import zoo
from .arch import ArchSpec, looks_like_spec
from .errors import AdderconvError
from .official import official_layout

__all__ = ["LoadedModel", "open_model", "load_model", "build_arch", "file_arch", "load_state_dict_file", "atomic_write",
           "ensure_writable", "write_json", "is_zoo_name"]

_TRUST_HINT = ("it can execute arbitrary code when loaded. Pass `trust` only if you trust "
               "the file, or save a state dict / safetensors file and pass `arch` instead")


def is_zoo_name(source: str | os.PathLike) -> bool:
    return str(source) in zoo.list_models() and not Path(source).exists()


def build_arch(spec: str | ArchSpec) -> nn.Module:
    """A fresh model from a spec the caller chose: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or
    ``"package.module:factory"`` (see :mod:`adderconv.arch`)."""
    return (spec if isinstance(spec, ArchSpec) else ArchSpec.parse(spec)).build()


@dataclass
class LoadedModel:
    """A loaded model, the architecture it was built from (if any) and what loading had to say about it."""

    model: nn.Module
    arch: ArchSpec | None = None
    notes: list[str] = field(default_factory=list)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except Exception as e:  # SafetensorError, OSError, ValueError, or whatever a damaged header raises
        raise AdderconvError(f"{path}: not a readable safetensors file ({_first_line(e)})") from None


def _read_torch_file(path: Path, trust: bool) -> object:
    """torch.load with weights_only=True; a full unpickle only when trusted. Damaged files are one-line errors."""
    if path.stat().st_size == 0:
        raise AdderconvError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({_first_line(e)})") from None
        if not trust:
            raise AdderconvError(f"{path}: this file is a pickled Python object, not a state dict: "
                                 f"{_TRUST_HINT}") from None
    except Exception as e:  # the legacy unpickler raises IndexError, KeyError, EOFError... on random bytes
        raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({_first_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # trusted, but still not a loadable pickle
        raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({_first_line(e)})") from None


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) from a safetensors file or a tensors-only torch file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    return _as_state_dict(_read_torch_file(path, trust=False), path), {}


def file_arch(source: str | os.PathLike) -> ArchSpec | None:
    """The architecture a safetensors file records (reading its header only), or None when it records none or
    is not a readable safetensors file (loading it then says why)."""
    path = Path(source)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    from safetensors.torch import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return ArchSpec.from_metadata(dict(f.metadata() or {}))
    except Exception:  # unreadable or a bad record: open_model reports it with the reason
        return None


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AdderconvError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    return obj


def _is_torchscript(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


def _spec(arch: str | ArchSpec | None, metadata: dict[str, str], source: object) -> tuple[ArchSpec, bool]:
    """The architecture to build and whether it is trusted: the caller's own ``arch`` (with the file's recorded
    arguments when it names the same one) is; one read from the file's metadata is not."""
    recorded = ArchSpec.from_metadata(metadata)
    if arch is None:
        if recorded is None:
            raise AdderconvError(f"{source}: a state dict holds no architecture; pass `arch` "
                                 f"<zoo name | torchvision:NAME | module:factory>")
        return recorded, False
    spec = arch if isinstance(arch, ArchSpec) else ArchSpec.parse(arch)
    if recorded is not None and recorded.name == spec.name and not spec.kwargs:
        spec = ArchSpec(spec.name, recorded.kwargs)
    return spec, True


def _fit(model: nn.Module, state: dict[str, torch.Tensor], source: object, arch: ArchSpec) -> None:
    """Load ``state`` into ``model``; every mismatch (names, shapes, kinds of dtype) is one line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise AdderconvError(f"{source}: weights do not fit architecture {arch.describe()!r} "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    shapes = [f"{k} {tuple(v.shape)} (architecture: {tuple(own[k].shape)})" for k, v in state.items()
              if tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        raise AdderconvError(f"{source}: {len(shapes)} tensors do not fit architecture {arch.describe()!r}: "
                             f"{'; '.join(shapes[:4])}{'; ...' if len(shapes) > 4 else ''}")
    kinds = [f"{k} {v.dtype} (architecture: {own[k].dtype})" for k, v in state.items()
             if v.dtype.is_floating_point != own[k].dtype.is_floating_point
             or (v.dtype == torch.bool) != (own[k].dtype == torch.bool)]
    if kinds:
        raise AdderconvError(f"{source}: tensors of another kind than the architecture's (they would be cast "
                             f"silently): {'; '.join(kinds[:4])}")
    if getattr(state, "_metadata", None) is None:
        # safetensors keeps no per-module state-dict versions (MNASNet refuses to load without them); the
        # architecture just built carries the current ones, which is what the weights were saved from.
        state = collections.OrderedDict(state)
        state._metadata = own._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state)


def open_model(source: str | os.PathLike, arch: str | ArchSpec | None = None, trust: bool = False) -> LoadedModel:
    """Load a model with what is known about it; see :func:`load_model` for the accepted sources."""
    if is_zoo_name(source):
        spec = ArchSpec(str(source))
        return LoadedModel(spec.build(), spec, [f"{source}: a zoo model with random initialisation"])
    path = Path(source)
    if not path.exists():
        if looks_like_spec(str(source)):   # the user typed an architecture: build it as asked
            spec = ArchSpec.parse(str(source))
            return LoadedModel(spec.build(), spec, [f"{source}: built with random initialisation (no weights)"])
        raise AdderconvError(f"{source}: no such file, and not a zoo model ({', '.join(zoo.list_models())}) "
                             f"or an architecture (torchvision:NAME, module:factory)")
    if path.is_dir():
        raise AdderconvError(f"{source}: is a directory, expected a model file")
    if path.suffix == ".onnx":
        raise AdderconvError(f"{source}: an ONNX file cannot be loaded as a PyTorch module")
    if path.suffix == ".pt2":
        if not trust:
            raise AdderconvError(f"{source}: refusing to load a .pt2 archive: {_TRUST_HINT}")
        try:
            return LoadedModel(torch.export.load(path).module())
        except Exception as e:
            raise AdderconvError(f"{source}: not a loadable .pt2 archive ({_first_line(e)})") from None
    if _is_torchscript(path):
        if not trust:
            raise AdderconvError(f"{source}: refusing to load TorchScript: {_TRUST_HINT}")
        try:
            return LoadedModel(torch.jit.load(str(path), map_location="cpu"))
        except Exception as e:
            raise AdderconvError(f"{source}: not a loadable TorchScript file ({_first_line(e)})") from None
    if path.suffix == ".safetensors":
        state, metadata = _read_safetensors(path)
    else:
        obj = _read_torch_file(path, trust)
        if isinstance(obj, nn.Module):
            return LoadedModel(obj)
        state, metadata = _as_state_dict(obj, path), {}
    spec, trusted = _spec(arch, metadata, source)
    model = spec.build(trusted=trusted or trust)
    notes: list[str] = []
    recipe = metadata.get("adderconv.recipe")
    if recipe:
        from .converters import apply_recipe  # the converter owns the recipe format
        model = apply_recipe(model, recipe)
    if quant := metadata.get("adderconv.quant"):
        from .quant.recipe import apply_quant_recipe  # plain data, validated there; names only our own layers
        model = apply_quant_recipe(model, quant)
    state, remapped = official_layout(state, model)
    if remapped:
        notes.append(f"{source}: {remapped}")
    _fit(model, state, source, spec)
    return LoadedModel(model, spec, notes)


def load_model(source: str | os.PathLike, arch: str | ArchSpec | None = None, trust: bool = False) -> nn.Module:
    """Load a model from any MODEL form; see the README's "Model input" section.

    - a zoo name, ``torchvision:NAME``, ``timm:NAME`` or ``module:factory`` (built with random initialisation);
    - a safetensors file or a tensors-only ``.pt`` state dict: the architecture is ``arch`` or the one the file
      records (files written by adderconv record theirs, with its arguments, and their conversion recipe);
      an official AdderNet checkpoint (``module.`` prefixes, adder weights under ``.adder``) is recognised;
    - with ``trust``: a pickled module, TorchScript, or a ``.pt2`` archive (these can run code when loaded).
    """
    return open_model(source, arch, trust).model


def ensure_writable(path: str | os.PathLike, *, directory: bool = False) -> Path:
    """Fail now, in one line, if ``path`` (a file, or with ``directory`` a folder) cannot be written: checked
    before any work, so a long run never dies at its first write. Nothing is created: the nearest existing
    folder above it must be a writable directory (the writers create the folders below it)."""
    target = Path(path)
    if not directory and target.is_dir():
        raise AdderconvError(f"{path}: is a directory, expected a file to write")
    if directory and target.exists() and not target.is_dir():
        raise AdderconvError(f"{path}: is a file, expected a directory to write into")
    folder = (target if directory else target.parent).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise AdderconvError(f"{path}: cannot write there ({folder} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".adderconv-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise AdderconvError(f"{path}: cannot write there ({e.strerror or e})") from None
    return target


def _remove_stale(target: Path) -> None:
    """Temporary files a killed writer left beside ``target`` (their process is gone) are removed."""
    for old in target.parent.glob(f".{target.name}.*.tmp"):
        pid = old.name[len(target.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                old.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary name carries the writer's process id, so one left by a killed writer is recognised and
    removed by the next write to the same path."""
    target = ensure_writable(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise AdderconvError(f"{path}: cannot write there ({e.strerror or e})") from None
    _remove_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (numbers that are not ``float`` already, e.g. numpy, as floats), atomically.

    NaN and infinities are refused (JSON has no spelling for them; ``NaN`` in a file breaks every reader)."""
    try:
        text = json.dumps(obj, indent=indent, default=float, allow_nan=False)
    except ValueError as e:
        raise AdderconvError(f"{path}: refusing to write a non-finite number as JSON ({e})") from None
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
