"""The PyTorch front end: count every op a model dispatches, per layer, without running it.

The default capture is a ``TorchDispatchMode`` over fake tensors (``FakeTensorMode``): parameters, buffers
and inputs are replaced by fakes (shapes and dtypes, no data), so nothing is computed, no kernel is
compiled, and memory stays at the size of the shapes; a model built on the ``meta`` device counts the
same way. Each op belongs to the innermost module whose forward ran it (its "layer", by module path; a
residual ``out + identity`` in a block's forward belongs to the block); in backward, to the module whose
forward created the autograd node running it (see :mod:`.tracking`). ``capture="real"`` runs the same mode on the
real tensors (for models whose control flow reads data); ``capture="jit"`` is the TorchScript tracer
(:mod:`.capture_jit`), kept as a cross-check.

Model forms: ``nn.Module`` (eager), a ``torch.compile``\\ d module (its original is counted), a
``torch.export`` ``ExportedProgram`` (layers from the graph's recorded module paths); scripted functions
called from ``forward`` are counted op by op.

>>> import torch
>>> counts = count_ops(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.randn(1, 3, 4, 4))
>>> counts.total["mul"]
3456
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from adderconv.errors import AdderconvError

from . import handles as _handles  # noqa: F401  (fills the registry)
from adderconv.choices import CAPTURES
from adderconv.errors import first_line

from .counts import LayerCounts, ModelCounts
from .handles_detection import register_torchvision
from .handles_rnn import GATES
from .registry import Handle, apply_handle, lookup, op_name, overrides_from
from .tracking import LayerTracker, memory_hooks, new_layers, parameter_owners

__all__ = ["count_ops", "in_mode", "CAPTURES", "DataDependentError"]


class DataDependentError(AdderconvError):
    """The model's control flow reads tensor values, which fake tensors do not have."""


def _value(v: Any) -> Any:
    """An argument as a handle sees it: a tensor is its shape, containers recurse, the rest is itself."""
    if isinstance(v, Tensor):
        return tuple(int(d) for d in v.shape)
    if isinstance(v, (list, tuple)):
        return [_value(x) for x in v]
    return v


