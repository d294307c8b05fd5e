"""Safe file I/O: reading weight files without running code, and writing files atomically.

Safe by default: state dicts (``torch.load(weights_only=True)``) and safetensors files hold only tensors. A
pickled whole module, TorchScript or a ``.pt2`` archive can run code when loaded, so they load only with
``trust=True`` (the CLI's ``--trust``), and the error says why otherwise. Building models from what a file
says is :mod:`adderconv.loading`'s (and :mod:`adderconv.arch`'s) job, one layer above this module.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from . import zoo
from .arch import ArchSpec, default_input_shape, looks_like_spec
from .errors import AdderconvError, first_line

__all__ = ["read_safetensors", "read_torch_file", "as_state_dict", "is_torchscript", "load_state_dict_file",
           "file_arch", "input_shape_of", "is_zoo_name", "first_line", "TRUST_HINT", "ensure_writable",
           "atomic_write", "atomic_writes", "write_text", "write_json", "lock_directory", "ModelKind", "model_kind",
           "refuse_onnx", "sample_shape"]

TRUST_HINT = ("it can execute arbitrary code when loaded. Pass `trust` only if you trust "
               "the file, or save a state dict / safetensors file and pass `arch` instead")


def is_zoo_name(source: str | os.PathLike) -> bool:
    return str(source) in zoo.list_models() and not Path(source).exists()


class ModelKind(str, Enum):
    """What a MODEL argument names, decided once (:func:`model_kind`) and carried: a zoo name, an architecture
    spec built without weights (``torchvision:NAME``, ``module:factory``), an ONNX file, or another file."""

    ZOO = "zoo"
    SPEC = "spec"
    ONNX = "onnx"
    FILE = "file"


def model_kind(source: str | os.PathLike) -> ModelKind:
    """The kind of MODEL ``source``. A zoo name wins unless a file of that name exists; ``.onnx`` is ONNX whether
    or not the file exists (reading it then says what is wrong); a spec is only a spec when no such file exists.

    >>> model_kind("resnet20"), model_kind("net.onnx"), model_kind("torchvision:resnet18"), model_kind("w.pt")
    (<ModelKind.ZOO: 'zoo'>, <ModelKind.ONNX: 'onnx'>, <ModelKind.SPEC: 'spec'>, <ModelKind.FILE: 'file'>)
    """
    text = str(source)
    if is_zoo_name(text):
        return ModelKind.ZOO
    if Path(text).suffix == ".onnx":
        return ModelKind.ONNX
    if not Path(text).exists() and looks_like_spec(text):
        return ModelKind.SPEC
    return ModelKind.FILE


def refuse_onnx(source: str | os.PathLike, what: str) -> ModelKind:
    """``source``'s kind, or a one-line error when it is an ONNX file and ``what`` (e.g. "fine-tuning") needs a
    PyTorch model: asked first, before any shape or data is looked for."""
    kind = model_kind(source)
    if kind is ModelKind.ONNX:
        raise AdderconvError(f"{source}: an ONNX file cannot be used for {what}; give the PyTorch model it came from "
                             f"(a zoo name, a state dict with `arch`, or a pickled model with `trust`)")
    return kind


def sample_shape(shape: Sequence[int]) -> tuple[int, ...]:
    """The one shape convention at the boundaries: a MODEL's input shape (``input_shape``, ``--input-shape``) is
    always the model's whole input, batch first, (N, C, H, W); data is loaded per sample, (C, H, W), and that
    sample shape is the input shape's last three dimensions (given a (C, H, W) already, it is returned as is).

    >>> sample_shape((1, 3, 32, 32)), sample_shape((3, 32, 32))
    ((3, 32, 32), (3, 32, 32))
    """
    return tuple(int(d) for d in shape[-3:])


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors.torch import load_file, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except Exception as e:  # SafetensorError, OSError, ValueError, or whatever a damaged header raises
        raise AdderconvError(f"{path}: not a readable safetensors file ({first_line(e)})") from None


def read_torch_file(path: Path, trust: bool) -> object:
    """torch.load with weights_only=True; a full unpickle only when trusted. Damaged files are one-line errors."""
    if path.stat().st_size == 0:
        raise AdderconvError(f"{path}: the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({first_line(e)})") from None
        if not trust:
            raise AdderconvError(f"{path}: this file is a pickled Python object, not a state dict: "
                                 f"{TRUST_HINT}") from None
    except Exception as e:  # the legacy unpickler raises IndexError, KeyError, EOFError... on random bytes
        raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({first_line(e)})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # trusted, but still not a loadable pickle
        raise AdderconvError(f"{path}: corrupt or not a PyTorch file ({first_line(e)})") from None


def load_state_dict_file(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) from a safetensors file or a tensors-only torch file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    return as_state_dict(read_torch_file(path, trust=False), path), {}


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


def input_shape_of(source: object, arch: str | None = None) -> tuple[int, ...] | None:
    """The default input shape of MODEL ``source``: its zoo name's, ``arch``'s, or that of the architecture a
    safetensors file records; None when none of them is a zoo model."""
    if not isinstance(source, (str, os.PathLike)):
        return default_input_shape(arch)
    return default_input_shape(str(source), arch, None if arch else file_arch(source))


def as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AdderconvError(f"{path}: expected a state dict (names -> tensors), found {type(obj).__name__}")
    return obj


def is_torchscript(path: Path) -> bool:
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 1)[-1].startswith(("code/", "constants.pkl")) for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False


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


try:
    import fcntl
except ImportError:      # Windows: no flock; the stale-file cleanup falls back to process ids alone
    fcntl = None  # type: ignore[assignment]

STALE_FOREIGN_S = 3600   # an unlocked temporary file of another pid namespace is stale after this long


def _pid_namespace() -> str:
    """This process's pid namespace (a container has its own): pids are only comparable within one."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "0"


