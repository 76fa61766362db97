"""torch.nn.Module -> MultipartiteGraph: trace the real dataflow, then one adapter per layer type.

The model is traced with ``torch.fx`` (known layers such as ``nn.MultiheadAttention`` and the transformer encoder
layers are leaves with adapters), shapes are propagated with the example inputs, and each traced operation is
turned into partitions and blocks by :mod:`graphprune.export.adapters` and the shape rules of
:mod:`graphprune.export._builder`. Edges therefore follow the computation, not the order of module definition.
"""

from __future__ import annotations

import operator
import warnings

import numpy as np
import torch
import torch.fx
from torch import nn
from torch.fx.node import map_aggregate
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ParameterError, TracingError, UnsupportedModuleError, UnsupportedOperationError
from ..graph import MultipartiteGraph
from ._builder import Builder, ParamRef, Scores, Val
from .adapters import ADAPTERS, PASS_THROUGH, conv, find_adapter, linear, register_adapter

__all__ = ["from_model", "register_adapter", "ADAPTERS"]

_PERMUTES = {"permute", "transpose", "t", "swapaxes", "swapdims", "movedim"}
_CATS = {"cat", "concat", "concatenate"}
_SPLITS = {"split", "chunk", "tensor_split", "split_with_sizes"}
_CONVS = {"conv1d": 1, "conv2d": 2, "conv3d": 3}


def from_model(model: nn.Module, example_inputs, *, leaf_modules=(), skip_unsupported: bool = False,
               validate: bool = True, tracer: str = "auto") -> MultipartiteGraph:
    """Export a PyTorch model to an explicit multipartite graph.

    Parameters
    ----------
    model : torch.nn.Module
        The network. It is not modified (training flags are restored after the shape pass, which runs in eval
        mode under ``torch.no_grad`` so batch-norm statistics are untouched).
    example_inputs : torch.Tensor or tuple of torch.Tensor
        Inputs for one forward pass; only their shapes matter.
    leaf_modules : tuple of type, optional
        Extra module types not to trace into. They need an adapter (:func:`register_adapter`) unless they hold no
        parameters or ``skip_unsupported`` is set.
    skip_unsupported : bool, default False
        Skip parametrised modules with no adapter instead of raising: a module that keeps its input's channel count
        passes nodes through, any other starts a new partition with no incoming edge. A warning lists them.
    validate : bool, default True
        Run :meth:`MultipartiteGraph.validate` on the result.
    tracer : {"auto", "fx", "export"}, default "auto"
        ``"fx"``: ``torch.fx`` symbolic tracing with the layer adapters. ``"export"``: ``torch.export.export``
        (ATen-level graph; handles code fx cannot, such as slicing a buffer by a traced size, but has no layer
        adapters: ``nn.MultiheadAttention`` is not followed, and parameters it cannot place are listed in a
        warning). ``"auto"``: fx, then export when fx fails to trace.

    Returns
    -------
    MultipartiteGraph
        Models pruned with ``torch.nn.utils.prune`` give their masks as the graph's initial masks.

    Raises
    ------
    UnsupportedModuleError
        A parametrised module has no graph encoding (all such modules are listed).
    TracingError
        ``torch.fx`` cannot trace the model (data-dependent control flow); the message names the cause.
    UnsupportedOperationError
        A traced operation moves the channel dimension in a way the exporter cannot follow.

    Notes
    -----
    Cost is linear in the number of traced operations; no Python work is done per edge. Biases and
    normalisation parameters are not edges. ``torch.fx.symbolic_trace`` cannot trace through
    ``nn.TransformerEncoder``'s mask handling, so the encoder and its layers are leaves with adapters.

    Examples
    --------
    >>> import torch, graphprune
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(8 * 6 * 6, 10))
    >>> G = graphprune.from_model(net, torch.randn(1, 3, 8, 8))
    >>> [(p.name, p.size, p.kind) for p in G.partitions]
    [('input', 3, 'channel'), ('0', 8, 'channel'), ('2', 288, 'feature'), ('3', 10, 'neuron')]
    >>> G.num_weight_edges == sum(p.numel() for n, p in net.named_parameters() if n.endswith("weight"))
    True
    """
    if not isinstance(model, nn.Module):
        raise ParameterError(
            f"The 'model' parameter of from_model must be a torch.nn.Module. Got {type(model).__name__} instead."
        )
    inputs = example_inputs if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    if not inputs or not all(isinstance(x, torch.Tensor) for x in inputs):
        raise ParameterError(
            "The 'example_inputs' parameter of from_model must be a tensor or a tuple of tensors. "
            f"Got {type(example_inputs).__name__} instead."
        )
    leaf_modules = tuple(leaf_modules)
    if find_adapter(model) is not None:  # the root itself is a known layer (e.g. nn.TransformerEncoder)
        out = _run(model, model, inputs)
        b = Builder(model, n_inputs=len(inputs))
        shapes = map_aggregate(out, lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else None)
        root = type(model).__name__.lower()  # names the root's partitions and blocks ("linear", ...)
        res = find_adapter(model)(b, root, model, [Val(None, -1, tuple(x.shape), raw="input") for x in inputs],
                                  shapes)
        G = b.build(_vals(res))
        if validate:
            G.validate()
        return G
    if tracer not in ("auto", "fx", "export"):
        raise ParameterError(f"The 'tracer' parameter of from_model must be 'auto', 'fx' or 'export'. "
                             f"Got {tracer!r} instead.")
    if tracer == "export":
        return _from_export(model, inputs, skip_unsupported, validate)
    try:
        gm = _trace(model, leaf_modules)
    except TracingError as fx_error:
        if tracer == "fx":
            raise
        try:
            return _from_export(model, inputs, skip_unsupported, validate)
        except (TracingError, UnsupportedOperationError) as exc:
            raise TracingError(f"{fx_error} torch.export fallback failed too: {exc}") from fx_error
    _run(model, _ShapeProp(gm), inputs)
    _check_supported(gm, skip_unsupported)
    return _walk(model, gm, skip_unsupported, validate, len(inputs))