def bind(schema: Any, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by schema name, as handles see them (defaults filled where the schema has them)."""
    named: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(args) and not a.kwarg_only:
            named[a.name] = _value(args[i])
        elif a.name in kwargs:
            named[a.name] = _value(kwargs[a.name])
        elif a.has_default_value():
            named[a.name] = a.default_value
    return named


class _Counter:
    """Shared by both modes: looks up handles, tallies ops into the current layer and phase."""

    def __init__(self, tracker: LayerTracker, overrides: dict, linear_layers: set[str]) -> None:
        self.tracker, self.overrides, self.linear = tracker, overrides, linear_layers
        self.ignored: dict[str, int] = {}
        self.paused = 0

    def count(self, name: str, handle: Handle | str | None, outs: list, named: Mapping[str, Any]) -> None:
        layer, phase = self.tracker.current()
        apply_handle(layer, name, handle, outs, named, self.ignored, phase=phase, linear=layer.name in self.linear)


class _DispatchMode(TorchDispatchMode):
    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.counter.paused or func.namespace == "prim":
            return out
        handle = lookup(func, self.counter.overrides)
        named = bind(func._schema, args, kwargs) if isinstance(handle, Handle) else {}
        outs = [_value(o) for o in (out if isinstance(out, (tuple, list)) else (out,))]
        self.counter.count(op_name(func), handle, outs, named)
        return out


def _composites() -> dict[Any, Any]:
    """Functions counted whole, by their ATen op's handle: function -> (args, kwargs) -> (op, named args).

    Below them ATen takes paths that hide or reshape the arithmetic: the CPU LSTM is one opaque mkldnn op,
    attention decomposes into a backend's kernel or scales Q and K apart, instance norm runs as a batch norm.
    (A torch-function mode does not see calls made inside another overridable Python function, so the
    backends' attention kernels have handles too.)
    """
    vf, aten = torch._C._VariableFunctions, torch.ops.aten

    def schema_args(op):
        return lambda a, k: (op, bind(op._schema, a, k))

    def signature_args(op, fn):
        sig = inspect.signature(fn)
        return lambda a, k: (op, {n: _value(v) for n, v in sig.bind(*a, **k).arguments.items()})

    table: dict[Any, Any] = {}
    for kind in GATES:   # the padded form has has_biases (a bool) 4th, the packed form its weight list
        packet = getattr(aten, kind)
        table[getattr(vf, kind)] = (lambda a, k, p=packet: schema_args(
            p.input if len(a) > 3 and isinstance(a[3], bool) else p.data)(a, k))
    table[torch._C._nn.scaled_dot_product_attention] = schema_args(aten.scaled_dot_product_attention.default)
    table[F.instance_norm] = signature_args(aten.instance_norm.default, F.instance_norm)
    table[F.batch_norm] = signature_args(aten.batch_norm.default, F.batch_norm)
    return table


def _same_shape_on_fakes(func: Any, args: tuple) -> bool:
    """Whether the output of ``func`` is made by shape alone: a batch norm on fake tensors with no gradient to
    record (fake mode runs its Python decomposition, a third of a new model's first count, for a result whose
    only content is the input's shape)."""
    from torch._subclasses.fake_tensor import FakeTensor

    return func is F.batch_norm and not torch.is_grad_enabled() and isinstance(args[0], FakeTensor)


_COMPOSITE = _composites()
_RECURRENT = {getattr(torch.ops.aten, k) for k in GATES}


class _CompositeMode(TorchFunctionMode):
    """Counts the functions in :func:`_composites` as one op each, with their handles, and pauses the
    dispatch count inside them (their backward ops are still counted)."""

    def __init__(self, counter: _Counter) -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        choose = _COMPOSITE.get(func)
        if choose is None or self.counter.paused:
            return func(*args, **kwargs)
        op, named = choose(args, kwargs)
        self.counter.paused += 1
        try:
            if _fake_packed(op, args):
                out = _packed_shapes(op, args)
            elif _same_shape_on_fakes(func, args):
                out = torch.empty_like(args[0])
            else:
                out = func(*args, **kwargs)
        finally:
            self.counter.paused -= 1
        outs = [_value(o) for o in tree_flatten(out)[0]]
        self.counter.count(op_name(op), lookup(op, self.counter.overrides), outs, named)
        return out


def _fake_packed(op: Any, args: tuple) -> bool:
    from torch._subclasses.fake_tensor import FakeTensor

    return op.overloadpacket in _RECURRENT and op._overloadname == "data" and isinstance(args[0], FakeTensor)


def _packed_shapes(op: Any, args: tuple) -> tuple:
    """The outputs of a recurrent op over a packed sequence, by shape: its kernel reads the batch sizes'
    values, which only the constant fakes of the packed input hold. (Inference counts only: these
    outputs carry no gradient.)"""
    data, _, hx, params, has_biases, num_layers, _, _, bidirectional = args
    dirs = 2 if bidirectional else 1
    stride = len(params) // (num_layers * dirs)
    out_size = params[stride - 1].shape[0] if stride in (3, 5) else params[1].shape[1]   # w_hr, else w_hh
    output = data.new_empty((data.shape[0], dirs * out_size))
    states = tuple(h.new_empty(h.shape) for h in (hx if isinstance(hx, (list, tuple)) else [hx]))
    return (output, *states)


def _fake_input(fake: Any, t: Any, device: torch.device | None = None) -> Any:
    """Inputs as fakes; a packed sequence keeps its batch sizes and permutations real (they are metadata). An input
    on ``meta`` (a shape, nothing allocated) becomes a fake on the model's ``device``."""
    if isinstance(t, PackedSequence):
        def constant(x: Tensor | None) -> Tensor | None:   # a fake that knows its values (small, int64)
            return None if x is None else fake.fake_tensor_converter.from_real_tensor(fake, x, make_constant=True)
        return PackedSequence(fake.from_tensor(t.data), constant(t.batch_sizes), constant(t.sorted_indices),
                              constant(t.unsorted_indices))
    if not isinstance(t, Tensor):
        return t
    if t.device.type == "meta" and device is not None and device.type != "meta":
        with fake:
            return torch.empty(t.shape, dtype=t.dtype, device=device)
    return fake.from_tensor(t)


def _unwrap(model: Any) -> tuple[nn.Module, bool]:
    """(module to run, whether it is an exported graph) for an eager, compiled or exported model."""
    if isinstance(model, torch.export.ExportedProgram):
        return model.module(), True
    if isinstance(model, torch.fx.GraphModule) and any(n.meta.get("nn_module_stack") for n in model.graph.nodes):
        return model, True                                # an exported program's module (e.g. a loaded .pt2)
    orig = getattr(model, "_orig_mod", None)              # torch.compile's OptimizedModule: count the original
    if isinstance(orig, nn.Module):
        return orig, False
    if isinstance(model, nn.Module):
        return model, False
    raise AdderconvError(f"cannot count a {type(model).__name__}: expected an nn.Module, a torch.compile'd "
                         f"module or a torch.export ExportedProgram")


def _data_dependent(e: BaseException) -> bool:
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    if isinstance(e, (DataDependentOutputException, DynamicOutputShapeException)):
        return True
    text = str(e)
    return any(s in text for s in ("cannot be called on meta tensors", "data-dependent", "data dependent",
                                   "Could not guard on data-dependent"))


def _no_fake(e: BaseException) -> bool:
    from torch._subclasses.fake_tensor import UnsupportedOperatorException

    text = str(e)
    return isinstance(e, UnsupportedOperatorException) or "no fake impl" in text or "fake kernel" in text


def _fake_state(named: list[tuple[str, Tensor]], mode: Any, grad: bool) -> dict[str, Tensor]:
    state: dict[str, Tensor] = {}
    for name, t in named:
        fake = mode.from_tensor(t)
        if grad and isinstance(t, nn.Parameter) and t.requires_grad:
            fake = fake.detach().requires_grad_(True)
        state[name] = fake
    return state


class _Fakes(threading.local):
    """The thread's fake-tensor mode, kept between counts: its converter remembers the fake of every tensor it
    has faked while that fake lives, and ``seen`` keeps the fakes (weakly keyed by the real tensor), so a model
    counted again fakes none of its parameters. ``seen`` also holds what each tensor looked like; one that changed
    since (``p.data = ...`` of another shape, new values in a packed
    sequence's batch sizes) retires the mode, and a fresh one fakes everything again."""

    mode: Any = None
    seen: Any = None


_FAKES = _Fakes()


def _signature(t: Tensor, constant: bool) -> tuple:
    try:
        layout = (tuple(t.shape), t.stride(), t.storage_offset())
    except RuntimeError:                      # sparse and other layouts without strides
        layout = (tuple(t.shape), t.layout)
    return (*layout, t.dtype, t.device, t._version if constant else None)


def _fake_mode(tensors: list[tuple[Tensor, bool]]) -> Any:
    """The thread's fake mode for tensors ``(tensor, is a constant)`` (see :class:`_Fakes`)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.weak import WeakIdKeyDictionary

    f = _FAKES
    if f.mode is not None and torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is f.mode:
        return FakeTensorMode(allow_non_fake_inputs=True)       # a count inside a count: a mode of its own
    signatures = [(t, c, _signature(t, c)) for t, c in tensors]
    if f.mode is not None and any(f.seen.get(t, (sig,))[0] != sig for t, _, sig in signatures):
        f.mode = None
    if f.mode is None:
        f.mode, f.seen = FakeTensorMode(allow_non_fake_inputs=True), WeakIdKeyDictionary()
    for t, c, sig in signatures:     # the converter remembers a fake only while it lives: hold it
        f.seen[t] = (sig, None if c else f.mode.from_tensor(t))
    return f.mode


def _to_fake(inputs: tuple, named: list[tuple[str, Tensor]]) -> Any:
    """The fake mode for these inputs and parameters/buffers."""
    tensors = [(t, False) for _, t in named]
    for x in tree_flatten(inputs, is_leaf=lambda t: isinstance(t, PackedSequence))[0]:
        if isinstance(x, PackedSequence):
            tensors.append((x.data, False))
            tensors += [(m, True) for m in (x.batch_sizes, x.sorted_indices, x.unsorted_indices) if m is not None]
        elif isinstance(x, Tensor):
            tensors.append((x, False))
    return _fake_mode(tensors)


def count_ops(model: nn.Module | Any, inputs: Tensor | tuple, *, capture: str = "dispatch",
              training: bool = False, handles: Mapping[Any, Any] | None = None) -> ModelCounts:
    """Count every operator ``model(*inputs)`` runs, per layer (module path), per operator and phase.

    An inference count runs the model in eval mode and a training count in train mode, whatever mode it is in
    (a zoo model comes in train mode; BatchNorm would count its batch statistics, and fail on one sample); its
    own flags are restored afterwards, as in :func:`.api.analyze`. ``training=True`` also counts the backward pass,
    from a gradient of ones at every output (the loss is the user's and is not counted); each op is tagged
    ``forward`` or ``backward``. ``handles={op: fn}`` overrides or adds handles for this call only (the global
    registry is untouched). Ops without a handle are listed in ``unsupported``; zero-arithmetic ops in
    ``ignored``. ``capture``: ``dispatch`` (fake tensors, the default), ``real`` or ``jit`` (see the module).
    """
    if capture not in CAPTURES:
        raise AdderconvError(f"unknown capture {capture!r}; choose one of {', '.join(CAPTURES)}")
    register_torchvision()                # its ops exist once the model's code has imported torchvision
    overrides = overrides_from(handles)
    one = not isinstance(inputs, tuple) or hasattr(inputs, "_fields")    # a namedtuple (PackedSequence) is one
    inputs = (inputs,) if one else inputs
    module, program = _unwrap(model)
    with in_mode(module, training):
        return _count(module, program, inputs, capture, training, overrides)


@contextlib.contextmanager
def in_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """``module`` (and every submodule) in train or eval mode for a count or a shape trace; each module's own
    flag restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        module.train(training)
    except NotImplementedError:   # an exported program's module: its mode was fixed at export
        pass
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _count(module: nn.Module, program: bool, inputs: tuple, capture: str, training: bool,
           overrides: Any) -> ModelCounts:
    if capture == "jit":
        if training or program or isinstance(module, torch.jit.ScriptModule):
            raise AdderconvError("the jit capture traces the forward of a Python nn.Module only; use the dispatch "
                                 "capture for training steps, exported programs and TorchScript modules")
        from .capture_jit import count_ops_jit

        return count_ops_jit(module, inputs, overrides)
    layers, linear = new_layers(module, program)
    scripted = isinstance(module, torch.jit.ScriptModule)   # no Python hooks: every op belongs to the model
    tracker = LayerTracker(module, layers, program or scripted)
    counter = _Counter(tracker, overrides, linear)
    try:
        _run(module, program, inputs, capture, training, counter, tracker, layers)
    except AdderconvError:
        raise
    except Exception as e:   # noqa: BLE001  (the model's own failure: one line, with what to try)
        if capture == "dispatch" and _no_fake(e):
            raise AdderconvError(f"an op of the model cannot run on fake tensors ({first_line(e)}); count with "
                                 f"real inputs (`capture` real) or give the op a fake "
                                 f"implementation") from None
        if capture == "dispatch" and _data_dependent(e):
            raise DataDependentError(
                f"the model's control flow depends on tensor values ({first_line(e)}), which counting "
                f"without running cannot follow; count with real inputs (`capture` real) "
                f"or the tracer (`capture` jit)") from None
        raise
    used = tracker.order
    kept = [layers[n] for n in used if layers[n].ops or layers[n].unsupported]
    owners, trainable = parameter_owners(module)
    return ModelCounts(layers=kept, ignored=dict(sorted(counter.ignored.items())), frontend="pytorch",
                       capture=capture, training=training, parameters=owners, trainable=trainable)


def _run(module: nn.Module, program: Any, inputs: tuple, capture: str, training: bool, counter: _Counter,
         tracker: LayerTracker, layers: dict[str, LayerCounts]) -> None:
    with contextlib.ExitStack() as stack:
        if training:     # real parameters may receive gradients (real capture, exported programs): restore them
            grads = {p: p.grad for p in module.parameters()}
            stack.callback(lambda: [setattr(p, "grad", g) for p, g in grads.items()])
        call: Any = module
        if capture == "dispatch":
            log = logging.getLogger("torch._subclasses.fake_tensor")    # it logs the model's own errors: we
            stack.callback(log.setLevel, log.level)                      # raise them, once, in one line
            log.setLevel(logging.CRITICAL)
            param = next(module.parameters(), None)
            if param is not None and param.device.type == "meta":   # a model on meta: its inputs join it
                inputs = tree_map(lambda t: t.to("meta") if isinstance(t, (Tensor, PackedSequence)) else t, inputs,
                                  is_leaf=lambda t: isinstance(t, PackedSequence))
            # parameters and buffers as fakes: the caller's module is never written (a ScriptModule's are faked
            # as its ops read them)
            own = not program and not isinstance(module, torch.jit.ScriptModule)
            named = [*module.named_parameters(remove_duplicate=False),
                     *module.named_buffers(remove_duplicate=False)] if own else []
            fake = _to_fake(inputs, named)
            device = param.device if param is not None else torch.device("cpu")
            inputs = tree_map(lambda t: _fake_input(fake, t, device), inputs,
                              is_leaf=lambda t: isinstance(t, PackedSequence))
            if own:
                state = _fake_state(named, fake, training)
                call = lambda *a: torch.func.functional_call(module, state, a, strict=False)  # noqa: E731
            stack.enter_context(fake)
        if program:
            call = tracker.interpreter(module)
        stack.enter_context(torch.enable_grad() if training else torch.no_grad())
        if not isinstance(module, torch.jit.ScriptModule):
            stack.enter_context(memory_hooks(module, layers))
        stack.enter_context(tracker)
        stack.enter_context(_DispatchMode(counter))
        stack.enter_context(_CompositeMode(counter))
        out = call(*inputs)
        if training:
            tensors = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor) and t.requires_grad]
            if not tensors:
                raise AdderconvError("training=True: no output of the model requires a gradient "
                                     "(are its parameters frozen?)")
            torch.autograd.backward(tensors, [torch.ones_like(t) for t in tensors])
