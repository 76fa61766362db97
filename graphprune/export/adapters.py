"""One adapter per parametrised layer type: how a module call becomes partitions and blocks.

An adapter is ``fn(builder, path, module, inputs, out_shape) -> Val`` (or a tuple of Val for modules returning
tuples). Register your own with :func:`register_adapter`; the module type then becomes a leaf of the trace.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError, UnsupportedOperationError
from ..layout import Grid
from ._builder import Builder, Val

__all__ = ["register_adapter", "ADAPTERS", "NAMED_ADAPTERS", "PASS_THROUGH"]

ADAPTERS: dict[type, callable] = {}

#: Parameter-carrying modules whose parameters are not edges (normalisation, PReLU): nodes pass through.
PASS_THROUGH: tuple[type, ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.PReLU,
)
if hasattr(nn, "RMSNorm"):
    PASS_THROUGH = PASS_THROUGH + (nn.RMSNorm,)


#: Adapters for classes of optional packages, keyed by ``"module.QualName"`` (no import needed).
NAMED_ADAPTERS: dict[str, callable] = {}


def register_adapter(*types):
    """Decorator registering an adapter for module ``types`` (subclasses included).

    A type may also be given as its full name (``"transformers.pytorch_utils.Conv1D"``) so that an optional
    package need not be imported.
    """
    for t in types:
        if not (isinstance(t, str) or (isinstance(t, type) and issubclass(t, nn.Module))):
            raise ParameterError(
                "register_adapter takes torch.nn.Module subclasses (or their 'module.QualName' strings). "
                f"Got {t!r} instead.")

    def deco(fn):
        for t in types:
            if isinstance(t, str):
                NAMED_ADAPTERS[t] = fn
            else:
                ADAPTERS[t] = fn
        return fn

    return deco


def find_adapter(module):
    for t in type(module).__mro__:
        if t in ADAPTERS:
            return ADAPTERS[t]
        if NAMED_ADAPTERS:
            fn = NAMED_ADAPTERS.get(f"{t.__module__}.{t.__qualname__}")
            if fn is not None:
                return fn
    return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _first(inputs, path=""):
    v = inputs[0] if inputs else None
    where = f"Layer '{path}'" if path else "A layer"
    if not isinstance(v, Val):
        raise UnsupportedOperationError(
            f"{where} received no tensor the exporter followed (its input comes from an op whose output could not "
            "be traced); the exporter cannot place its edges.")
    if v.grid is not None:
        raise UnsupportedOperationError(f"{where} received a tensor whose channel dimension is split over several "
                                        "dims; reshape it back first.")
    return v


def linear(b: Builder, path: str, name: str, weight: torch.Tensor, v: Val, out_shape, *, param_slice=None,
           out_name=None, edge_kind="feature") -> Val:
    """A dense (out, in) weight applied to the last dimension of ``v``."""
    v = b.materialize(v, -1)
    if v.cdim % len(v.shape) != len(v.shape) - 1:
        if v.grid is None and param_slice is None:
            return token_mixing(b, path, name, weight, v, out_shape, "linear")
        raise UnsupportedOperationError(
            f"Linear '{path}' is applied to the last dim of shape {v.shape}, but the nodes of that tensor are on "
            f"dim {v.cdim}. Flatten or permute before the Linear layer."
        )
    out = b.new_partition(out_name or path, weight.shape[0])
    b.weight_block(out_name or path, v.part, out, name, weight, "linear", param_slice=param_slice,
                   edge_kind=edge_kind)
    return Val(out, len(out_shape) - 1, tuple(out_shape))


def token_mixing(b, path, name, W, x, shape, layout):
    """A Linear along a non-channel dim (MLP-Mixer's token mixing): a weight block between token partitions.

    ``W`` maps ``T_in`` positions to ``T_out``. Every channel feeds every input token, every output token feeds
    every output channel (identity edges), and output channel ``c`` gets an identity edge from input channel ``c``
    (the mixing keeps channels apart)."""
    grid = Grid(layout, W.shape)
    t_in, t_out = grid.n_src, grid.n_dst
    C = b.parts[x.part]["size"]
    tin = b.new_partition(f"{path}.tokens_in", t_in, kind="token")
    b.identity_block(f"{path}.tokens_in<-{x.part}", x.part, tin, np.repeat(np.arange(C), t_in),
                     np.tile(np.arange(t_in), C))
    tout = b.new_partition(f"{path}.tokens", t_out, kind="token")
    b.weight_block(path, tin, tout, name, W, layout)
    out = b.new_partition(path, C, kind="merge")
    b.identity_block(f"{path}<-{x.part}", x.part, out, np.arange(C), np.arange(C))
    b.identity_block(f"{path}<-tokens", tout, out, np.repeat(np.arange(t_out), C), np.tile(np.arange(C), t_out))
    rank = len(shape)
    return Val(out, x.cdim % rank if len(x.shape) == rank else x.cdim, shape)


@register_adapter(nn.Linear)
def _linear(b, path, m, inputs, out_shape):
    name, w = b.param(m, "weight", path)
    return linear(b, path, name, w, _first(inputs, path), out_shape)


def conv(b: Builder, path: str, name: str, w: torch.Tensor, groups: int, v: Val, out_shape, *,
         transposed=False) -> Val:
    v = b.materialize(v, 1, kind="channel")
    if v.cdim % len(v.shape) != 1:
        raise UnsupportedOperationError(
            f"Convolution '{path}' expects channels on dim 1 of {v.shape}; the nodes of its input are on dim "
            f"{v.cdim}."
        )
    n_out = w.shape[1] * groups if transposed else w.shape[0]
    out = b.new_partition(path, n_out, kind="channel")
    b.weight_block(path, v.part, out, name, w, "conv_transpose" if transposed else "conv", groups=groups)
    return Val(out, 1, tuple(out_shape))


@register_adapter("transformers.pytorch_utils.Conv1D")
def _hf_conv1d(b, path, m, inputs, out_shape):
    """transformers' ``Conv1D`` (GPT-2): a Linear whose weight is stored ``(in, out)``, layout ``embedding``."""
    name, w = b.param(m, "weight", path)
    v = b.materialize(_first(inputs, path), -1)
    if v.cdim % len(v.shape) != len(v.shape) - 1:
        raise UnsupportedOperationError(
            f"Conv1D '{path}' is applied to the last dim of shape {v.shape}, but the nodes of that tensor are on "
            f"dim {v.cdim}.")
    out = b.new_partition(path, w.shape[1])
    b.weight_block(path, v.part, out, name, w, "embedding")
    return Val(out, len(out_shape) - 1, tuple(out_shape))


@register_adapter(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(b, path, m, inputs, out_shape):
    name, w = b.param(m, "weight", path)
    return conv(b, path, name, w, m.groups, _first(inputs, path), out_shape)


@register_adapter(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def _conv_transpose(b, path, m, inputs, out_shape):
    name, w = b.param(m, "weight", path)
    return conv(b, path, name, w, m.groups, _first(inputs, path), out_shape, transposed=True)


@register_adapter(nn.Embedding)
def _embedding(b, path, m, inputs, out_shape):
    """Token ids -> vectors: one input node per vocabulary entry, weight ``(num_embeddings, dim)``."""
    name, w = b.param(m, "weight", path)
    v = _first(inputs, path)
    if v.part is None:
        v = b.materialize(v, -1, kind="token", size=w.shape[0])
    out = b.new_partition(path, w.shape[1])
    b.weight_block(path, v.part, out, name, w, "embedding")
    return Val(out, len(out_shape) - 1, tuple(out_shape))


def _score_edges(E: int, heads: int):
    """Edges from each query/key dim to every attention-output dim of the same head, as a ``product`` of
    per-head groups (see :attr:`graphprune.graph.Block.product`)."""
    g = np.arange(E).reshape(heads, E // heads)
    return g, g


def attention(b: Builder, path: str, m: nn.MultiheadAttention, q: Val, k: Val, v: Val, out_shape) -> Val:
    """Multi-head attention: q, k, v projections, score edges, and the output projection.

    Query and key channels influence the output only through the attention scores: they get ``edge_kind="score"``
    identity edges to every output dim of their head, so they are not dead ends. Value channel ``i`` feeds output
    dim ``i`` (the head mixes tokens, not channels).
    """
    E, H = m.embed_dim, m.num_heads
    parts = {}
    if m._qkv_same_embed_dim:
        name, W = b.param(m, "in_proj_weight", path)
        for i, (tag, x) in enumerate((("q", q), ("k", k), ("v", v))):
            parts[tag] = linear(b, path, name, W[i * E : (i + 1) * E], x, out_shape,
                                param_slice=(i * E, (i + 1) * E), out_name=_join(path, tag)).part
    else:
        for tag, x in (("q", q), ("k", k), ("v", v)):
            name, W = b.param(m, f"{tag}_proj_weight", path)
            parts[tag] = linear(b, path, name, W, x, out_shape, out_name=_join(path, tag)).part
    heads = b.new_partition(_join(path, "heads"), E, kind="merge")
    idx = np.arange(E)
    b.identity_block(_join(path, "v->heads"), parts["v"], heads, idx, idx)
    score = _score_edges(E, H)
    b.identity_block(_join(path, "q->heads"), parts["q"], heads, edge_kind="score", product=score)
    b.identity_block(_join(path, "k->heads"), parts["k"], heads, edge_kind="score", product=score)
    name, W = b.param(m.out_proj, "weight", _join(path, "out_proj"))
    return linear(b, _join(path, "out_proj"), name, W, Val(heads, len(out_shape) - 1, tuple(out_shape)), out_shape)


@register_adapter(nn.MultiheadAttention)
def _mha(b, path, m, inputs, out_shape):
    q, k, v = (inputs + [None, None, None])[:3]
    k = q if k is None else k
    v = k if v is None else v
    shape = out_shape[0] if isinstance(out_shape, tuple) and isinstance(out_shape[0], tuple) else out_shape
    return attention(b, path, m, q, k, v, shape), None


def _ff(b, path, m, x: Val):
    hidden = tuple(x.shape[:-1]) + (m.linear1.out_features,)
    name, W = b.param(m.linear1, "weight", _join(path, "linear1"))
    h = linear(b, _join(path, "linear1"), name, W, x, hidden)
    name, W = b.param(m.linear2, "weight", _join(path, "linear2"))
    return linear(b, _join(path, "linear2"), name, W, h, x.shape)


@register_adapter(nn.TransformerEncoderLayer)
def _encoder_layer(b, path, m, inputs, out_shape):
    """Self-attention block and feed-forward block, each with its residual add (norms pass through).

    ``norm_first`` moves LayerNorms, which are pass-through here, so both variants give the same graph.
    """
    x = b.materialize(_first(inputs, path), -1)
    shape = tuple(out_shape)
    x0 = x
    a = attention(b, _join(path, "self_attn"), m.self_attn, x, x, x, shape)
    x = b.merge(_join(path, "add1"), [x, a], shape)
    f = _ff(b, path, m, x)
    out = b.merge(_join(path, "add2"), [x, f], shape)
    first = getattr(m, "norm_first", False)
    _norm_use(b, _join(path, "norm1"), m.norm1, x0 if first else x)
    _norm_use(b, _join(path, "norm2"), m.norm2, x if first else out)
    return out


def _norm_use(b, path, norm, v):
    """Record a LayerNorm an adapter passes through (its parameters and its mixing of the channels)."""
    from .uses import module_use, reduce_use

    where = f"module '{path}' ({type(norm).__name__})"
    n = b.parts[v.part]["size"]
    b.uses.append(module_use(v.part, v, path, type(norm).__name__, where, n))
    b.uses.append(reduce_use(v.part, v, {len(v.shape) - 1}, type(norm).__name__, where, n))


@register_adapter(nn.TransformerEncoder)
def _encoder(b, path, m, inputs, out_shape):
    x = _first(inputs, path)
    for i, layer in enumerate(m.layers):
        x = _encoder_layer(b, _join(path, f"layers.{i}"), layer, [x], out_shape)
    if getattr(m, "norm", None) is not None:
        _norm_use(b, _join(path, "norm"), m.norm, x)
    return x