def _from_export(model, inputs, skip, validate):
    """torch.export path: export in eval mode (batch-norm statistics untouched), then the same walk."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            gm = torch.export.export(model, tuple(inputs)).module()
    except Exception as exc:  # export raises many types; name the cause
        raise TracingError(f"torch.export could not export {type(model).__name__}: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        for m, t in flags.items():
            m.training = t
    try:  # the exported module is already in eval mode (and refuses .eval())
        with torch.no_grad():
            _ShapeProp(gm).propagate(*inputs)
    except Exception as exc:
        raise TracingError(f"Running the exported {type(model).__name__} failed: {type(exc).__name__}: {exc}") \
            from exc
    G = _walk(model, gm, True, validate, len(inputs))
    used = set(G.params)
    missed = [n for n, p in model.named_parameters() if p.dim() >= 2 and n not in used]
    if missed:
        warnings.warn("from_model (torch.export path) did not turn these parameters into edges: "
                      + ", ".join(missed[:20]) + (" ..." if len(missed) > 20 else ""), stacklevel=3)
    return G


class _Tracer(torch.fx.Tracer):
    def __init__(self, leaf_modules):
        super().__init__()
        self._leaves = leaf_modules

    def is_leaf_module(self, m, qualname):
        if find_adapter(m) is not None or (self._leaves and isinstance(m, self._leaves)):
            return True
        return super().is_leaf_module(m, qualname)


def _trace(model, leaf_modules):
    tracer = _Tracer(leaf_modules)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; name the cause
        raise TracingError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. Pass the offending "
            "module types as leaf_modules=(...) (with an adapter, or skip_unsupported=True)."
        ) from exc
    return torch.fx.GraphModule(tracer.root, graph)


class _ShapeProp(ShapeProp):
    """ShapeProp that also keeps small Python results (sizes, ints) so indices like ``x[..., :x.shape[-1]]``
    resolve to numbers."""

    def run_node(self, n):
        result = super().run_node(n)
        if isinstance(result, (bool, int, float, torch.Size)) or (
                isinstance(result, tuple) and all(isinstance(v, int) for v in result)):
            n.meta["graphprune_value"] = result
        return result


def _run(model, runner, inputs):
    """Run ``runner`` (the model or a ShapeProp) in eval mode without grad; restore training flags after."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            return runner.propagate(*inputs) if isinstance(runner, ShapeProp) else runner(*inputs)
    except Exception as exc:
        raise TracingError(
            f"Running {type(model).__name__} on the example inputs failed: {type(exc).__name__}: {exc}. "
            "Check the shapes of example_inputs."
        ) from exc
    finally:
        for m, t in flags.items():
            m.training = t


def _has_params(m):
    return any(True for _ in m.parameters(recurse=True))


def _check_supported(gm, skip):
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
    if bad:
        warnings.warn(
            "from_model skipped unsupported parametrised modules: "
            + ", ".join(f"'{n}' ({t})" for n, t in bad),
            stacklevel=3,
        )


