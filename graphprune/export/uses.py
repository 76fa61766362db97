"""What acts on a partition's channels besides weight edges: records the walk keeps for structured pruning.

Weight blocks say which parameter rows and columns a node owns. Removing a node from the model (structured
pruning, :mod:`graphprune.structured`) also needs everything else that is indexed by the channel or that mixes the
channels: normalisation parameters and running statistics, biases applied by functional ops, per-channel scales,
and the operations that reduce over the channel dimension (LayerNorm, RMSNorm, a softmax over channels), whose
output changes when a channel is removed. The walk records each as a :class:`ChannelUse`; the graph keeps them in
``G.channel_uses`` (a tuple, empty for a model with none, None for a graph not made by :func:`from_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ChannelUse", "ParamView", "param_view", "param_use", "module_use", "reduce_use", "NORM_OPS",
           "SOFTMAX_OPS", "VIEW_OPS", "CHANNEL_FIRST_OPS"]

#: Functional / ATen normalisations over the trailing dims: they couple every channel of their input.
NORM_OPS = ("layer_norm", "native_layer_norm", "rms_norm", "group_norm", "native_group_norm")
#: Ops whose ``dim`` argument, when it is the channel dim, couples every channel.
SOFTMAX_OPS = ("softmax", "log_softmax", "_softmax", "_log_softmax", "softmin")
#: Functional normalisations whose per-channel tensors index dim 1 (not the trailing dim) of their input.
CHANNEL_FIRST_OPS = ("batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                     "native_batch_norm", "cudnn_batch_norm", "instance_norm", "group_norm", "native_group_norm")
#: Ops that give a parameter another shape without moving its elements (size-1 dims added or dropped) or dtype.
VIEW_OPS = ("view", "reshape", "_unsafe_view", "unsqueeze", "squeeze", "flatten", "to", "type", "float", "half",
            "bfloat16", "double", "contiguous", "_to_copy", "type_as", "clone", "detach", "alias")


@dataclass(frozen=True, eq=False)
class ParamView:
    """A parameter seen through a view that only adds or drops size-1 dims (ConvNeXt's
    ``gamma.reshape(1, -1, 1, 1)``): ``shape`` is the view's shape."""

    name: str
    tensor: object
    shape: tuple


def param_view(ref, shape):
    """The :class:`ParamView` of ``ref`` (a ParamRef or ParamView) under ``shape``, or None when the view moves
    elements (its non-singleton dims differ from the parameter's)."""
    if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape):
        return None
    big = [s for s in ref.tensor.shape if s != 1]
    if [s for s in shape if s != 1] != big:
        return None
    return ParamView(ref.name, ref.tensor, tuple(shape))


def view_dim(view_shape, param_shape, d):
    """The parameter dim that dim ``d`` of a :class:`ParamView` of ``view_shape`` shows."""
    rank = sum(1 for s in view_shape[:d] if s != 1)
    big = [i for i, s in enumerate(param_shape) if s != 1]
    return big[rank]


@dataclass(frozen=True, eq=False)
class ChannelUse:
    """One thing that acts on the channels of partition ``part``.

    Attributes
    ----------
    kind : {"param", "module", "reduce", "skipped"}
        ``"param"``: a tensor that is not an edge (a norm weight, a functional bias, a buffer) broadcast against the
        channels; ``"module"``: a pass-through module (BatchNorm, LayerNorm, ...) applied to them; ``"reduce"``: an
        op whose output mixes channels (a reduction over the channel dim, a normalisation, a softmax over channels);
        ``"skipped"``: a parametrised module with no adapter that ``skip_unsupported`` passed through.
    part : str
        The partition.
    name : str
        The parameter or buffer name (``"param"``), the module path (``"module"``, ``"skipped"``), or the op.
    op, where : str
        The op (or module type) and where it ran (``module 'h.0.ln' (node 'layer_norm')``), for messages.
    index : numpy.ndarray or None
        ``"param"`` and ``"module"``: for each channel of ``part``, the element of the tensor (along ``dim``) it
        reads, -1 where it reads none. ``"reduce"``: for each channel, the label of the set of channels it is
        mixed with (channels with equal labels are mixed; -1: not mixed). None when the layout is not known.
    dim : int
        The tensor dim that ``index`` indexes (``"param"``; 0 otherwise).
    """

    kind: str
    part: str
    name: str
    op: str
    where: str
    index: np.ndarray | None = None
    dim: int = 0


def _channel_positions(v, n):
    """For each tensor dim that carries channels, each of the partition's ``n`` channels' position on it (-1 for
    a channel the tensor does not hold: a head-split slice of a fused projection)."""
    if v.grid is None:
        return {v.cdim % len(v.shape): np.arange(n)}
    grid = np.asarray(v.grid)
    out = {}
    for ax, d in enumerate(v.gdims):
        pos = np.full(n, -1, dtype=np.int64)
        coords = np.indices(grid.shape)[ax]
        pos[grid.reshape(-1)] = coords.reshape(-1)
        out[d % len(v.shape)] = pos
    return out


def param_use(part, v, name, shape, op, where, n) -> ChannelUse:
    """A tensor of ``shape`` broadcast against the traced tensor ``v`` (trailing dims aligned); ``n`` is the size
    of partition ``part``."""
    shape = tuple(shape)
    rank, s = len(v.shape), len(shape)
    positions = _channel_positions(v, n)
    hits = []
    for j in range(s):
        d = rank - s + j
        if shape[j] > 1 and d in positions:
            hits.append((j, positions[d]))
    if not hits:
        return ChannelUse("param", part, name, op, where, np.full(n, -1, dtype=np.int64), 0)
    if len(hits) > 1:  # several channel axes read by one tensor: no simple layout
        return ChannelUse("param", part, name, op, where, None, 0)
    j, pos = hits[0]
    if rank - s + j < 0:
        return ChannelUse("param", part, name, op, where, None, 0)
    return ChannelUse("param", part, name, op, where, pos.astype(np.int64), j)


def module_use(part, v, path, kind, where, n) -> ChannelUse:
    """A pass-through module (BatchNorm, LayerNorm, PReLU...) applied to ``v`` (partition ``part`` of size ``n``)."""
    index = np.arange(n) if v.grid is None else None
    return ChannelUse("module", part, path, kind, where, index, 0)


def reduce_use(part, v, reduced, op, where, n) -> ChannelUse:
    """An op mixing the channels of ``v`` over the tensor dims ``reduced`` (a set of dims); ``n`` is the size of
    partition ``part``."""
    rank = len(v.shape)
    reduced = {d % rank for d in reduced}
    if v.grid is None:
        mixed = v.cdim % rank in reduced
        labels = np.zeros(n, dtype=np.int64) if mixed else np.full(n, -1, dtype=np.int64)
        return ChannelUse("reduce", part, op, op, where, labels, 0)
    grid = np.asarray(v.grid)
    axes = [ax for ax, d in enumerate(v.gdims) if d % rank in reduced]
    if not axes:
        return ChannelUse("reduce", part, op, op, where, np.full(n, -1, dtype=np.int64), 0)
    keep = [ax for ax in range(grid.ndim) if ax not in axes]
    coords = np.indices(grid.shape)
    label = np.zeros(grid.shape, dtype=np.int64)
    for ax in keep:  # channels that differ only along the reduced axes share a label
        label = label * grid.shape[ax] + coords[ax]
    labels = np.full(n, -1, dtype=np.int64)
    labels[grid.reshape(-1)] = label.reshape(-1)
    return ChannelUse("reduce", part, op, op, where, labels, 0)
