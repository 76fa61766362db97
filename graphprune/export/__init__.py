"""torch.nn.Module -> MultipartiteGraph: trace the real dataflow, then module adapters and op rules.

The export has five jobs, one module each:

- :mod:`~graphprune.export.trace`: the inputs (tensors, tuples, or keyword dicts such as Hugging Face's
  ``input_ids`` / ``attention_mask``), tracing with ``torch.fx`` or ``torch.export``, and a quiet shape pass;
- :mod:`~graphprune.export.walk`: the walk over the traced graph;
- :mod:`~graphprune.export.adapters`: one adapter per layer type (``nn.Linear``, convolutions, embeddings,
  ``nn.MultiheadAttention``, transformers' ``Conv1D``...), see :func:`register_adapter`;
- :mod:`~graphprune.export.rules`: one rule per functional / ATen op family, see :func:`register_op_rule`;
- :mod:`~graphprune.export.uses`: what acts on the channels besides edges (norms, functional biases, channel-mixing
  ops), kept in ``G.channel_uses`` for structured pruning.

Edges therefore follow the computation, not the order of module definition. :mod:`~graphprune.export.coverage`
checks that every prunable weight became edges.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch import nn
from torch.fx.node import map_aggregate

from .._validation import TRACERS as _TRACERS
from ..errors import ParameterError, TracingError, UnsupportedOperationError
from ..graph import MultipartiteGraph
from ._builder import Builder, Val
from .adapters import ADAPTERS, PASS_THROUGH, find_adapter, register_adapter
from .coverage import left_out, prunable_weights
from .rules import OP_RULES, register_op_rule
from .trace import eval_mode, export_arguments, export_trace, fx_arguments, fx_trace, normalize_inputs, propagate
from .walk import check_modules, walk_graph

__all__ = ["from_model", "register_adapter", "register_op_rule", "ADAPTERS", "OP_RULES", "prunable_weights",
           "TRACERS"]

#: Allowed values of ``from_model(tracer=...)`` (the list lives in :mod:`graphprune._validation`).
TRACERS = _TRACERS


def from_model(model: nn.Module, example_inputs=None, *, leaf_modules=(), skip_unsupported: bool = False,
               validate: bool = True, tracer: str = "auto", **input_kwargs) -> MultipartiteGraph:
    """Export a PyTorch model to an explicit multipartite graph.

    Parameters
    ----------
    model : torch.nn.Module
        The network, on a real device (not ``meta``). It is not modified (training flags are restored after the
        shape pass, which runs in eval mode under ``torch.no_grad`` so batch-norm statistics are untouched).
    example_inputs : torch.Tensor, tuple of torch.Tensor, or dict of str to tensor
        Inputs for one forward pass; only their shapes matter (batch 1 and short sequences suffice). A dict is
        passed as keyword arguments (``{"input_ids": ids, "attention_mask": mask}`` for Hugging Face models).
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
        (an ATen-level graph; handles code fx cannot, such as Hugging Face transformers' forward, but has no
        layer adapters: ``nn.MultiheadAttention`` is not followed). ``"auto"``: fx, then export when fx fails.
    **input_kwargs
        More keyword inputs of the forward (``use_cache=False``...). A forward that takes ``use_cache`` gets
        ``use_cache=False`` unless given: a key/value cache is not part of the network.

    Returns
    -------
    MultipartiteGraph
        Models pruned with ``torch.nn.utils.prune`` give their masks as the graph's initial masks. Prunable
        weights left out of the graph are listed in ``G.left_out`` (and in a warning, and in ``G.summary()``).

    Raises
    ------
    ParameterError
        A bad argument (model, example inputs, leaf_modules, tracer), or a model on the meta device.
    UnsupportedModuleError
        A parametrised module has no graph encoding (all such modules are listed).
    TracingError
        The model cannot be traced or run on the example inputs; the message gives torch's own message first,
        then the module and op where it happened.
    UnsupportedOperationError
        A traced op moves the channel dimension in a way the exporter cannot follow, or has no rule: the message
        names the op, its module and shapes, and how to register a rule.

    Notes
    -----
    Cost is linear in the number of traced operations; no Python work is done per edge. Biases and
    normalisation parameters are not edges. ``torch.fx.symbolic_trace`` cannot trace through
    ``nn.TransformerEncoder``'s mask handling, so the encoder and its layers are leaves with adapters.

    Coverage rule: the weight edges equal the total size of the model's Linear, ConvNd, ConvTransposeNd,
    Embedding, attention-projection and transformers-Conv1D weights (tied ones once), or a warning names each
    weight left out and why.

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
    if tracer not in TRACERS:
        raise ParameterError(f"The 'tracer' parameter of from_model must be one of {', '.join(map(repr, TRACERS))}. "
                             f"Got {tracer!r} instead.")
    leaf_modules = _check_leaves(leaf_modules)
    for flag, value in (("skip_unsupported", skip_unsupported), ("validate", validate)):
        if not isinstance(value, bool):
            raise ParameterError(f"The '{flag}' parameter of from_model must be a bool. Got {value!r} instead.")
    return _export(model, example_inputs, leaf_modules, skip_unsupported, validate, tracer, input_kwargs)