def _shape(meta):
    if meta is None:
        return None
    if hasattr(meta, "shape"):
        return tuple(meta.shape)
    if isinstance(meta, (tuple, list)):
        return tuple(_shape(m) for m in meta)
    return None


def _vals(obj):
    out = []
    map_aggregate(obj, lambda a: out.append(a) if isinstance(a, Val) else None)
    return out


def _label(node):
    """The module a functional op comes from (torch.export keeps ``nn_module_stack``), else the node name."""
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return path
    return node.name


def _name(node):
    t = node.target
    if isinstance(t, str):
        return t
    if hasattr(t, "overloadpacket"):  # an ATen OpOverload (torch.export graphs): aten.linear.default -> "linear"
        return t.overloadpacket.__name__
    return getattr(t, "__name__", str(t))


def _walk(model, gm, skip, validate, n_inputs):
    b = Builder(model, n_inputs=n_inputs)
    env = {}
    outputs = []
    for node in gm.graph.nodes:
        shape = _shape(node.meta.get("tensor_meta"))
        args = torch.fx.node.map_arg(node.args, lambda n: env.get(n))
        kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env.get(n))
        if node.op == "placeholder":
            env[node] = Val(None, -1, shape, raw=node.name) if isinstance(shape, tuple) and (
                not shape or isinstance(shape[0], int)) else None
        elif node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node] = ParamRef(node.target, obj) if isinstance(obj, torch.Tensor) else None
        elif node.op == "call_module":
            env[node] = _module(b, gm, node, args, kwargs, shape, skip)
        elif node.op in ("call_function", "call_method"):
            if "graphprune_value" in node.meta:
                env[node] = node.meta["graphprune_value"]
            else:
                env[node] = _function(b, node, args, kwargs, shape)
        elif node.op == "output":
            outputs = _vals(args)
    if not any(v.part is not None for v in outputs):
        raise TracingError(
            f"{type(model).__name__} returns no tensor the exporter could follow back to a layer; return the "
            "output tensors directly (a tensor, tuple, list or dict of tensors)."
        )
    G = b.build(outputs)
    if validate:
        G.validate(allow_dangling=skip)
    return G


def _is_tensor_shape(shape):
    return isinstance(shape, tuple) and all(isinstance(s, int) for s in shape)


def _module(b, gm, node, args, kwargs, shape, skip):
    m = gm.get_submodule(node.target)
    inputs = _vals(args) + _vals(kwargs)
    adapter = find_adapter(m)
    if adapter is not None:
        return adapter(b, node.target, m, inputs, shape)
    if isinstance(m, PASS_THROUGH) or not _has_params(m):
        if not _is_tensor_shape(shape) or not inputs:
            return None
        return _generic(b, node.target, inputs, shape)
    # a skipped unsupported module: pass-through when the channel count is kept, else a cut
    if isinstance(shape, tuple) and shape and isinstance(shape[0], tuple):
        first = _skipped(b, node.target, inputs, shape[0])
        return (first,) + (None,) * (len(shape) - 1)
    return _skipped(b, node.target, inputs, shape) if _is_tensor_shape(shape) else None


def _skipped(b, name, inputs, shape):
    v = inputs[0] if inputs else None
    if v is not None and v.part is not None and len(shape) == len(v.shape) and shape[v.cdim] == v.channels:
        return Val(v.part, v.cdim, shape)
    cdim = v.cdim % len(shape) if v is not None and len(shape) == len(v.shape) else len(shape) - 1
    return Val(b.new_partition(name, shape[cdim]), cdim, shape)


def _arg(args, kwargs, i, key, default=None):
    if key in kwargs:
        return kwargs[key]
    return args[i] if len(args) > i else default


