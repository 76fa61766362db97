"""The walk over a traced graph: each node's value from its inputs, through module adapters and op rules."""

from __future__ import annotations

import dataclasses

import torch
import torch.fx
from torch import nn

from ..errors import TracingError, UnsupportedModuleError, UnsupportedOperationError
from ._builder import Builder, ParamRef, Scores, Stat, Val
from .adapters import PASS_THROUGH, find_adapter
from .rules import (
    OpContext,
    _generic,
    _on_scores,
    _unsupported,
    find_op_rule,
    is_shape,
    no_features,
    op_name,
    traced,
    vals,
)
from .trace import module_path
from .uses import (
    CHANNEL_FIRST_OPS,
    NORM_OPS,
    SOFTMAX_OPS,
    VIEW_OPS,
    ParamView,
    module_use,
    param_use,
    param_view,
    reduce_use,
    view_dim,
)

__all__ = ["walk_graph", "check_modules"]


def _has_params(m):
    return any(True for _ in m.parameters(recurse=True))


def check_modules(gm, skip):
    """Parametrised modules called as leaves that have no adapter (and are not pass-through): listed, then raised
    unless ``skip``. Returns their names."""
    bad = []
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        if find_adapter(m) is None and not isinstance(m, PASS_THROUGH) and _has_params(m):
            bad.append((node.target, type(m).__name__))
    bad = list(dict.fromkeys(bad))
    if bad and not skip:
        raise UnsupportedModuleError(bad)
    return bad