def _locked(path: Path) -> bool:
    """Whether a live writer holds ``path``'s lock (flock: released by the kernel when its process dies, in
    whatever pid namespace it ran). Without flock, never (the caller decides by process id)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True              # vanished or unreadable: not ours to remove
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _remove_stale(target: Path) -> None:
    """Temporary files a killed writer left beside ``target`` are removed. A writer holds a lock on its
    temporary file while it writes, and names it ``.NAME.PID@PIDNS.*.tmp``: a file is stale when no one holds
    its lock and its writer is gone (its pid, in our pid namespace, is not running; in another namespace its pid
    says nothing here, so the file must also be untouched for :data:`STALE_FOREIGN_S`). Names without a
    namespace (older writers, which held no lock) go by their pid."""
    ours = _pid_namespace()
    for old in target.parent.glob(f".{target.name}.*.tmp"):
        owner = old.name[len(target.name) + 2:].split(".", 1)[0]
        pid, _, ns = owner.partition("@")
        if not pid.isdigit() or _locked(old):
            continue
        try:
            if ns and ns != ours:
                stale = time.time() - old.stat().st_mtime > STALE_FOREIGN_S
            else:
                stale = not _alive(int(pid))
            if stale:
                old.unlink()
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)


def _os_error_in(e: BaseException) -> str | None:
    """The OS's reason a writer quoted in its own error (safetensors: 'I/O error: No space left on device')."""
    text = str(e)
    return next((os.strerror(n) for n in _WRITE_ERRNOS if os.strerror(n) in text), None)


def _space_error(folder: Path) -> str | None:
    """Why ``folder`` takes no more data (a full disk, a quota), or None: asked after a writer failed with an
    error that does not say (torch.save reports a full disk as 'unexpected pos')."""
    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * 65536)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        return e.strerror or str(e)
    return None


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only if the block succeeds.

    The temporary name carries the writer's process id and pid namespace, and the writer holds a lock on it
    while it writes, so one left by a killed writer is recognised and removed by the next write to the same
    path, and a live one (of this process, another, or another container sharing the folder) never is. A write
    that fails for want of space (or any other OS error) is one :class:`AdderconvError`; nothing is left."""
    target = ensure_writable(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}@{_pid_namespace()}.", suffix=".tmp",
                                   dir=target.parent)
    except OSError as e:
        raise AdderconvError(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # held until the file is renamed or removed
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except AdderconvError:
        raise
    except OSError as e:
        raise AdderconvError(f"{path}: could not be written ({e.strerror or e}); nothing was written there") from e
    except Exception as e:
        if (why := _os_error_in(e) or _space_error(target.parent)) is None:
            raise
        raise AdderconvError(f"{path}: could not be written ({why}); nothing was written there") from e
    finally:
        os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_writes(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Temporary paths for several files that belong together (a report as JSON, Markdown and HTML): none is
    renamed into place unless the block writes them all."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_write(p)) for p in paths]


@contextlib.contextmanager
def lock_directory(path: str | os.PathLike, what: str = "run") -> Iterator[Path]:
    """Hold the lock of directory ``path`` (a ``.adderconv.lock`` file in it, flock, not waiting): a second
    process that asks for it while the first holds it gets a one-line :class:`AdderconvError`. The kernel
    drops the lock when the holder exits, however it exits; the file stays (removing it would race), unless
    this call created the directory and nothing else was written into it."""
    folder = Path(path)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".adderconv.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise AdderconvError(f"{path}: cannot write there ({e.strerror or e})") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise AdderconvError(f"{path}: cannot lock it ({e.strerror or e})") from None
                raise AdderconvError(f"{path}: another {what} is using this directory now (it holds "
                                     f"{folder / '.adderconv.lock'}); wait for it to end, or choose another "
                                     f"directory") from None
        yield folder
    finally:
        if created and os.listdir(folder) == [".adderconv.lock"]:   # nothing was written: leave nothing
            with contextlib.suppress(OSError):
                os.unlink(folder / ".adderconv.lock")
                folder.rmdir()
        os.close(fd)


def write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (numbers that are not ``float`` already, e.g. numpy, as floats), atomically.

    NaN and infinities are refused (JSON has no spelling for them; ``NaN`` in a file breaks every reader)."""
    try:
        text = json.dumps(obj, indent=indent, default=float, allow_nan=False)
    except ValueError as e:
        raise AdderconvError(f"{path}: refusing to write a non-finite number as JSON ({e})") from None
    write_text(path, text + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically (every text file a command writes goes through here)."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
