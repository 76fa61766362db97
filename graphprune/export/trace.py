"""Tracing: the model's inputs, a dataflow graph (torch.fx or torch.export) and its shapes.

Everything that runs the user's model lives here: :func:`eval_mode` (the one place that switches training flags
and restores them), :func:`fx_trace`, :func:`export_trace` and :func:`propagate`, a quiet shape pass that keeps
torch's own error message and names the node and module where it failed.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate

from ..errors import ParameterError, TracingError

__all__ = ["Inputs", "normalize_inputs", "eval_mode", "fx_trace", "export_trace", "propagate", "module_path"]


@dataclass
class Inputs:
    """Example inputs as positional ``args`` and keyword ``kwargs`` (tensors, or plain Python values)."""

    args: tuple
    kwargs: dict

    @property
    def tensors(self) -> list:
        out = []
        map_aggregate(list(self.args) + list(self.kwargs.values()),
                      lambda v: out.append(v) if isinstance(v, torch.Tensor) else None)
        return out


def normalize_inputs(model: nn.Module, example_inputs, kwargs: dict) -> Inputs:
    """Accept a tensor, a tuple/list of tensors, or a dict of keyword inputs (Hugging Face style)."""
    if isinstance(example_inputs, torch.Tensor):
        args, kw = (example_inputs,), {}
    elif isinstance(example_inputs, (tuple, list)):
        args, kw = tuple(example_inputs), {}
    elif isinstance(example_inputs, dict) and all(isinstance(k, str) for k in example_inputs):
        args, kw = (), dict(example_inputs)
    elif example_inputs is None and kwargs:
        args, kw = (), {}
    else:
        raise ParameterError(
            "The 'example_inputs' parameter of from_model must be a tensor, a tuple of tensors or a dict of "
            f"keyword inputs (e.g. {{'input_ids': ids}}). Got {type(example_inputs).__name__} instead."
        )
    kw.update(kwargs)
    inputs = Inputs(args, kw)
    bad = [type(v).__name__ for v in args if not _tensors_only(v)]
    if not inputs.tensors or bad:
        raise ParameterError(
            "The 'example_inputs' parameter of from_model must hold at least one tensor, and its positional "
            f"entries must all be tensors (or lists of tensors). Got {type(example_inputs).__name__} "
            f"({', '.join(bad) or 'no tensor'}) instead."
        )
    return inputs


def _tensors_only(v) -> bool:
    """A tensor, or a (nested) list/tuple of tensors (a detection model's list of images)."""
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, (tuple, list)) and bool(v) and all(_tensors_only(x) for x in v)


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode and no grad for the duration; every module's training flag is restored afterwards."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for m, t in flags.items():
            m.training = t


def cause(exc: BaseException) -> str:
    """torch's own message, first line kept whole (the part a user needs), without fx node dumps."""
    text = str(exc).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def module_path(node: torch.fx.Node, gm=None) -> str:
    """The module a traced node belongs to: its own target for a module call, else the innermost module of
    ``nn_module_stack`` (torch.export keeps it), else ``""`` (the root)."""
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        return str(path or "")
    return ""


class _Tracer(torch.fx.Tracer):
    def __init__(self, is_leaf):
        super().__init__()
        self._is_leaf = is_leaf

    def is_leaf_module(self, m, qualname):
        return self._is_leaf(m) or super().is_leaf_module(m, qualname)


def fx_trace(model: nn.Module, is_leaf) -> torch.fx.GraphModule:
    """``torch.fx`` symbolic trace; ``is_leaf(module)`` decides which modules are not traced into."""
    tracer = _Tracer(is_leaf)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; name the cause
        raise TracingError(
            f"torch.fx could not trace {type(model).__name__}: {cause(exc)}. If this comes from a submodule with "
            "data-dependent control flow, pass its type as leaf_modules=(...) (with an adapter, or "
            "skip_unsupported=True); tracer='export' handles such code when the flow does not depend on values."
        ) from exc
    return torch.fx.GraphModule(tracer.root, graph)