class Walk:
    """State of one walk: the builder, node values, and which parameters each op touched (for coverage)."""

    def __init__(self, model, gm, n_inputs, skip):
        self.b = Builder(model, n_inputs=n_inputs)
        self.gm = gm
        self.skip = skip
        self.env = {}
        self.touched: dict[str, set] = {}  # parameter (get_attr target) -> ops that consumed it
        self.param_ids = {id(p) for p in model.parameters()}
        self.buffers: dict[int, str] = {}  # id of the Val of a buffer read by get_attr -> its name

    def run(self):
        outputs = []
        for node in self.gm.graph.nodes:
            shape = node.meta.get("gp_shape")
            args = torch.fx.node.map_arg(node.args, lambda n: self.env.get(n))
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self.env.get(n))
            if node.op == "placeholder":
                self.env[node] = Val(None, -1, shape, raw=node.name) if is_shape(shape) else None
            elif node.op == "get_attr":
                obj = self.gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                if isinstance(obj, nn.Parameter) or (isinstance(obj, torch.Tensor) and id(obj) in self.param_ids):
                    self.env[node] = ParamRef(node.target, obj)
                elif isinstance(obj, torch.Tensor):  # a buffer: a constant input (masks, position tables)
                    self.b.buffer_names.add(node.target)
                    self.env[node] = Val(None, -1, tuple(obj.shape), raw=node.target)
                    self.buffers[id(self.env[node])] = node.target
                else:
                    self.env[node] = None
            elif node.op == "call_module":
                self.env[node] = self.module(node, args, kwargs, shape)
            elif node.op in ("call_function", "call_method"):
                for a in list(args) + list(kwargs.values()):
                    if isinstance(a, ParamRef):
                        self.touched.setdefault(a.name, set()).add(op_name(node))
                if "gp_value" in node.meta:
                    self.env[node] = node.meta["gp_value"]
                else:
                    self.env[node] = self.function(node, args, kwargs, shape)
                    if self.env[node] is None and args and isinstance(args[0], (ParamRef, ParamView)) and \
                            op_name(node) in VIEW_OPS:  # a parameter reshaped for broadcasting
                        self.env[node] = param_view(args[0], shape)
                    self.record(node, args, kwargs, self.env[node])
            elif node.op == "output":
                outputs = vals(args)
        return outputs

    def module(self, node, args, kwargs, shape):
        m = self.gm.get_submodule(node.target)
        inputs = vals(args) + vals(kwargs)
        adapter = find_adapter(m)
        if adapter is not None:
            return adapter(self.b, node.target, m, inputs, shape)
        if isinstance(m, PASS_THROUGH) or not _has_params(m):
            if _has_params(m) or any(True for _ in m.buffers()):
                self.record_module(node, m, inputs, "module")
            scores = [a for a in traced(args) + traced(kwargs) if isinstance(a, Scores)]
            if scores:  # softmax, dropout modules on attention scores
                ctx = OpContext(self.b, node, module_path(node), type(m).__name__)
                return _on_scores(ctx, scores, inputs, shape)
            if not is_shape(shape) or not inputs:
                stats = [a for a in traced(args) if isinstance(a, Stat)]
                return Stat(shape) if stats and is_shape(shape) else None
            return _generic(self.b, node.target, inputs, shape)
        # a skipped unsupported module: pass-through when the channel count is kept, else a cut
        self.record_module(node, m, inputs, "skipped")
        if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
            first = _skipped(self.b, node.target, inputs, shape[0])
            return (first,) + (None,) * (len(shape) - 1)
        return _skipped(self.b, node.target, inputs, shape) if is_shape(shape) else None

    def record_module(self, node, m, inputs, kind):
        """Channel uses of a pass-through (or skipped) module call (:mod:`graphprune.export.uses`)."""
        x = next((v for v in inputs if v.part is not None), None)
        if x is None:
            return
        where = f"module '{node.target}' ({type(m).__name__})"
        n = self.b.parts[x.part]["size"]
        use = module_use(x.part, x, str(node.target), type(m).__name__, where, n)
        self.b.uses.append(use if kind == "module" else dataclasses.replace(use, kind="skipped"))
        shape = getattr(m, "normalized_shape", None)
        if isinstance(m, (nn.GroupNorm, nn.LocalResponseNorm)):
            self.b.uses.append(reduce_use(x.part, x, {1}, type(m).__name__, where, n))
        elif shape is not None:  # LayerNorm, RMSNorm: the trailing dims, or the channels they have the size of
            shape = tuple(shape) if isinstance(shape, (tuple, list, torch.Size)) else (int(shape),)
            dims = set(range(len(x.shape) - len(shape), len(x.shape)))
            if x.channels in shape:  # LayerNorm2d and kin permute inside: the normalised dim is the channel dim
                dims.add(x.cdim % len(x.shape))
            self.b.uses.append(reduce_use(x.part, x, dims, type(m).__name__, where, n))

    def record(self, node, args, kwargs, out):
        """Channel uses of a function op: tensors that are not edges (norm weights, functional biases, buffers)
        broadcast against the channels, and normalisations or softmaxes that mix them."""
        ins = [v for v in vals(args) + vals(kwargs) if v.part is not None]
        if not ins:
            return
        b, name = self.b, op_name(node)
        path = module_path(node)
        where = f"module '{path}' (node '{node.name}')" if path else f"node '{node.name}'"
        flat = []
        torch.fx.node.map_aggregate((args, kwargs), lambda a: flat.append(a) if isinstance(a, (ParamRef, Val))
                                    else None)
        refs = [a for a in flat if isinstance(a, ParamRef)]
        key = lambda r: b._canonical.get(id(r.tensor), r.name)  # noqa: E731
        size = lambda v: b.parts[v.part]["size"]  # noqa: E731
        edge = any(key(r) in b.param_shapes for r in refs)
        outs = [v for v in vals(out) if v.part is not None] if out is not None else []
        x = outs[0] if edge and outs else ins[0]  # a layer op's bias is added to its output
        def shape_of(t):  # batch norm's (C,) tensors read dim 1 of an (N, C, ...) input
            shape = tuple(t.shape)
            return shape + (1,) * (len(x.shape) - 2) if name in CHANNEL_FIRST_OPS and len(shape) == 1 else shape

        for r in refs:
            if key(r) not in b.param_shapes:
                b.uses.append(param_use(x.part, x, key(r), shape_of(r.tensor), name, where, size(x)))
        torch.fx.node.map_aggregate((args, kwargs), lambda a: flat.append(a) if isinstance(a, ParamView) else None)
        for r in (a for a in flat if isinstance(a, ParamView)):
            u = param_use(x.part, x, key(r), r.shape, name, where, size(x))
            if u.index is not None and (u.index >= 0).any():
                u = dataclasses.replace(u, dim=view_dim(r.shape, tuple(r.tensor.shape), u.dim))
            b.uses.append(u)
        for a in flat:
            if isinstance(a, Val) and id(a) in self.buffers:
                b.uses.append(param_use(x.part, x, self.buffers[id(a)], shape_of(torch.empty(a.shape, device="meta")),
                                        name, where, size(x)))
        v = ins[0]
        rank = len(v.shape)
        if name in NORM_OPS:
            if "group_norm" in name:
                dims = {1}
            else:
                ns = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape", (v.shape[-1],))
                n = len(ns) if isinstance(ns, (tuple, list)) else 1
                dims = set(range(rank - n, rank))
            b.uses.append(reduce_use(v.part, v, dims, name, where, size(v)))
        elif name in SOFTMAX_OPS:
            d = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            if isinstance(d, int):
                b.uses.append(reduce_use(v.part, v, {d}, name, where, size(v)))

    def function(self, node, args, kwargs, shape):
        if isinstance(node.target, type) and issubclass(node.target, tuple):  # a (named)tuple of outputs
            return tuple(list(args) + list(kwargs.values()))
        ctx = OpContext(self.b, node, module_path(node), op_name(node))
        rule = find_op_rule(node)
        followed = [v for v in traced(args) + traced(kwargs) if not (isinstance(v, Val) and v.part is None)]
        if rule is None:
            if not followed:  # only raw inputs or constants: mask and position arithmetic, no nodes yet
                raw = vals(args) + vals(kwargs)
                return Val(None, -1, shape, raw=raw[0].raw) if raw and is_shape(shape) else None
            return _unsupported(ctx, args, kwargs, shape)
        try:
            out = rule(ctx, args, kwargs, shape)
        except UnsupportedOperationError as exc:
            text = str(exc)
            if ctx.where not in text:
                text = f"{text} (op '{ctx.op}' at {ctx.where})"
            raise UnsupportedOperationError(text) from exc
        if out is None and is_shape(shape) and rule is not no_features and not (
                args and isinstance(args[0], (tuple, list))) and any(
                isinstance(v, Val) and v.part is not None for v in followed):
            raise UnsupportedOperationError(
                f"Op '{ctx.op}' at {ctx.where}: its rule could not follow the traced input into the output "
                f"{shape}; the exporter stops here rather than lose the edges after it.")
        return out


def _skipped(b, name, inputs, shape):
    v = inputs[0] if inputs else None
    if v is not None and v.part is not None and len(shape) == len(v.shape) and shape[v.cdim] == v.channels:
        return Val(v.part, v.cdim, shape)
    cdim = v.cdim % len(shape) if v is not None and len(shape) == len(v.shape) else len(shape) - 1
    return Val(b.new_partition(name, shape[cdim]), cdim, shape)


def walk_graph(model, gm, *, skip, n_inputs):
    """Walk ``gm`` (shapes already propagated); return ``(builder, outputs, touched)``."""
    w = Walk(model, gm, n_inputs, skip)
    outputs = w.run()
    if not w.b.blocks:
        raise TracingError(
            f"{type(model).__name__} has no weight the exporter turned into edges: the forward pass on the example "
            "inputs uses no Linear, convolution, embedding or attention weight (or only through untraced code).")
    if not any(v.part is not None for v in outputs):
        raise TracingError(
            f"{type(model).__name__} returns no tensor the exporter could follow back to a layer; return the "
            "output tensors directly (a tensor, tuple, list or dict of tensors)."
        )
    return w.b, outputs, w.touched