def _export(model, example_inputs, leaf_modules, skip_unsupported, validate, tracer, input_kwargs, *,
            structure_only: bool = False):
    """:func:`from_model` once its options are checked. ``structure_only``: a model on the meta device is
    exported from its shapes alone (no weight values; :func:`graphprune.prune_checkpoint` reads the weights from
    disk block by block); the example inputs are then moved to the meta device too."""
    meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if structure_only and meta:
        example_inputs = map_aggregate(example_inputs, lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t)
        input_kwargs = {k: map_aggregate(v, lambda t: t.to("meta") if isinstance(t, torch.Tensor) else t)
                        for k, v in input_kwargs.items()}
    elif meta:
        raise ParameterError(
            f"The 'model' parameter of from_model is on the meta device ({len(meta)} tensors, e.g. '{meta[0]}'): "
            "it has no values to export. Materialise it first, e.g. model.to_empty(device='cpu') then load or "
            "initialise its weights."
        )
    if not any(True for _ in model.parameters()):
        raise ParameterError(
            f"The 'model' parameter of from_model has no parameters ({type(model).__name__}): there is no weight "
            "to turn into edges."
        )
    inputs = normalize_inputs(model, example_inputs, input_kwargs)
    _check_keywords(model, inputs)
    _no_cache(model, inputs)
    if find_adapter(model) is not None:  # the root itself is a known layer (e.g. nn.TransformerEncoder)
        return _from_root_adapter(model, inputs, validate)
    if tracer == "export":
        return _from_export(model, inputs, skip_unsupported, validate)
    try:
        gm = fx_trace(model, lambda m: find_adapter(m) is not None or isinstance(m, PASS_THROUGH) or bool(
            leaf_modules and isinstance(m, leaf_modules)))
    except TracingError as fx_error:
        if tracer == "fx":
            raise
        try:
            return _from_export(model, inputs, skip_unsupported, validate)
        except (TracingError, UnsupportedOperationError) as exc:
            raise type(exc)(f"{exc} (torch.fx had failed first: {fx_error})") from exc
    propagate(model, gm, fx_arguments(model, gm, inputs))
    skipped = check_modules(gm, skip_unsupported)
    if skipped:
        warnings.warn("from_model skipped unsupported parametrised modules: "
                      + ", ".join(f"'{n}' ({t})" for n, t in skipped), stacklevel=2)
    return _finish(model, gm, inputs, skip_unsupported, validate, skipped)


def _check_leaves(leaf_modules):
    seq = (leaf_modules,) if isinstance(leaf_modules, type) else leaf_modules
    ok = isinstance(seq, (tuple, list, set, frozenset)) and all(
        isinstance(t, type) and issubclass(t, nn.Module) for t in seq)
    if not ok:
        raise ParameterError(
            "The 'leaf_modules' parameter of from_model must be a tuple of torch.nn.Module subclasses (types, "
            f"such as (MyBlock,)). Got {leaf_modules!r} instead."
        )
    return tuple(seq)


def _check_keywords(model, inputs):
    """Keyword inputs must be parameters of the forward (unless it takes ``**kwargs``): a misspelled option of
    from_model is not silently passed to the model."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    bad = [k for k in inputs.kwargs if k not in params]
    if bad:
        raise ParameterError(
            f"from_model got the keyword {bad[0]!r}, which is neither an option of from_model (leaf_modules, "
            f"skip_unsupported, validate, tracer) nor a parameter of {type(model).__name__}.forward "
            f"({', '.join(params) or 'none'}). Got {', '.join(map(repr, bad))} instead."
        )


def _no_cache(model, inputs):
    """Hugging Face decoders return a key/value cache unless told not to: it is not part of the network."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return
    if "use_cache" in params and "use_cache" not in inputs.kwargs:
        inputs.kwargs["use_cache"] = False


def _from_root_adapter(model, inputs, validate):
    with eval_mode(model):
        try:
            out = model(*inputs.args, **inputs.kwargs)
        except Exception as exc:
            from .trace import cause

            raise TracingError(f"{cause(exc)}. This happened while running {type(model).__name__} on the example "
                               "inputs. Give example inputs of the shape the model expects.") from exc
    b = Builder(model, n_inputs=len(inputs.tensors))
    shapes = map_aggregate(out, lambda t: tuple(t.shape) if isinstance(t, torch.Tensor) else None)
    root = type(model).__name__.lower()  # names the root's partitions and blocks ("linear", ...)
    xs = [Val(None, -1, tuple(x.shape), raw="input") for x in inputs.tensors]
    res = find_adapter(model)(b, root, model, xs, shapes)
    outs = []
    map_aggregate(res, lambda a: outs.append(a) if isinstance(a, Val) else None)
    G = b.build(outs)
    G.left_out = {}
    if validate:
        G.validate()
    return G


def _from_export(model, inputs, skip, validate):
    """torch.export path: export in eval mode (batch-norm statistics untouched), then the same walk."""
    gm = export_trace(model, inputs)
    propagate(model, gm, export_arguments(gm, inputs), exported=True)
    return _finish(model, gm, inputs, skip, validate, [])


def _finish(model, gm, inputs, skip, validate, skipped):
    b, outputs, touched = walk_graph(model, gm, skip=skip, n_inputs=len(inputs.tensors))
    G = b.build(outputs)
    G.left_out = left_out(model, G, touched, skipped)
    if validate:
        G.validate(allow_dangling=bool(skip))
    if G.left_out:
        warnings.warn(
            f"from_model left {len(G.left_out)} prunable weight(s) out of the graph: "
            + "; ".join(f"'{k}': {v}" for k, v in list(G.left_out.items())[:20])
            + (" ..." if len(G.left_out) > 20 else "") + ". G.summary() lists them.", stacklevel=3)
    return G