def export_trace(model: nn.Module, inputs: Inputs) -> torch.fx.GraphModule:
    """``torch.export.export`` in eval mode; the result's placeholders are the flattened inputs."""
    try:  # torch.export prints the partial graph of a failed export on stderr: keep it for the message only
        with eval_mode(model), contextlib.redirect_stderr(io.StringIO()):
            ep = torch.export.export(model, tuple(inputs.args), kwargs=dict(inputs.kwargs) or None, strict=False)
    except Exception as exc:  # export raises many types; name the cause and the usual fixes
        text = f"{type(exc).__name__} {exc}"
        if "DataDependent" in text or "data-dependent" in text:
            hint = (" The forward has data-dependent control flow (shapes or branches that depend on values, such "
                    "as a detector's box filtering); export the part with a fixed dataflow instead, e.g. "
                    "from_model(model.backbone, images).")
        elif "Cache" in text or "cache" in text:
            hint = " The model returns a key/value cache: pass use_cache=False in the inputs."
        else:
            hint = (" Check that the example inputs are what the model's forward takes (a dict for keyword inputs "
                    "such as input_ids).")
        raise TracingError(f"torch.export could not export {type(model).__name__}: {cause(exc)}.{hint}") from exc
    return ep.module()


def fx_arguments(model: nn.Module, gm: torch.fx.GraphModule, inputs: Inputs) -> list:
    """Positional values for the fx graph's placeholders (keyword inputs bound to the forward signature)."""
    if not inputs.kwargs:
        return list(inputs.args)
    try:
        bound = inspect.signature(model.forward).bind_partial(*inputs.args, **inputs.kwargs)
    except TypeError as exc:
        raise ParameterError(
            f"The 'example_inputs' parameter of from_model does not fit {type(model).__name__}.forward: {exc}."
        ) from exc
    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    values = []
    for n in names:
        key = n.lstrip("*")
        if key in bound.arguments:
            values.append(bound.arguments[key])
        else:
            node = next(p for p in gm.graph.nodes if p.op == "placeholder" and p.target == n)
            values.append(node.args[0] if node.args else None)
    return values


def export_arguments(gm: torch.fx.GraphModule, inputs: Inputs) -> list:
    """Flattened inputs in the order of the exported graph's placeholders."""
    spec = getattr(gm, "_in_spec", None)
    if spec is not None:
        try:
            # export orders kwargs by the forward signature; rebuild in the spec's key order
            kw_spec = spec.child(1) if hasattr(spec, "child") else spec.children_specs[1]
            keys = list(kw_spec.context)
            ordered = {k: inputs.kwargs[k] for k in keys if k in inputs.kwargs}
            flat, _ = torch.utils._pytree.tree_flatten((tuple(inputs.args), ordered))
            return flat
        except Exception:  # an unexpected spec: fall back to the plain order
            pass
    return list(inputs.args) + list(inputs.kwargs.values())


class _Shapes(torch.fx.Interpreter):
    """Runs the graph once, recording each node's output shapes (``gp_shape``) and small Python results
    (``gp_value``: sizes, ints) so indices like ``x[..., :x.shape[-1]]`` resolve to numbers. On failure it raises
    a :class:`TracingError` with torch's message, the node, its module and the fix; nothing is printed."""

    def __init__(self, gm, model_name):
        super().__init__(gm)
        self.model_name = model_name
        self.extra_traceback = False  # our message already names the node

    def run_node(self, n):
        try:
            result = super().run_node(n)
        except TracingError:
            raise
        except Exception as exc:
            where = module_path(n)
            if n.op == "call_module":
                at = f"module '{where}' ({type(self.module.get_submodule(where)).__name__})"
            else:
                target = getattr(n.target, "__name__", str(n.target))
                at = f"{'module ' + repr(where) if where else 'the root forward'} at op '{target}' (node '{n.name}')"
            raise TracingError(
                f"{cause(exc)}. This happened while running {self.model_name} on the example inputs, in {at}. "
                "Give example inputs of the shape, dtype and device the model expects."
            ) from exc
        n.meta["gp_shape"] = _shapes(result)
        if isinstance(result, (bool, int, float, torch.Size)) or (
                isinstance(result, tuple) and all(isinstance(v, int) for v in result)):
            n.meta["gp_value"] = result
        return result


def _shapes(obj):
    if isinstance(obj, torch.Tensor):
        return tuple(obj.shape)
    if isinstance(obj, (tuple, list)) and not isinstance(obj, torch.Size):
        return tuple(_shapes(o) for o in obj)
    if isinstance(obj, dict):
        return tuple(_shapes(o) for o in obj.values())
    return None


def propagate(model: nn.Module, gm: torch.fx.GraphModule, values: list, *, exported: bool = False):
    """Run ``gm`` once on ``values`` in eval mode without grad; record shapes on the nodes."""
    runner = _Shapes(gm, type(model).__name__)
    if exported:  # the exported module is already in eval mode (and refuses .eval())
        with torch.no_grad():
            return runner.run(*values)
    with eval_mode(model):
        return runner.run(*values)