def _function(b, node, args, kwargs, shape):
    fname = _name(node)
    target = node.target
    if fname == "getitem" and isinstance(args[0], (tuple, list)):
        return args[0][args[1]]
    if isinstance(target, type) and issubclass(target, tuple):  # a (named)tuple of outputs, e.g. aux heads
        return tuple(list(args) + list(kwargs.values()))
    x = args[0] if args else None
    if fname in _SPLITS and isinstance(x, Val) and isinstance(shape, tuple) and shape and \
            all(_is_tensor_shape(s) for s in shape):
        return _split(b, node.name, x, args, kwargs, shape)
    if isinstance(shape, tuple) and shape and all(_is_tensor_shape(t) for t in shape) and \
            isinstance(x, Val) and len(_vals(args)) == 1:  # e.g. batch norm -> (out, mean, var)
        return tuple(x if tuple(t) == tuple(x.shape) else None for t in shape)
    if not _is_tensor_shape(shape):
        return None
    if fname == "embedding":
        w, ids = (args[0], args[1]) if isinstance(args[0], ParamRef) else (_arg(args, kwargs, 1, "weight"), x)
        if isinstance(w, ParamRef) and isinstance(ids, Val):
            name, W = b.param_from_ref(w)
            v = b.materialize(ids, -1, kind="token", size=W.shape[0]) if ids.part is None else ids
            out = b.new_partition(_label(node), W.shape[1])
            b.weight_block(_label(node), v.part, out, name, W, "embedding")
            return Val(out, len(shape) - 1, shape)
    if fname == "select" and isinstance(x, Val) and x.grid is not None:
        return _select_split(b, node.name, x, _arg(args, kwargs, 1, "dim", 0), _arg(args, kwargs, 2, "index", 0),
                             shape)
    if fname == "slice" and isinstance(x, Val) and x.part is not None and x.grid is None:
        dim = _arg(args, kwargs, 1, "dim", 0) % len(x.shape)
        if dim == x.cdim % len(x.shape):
            start, end, step = (_arg(args, kwargs, i, k, d) for i, k, d in ((2, "start", None), (3, "end", None),
                                                                          (4, "step", 1)))
            chans = np.arange(x.shape[dim])[slice(start, end, step)]
            return b.select(node.name, x, chans, shape, dim)
    if fname == "getitem" and isinstance(x, Val) and x.part is not None:
        sel = _channel_index(x, args[1], shape)
        if sel is not None:
            return b.select(node.name, x, sel[0], shape, sel[1])
    if target is torch.nn.functional.linear or (fname == "linear" and isinstance(_arg(args, kwargs, 1, "weight"),
                                                                                 ParamRef)):
        w = _arg(args, kwargs, 1, "weight")
        if isinstance(w, ParamRef) and isinstance(x, Val):
            name, W = b.param_from_ref(w)
            return linear(b, _label(node), name, W, x, shape)
    if fname in _CONVS and isinstance(_arg(args, kwargs, 1, "weight"), ParamRef) and isinstance(x, Val):
        name, W = b.param_from_ref(_arg(args, kwargs, 1, "weight"))
        return conv(b, _label(node), name, W, int(_arg(args, kwargs, 6, "groups", 1)), x, shape)
    scores = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Scores)]
    if fname in ("matmul", "bmm") or target is operator.matmul:
        a0, a1 = (args + (None, None))[:2]
        if isinstance(a0, Val) and isinstance(a1, Val) and a0.grid is not None and a1.grid is not None:
            return Scores(a0, a1, shape)  # q @ k^T
        if isinstance(a0, Scores) and isinstance(a1, Val):  # softmax(q k^T) @ v
            return b.attention(node.name, a0.q, a0.k, a1, -1, -2, shape)
    if fname == "scaled_dot_product_attention" and all(isinstance(a, Val) for a in args[:3]):
        return b.attention(node.name, args[0], args[1], args[2], -1, -1, shape)
    if scores:  # scale, mask, softmax, dropout of the scores: still the same scores
        return scores[0] if tuple(shape) == tuple(scores[0].shape) else None
    if fname in ("matmul", "mm") or target is operator.matmul:
        w = args[1] if len(args) > 1 else None
        if isinstance(w, ParamRef) and isinstance(x, Val) and w.tensor.dim() == 2:
            name, W = b.param_from_ref(w)
            x = b.materialize(x, -1)
            out = b.new_partition(node.name, W.shape[1])
            b.weight_block(node.name, x.part, out, name, W, "embedding")
            return Val(out, len(shape) - 1, shape)
    if fname in _CATS:
        tensors = [v for v in (x or []) if isinstance(v, Val)]
        dim = _arg(args, kwargs, 1, "dim", 0)
        return b.cat(node.name, tensors, dim, shape) if tensors else None
    if fname in _PERMUTES and isinstance(x, Val) and x.part is not None:
        return _permuted(b, node.name, fname, x, args[1:], kwargs, shape)
    vals = _vals(args) + _vals(kwargs)
    if not vals:
        return None
    return _generic(b, node.name, vals, shape)


def _split(b, name, x, args, kwargs, shapes):
    """split / chunk / tensor_split: along the channel dim each piece is a slice partition."""
    dim = _arg(args, kwargs, 2 if len(args) > 2 or "dim" in kwargs else 99, "dim", 0)
    rank = len(x.shape)
    dim = dim % rank
    c = x.cdim % rank
    if dim != c or x.part is None:
        return tuple(Val(x.part, x.cdim, s, raw=x.raw) for s in shapes)
    out, start = [], 0
    for i, s in enumerate(shapes):
        n = s[dim]
        out.append(b.select(f"{name}.{i}", x, np.arange(start, start + n), s, dim))
        start += n
    return tuple(out)


def _select_split(b, name, x, dim, index, shape):
    """``x.select(dim, index)`` on a head-split tensor: picking along a split dim keeps a subset of channels."""
    dim = dim % len(x.shape)
    shift = lambda d: d - (d > dim)  # noqa: E731
    if dim not in x.gdims:
        gdims = tuple(shift(d) for d in x.gdims)
        return Val(x.part, min(gdims), shape, grid=x.grid, gdims=gdims)
    ax = x.gdims.index(dim)
    sub = np.take(x.grid, index, axis=ax)
    gdims = tuple(shift(d) for i, d in enumerate(x.gdims) if i != ax)
    if sub.ndim == 1:
        return b.select(name, Val(x.part, gdims[0], x.shape), sub, shape, gdims[0])
    return Val(x.part, min(gdims), shape, grid=sub, gdims=gdims)


def _channel_index(x, index, out_shape):
    """For ``x[index]``: ``(channels, output dim)`` when the index slices the channel dim, else None."""
    index = index if isinstance(index, tuple) else (index,)
    rank = len(x.shape)
    c = x.cdim % rank
    consuming = [i for i in index if i is not Ellipsis and i is not None]
    if any(not isinstance(i, (int, slice)) for i in consuming):
        return None  # advanced indexing: leave it to the shape rules
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (rank - len(consuming)) + index[k + 1 :]
    index = index + (slice(None),) * (rank - sum(i is not None for i in index))
    in_dim, out_dim = 0, 0
    for i in index:
        if i is None:
            out_dim += 1
            continue
        if in_dim == c:
            if isinstance(i, int):
                return None
            if not all(v is None or isinstance(v, int) for v in (i.start, i.stop, i.step)):
                return None
            chans = np.arange(x.shape[c])[i]
            if chans.size == x.shape[c]:
                return None
            if out_dim >= len(out_shape) or out_shape[out_dim] != chans.size:
                raise UnsupportedOperationError(
                    f"Cannot resolve the channel slice {i} of shape {x.shape}: the traced output has shape "
                    f"{out_shape}."
                )
            return chans, out_dim
        in_dim += 1
        out_dim += 0 if isinstance(i, int) else 1
    return None


def _perm_list(fname, rank, rest, kwargs):
    """Output dim i takes input dim perm[i], for permute / transpose / t / swapaxes / movedim."""
    if fname == "permute":
        dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return [d % rank for d in (dims or kwargs.get("dims"))]
    perm = list(range(rank))
    if fname == "t":
        return perm[::-1] if rank == 2 else perm
    if fname == "movedim":
        src, dst = rest[0] % rank, rest[1] % rank
        perm.remove(src)
        perm.insert(dst, src)
        return perm
    d0 = (rest[0] if rest else kwargs.get("dim0")) % rank
    d1 = (rest[1] if len(rest) > 1 else kwargs.get("dim1")) % rank
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return perm


def _permuted(b, name, fname, x, rest, kwargs, shape):
    perm = _perm_list(fname, len(x.shape), rest, kwargs)
    c = x.cdim % len(x.shape)
    if x.grid is None:
        return Val(x.part, perm.index(c), shape)
    gdims = tuple(perm.index(d) for d in x.gdims)
    return Val(x.part, min(gdims), shape, grid=x.grid, gdims=gdims)


def _generic(b, name, vals, shape):
    """Shape-driven rule: one tensor input follows its channel dim; several are merged (residual add)."""
    placed = [v for v in vals if v.part is not None]
    if len(vals) == 1 or (len(placed) == len(vals) and len({v.part for v in placed}) == 1):
        return b.reshape(name, vals[0], shape)
    if not placed:
        return Val(None, -1, shape, raw=vals[0].raw)
    # several traced tensors: they must meet on the channel dimension
    if not any(len(v.shape) == len(shape) for v in placed):
        raise UnsupportedOperationError(
            f"Operation '{name}' combines tensors of shapes {[v.shape for v in placed]} into {shape}."
        )
    return b.merge(name, vals, shape)
